"""The causal language model the linear_attention task fixes; only its token mixer comes from the candidate.

Pre-norm residual blocks (RMSNorm → TokenMixer, RMSNorm → SwiGLU MLP), tied input/output embeddings.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        out: torch.Tensor = self.down(F.silu(gate) * up)
        return out


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, mlp_hidden: int, mixer_cls: type[nn.Module]) -> None:
        super().__init__()
        self.mixer_norm = nn.RMSNorm(d_model)
        self.mixer = mixer_cls(d_model, n_heads)
        self.mlp_norm = nn.RMSNorm(d_model)
        self.mlp = SwiGLU(d_model, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.mixer_norm(x))
        out: torch.Tensor = x + self.mlp(self.mlp_norm(x))
        return out


class CausalLM(nn.Module):
    """tokens (B, T) → logits (B, T, vocab_size)."""

    def __init__(
        self,
        mixer_cls: type[nn.Module],
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        mlp_hidden = 16 * max(1, round(mlp_ratio * d_model / 16))
        self.embed = nn.Embedding(vocab_size, d_model)
        blocks = [Block(d_model, n_heads, mlp_hidden, mixer_cls) for _ in range(n_layers)]
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = nn.RMSNorm(d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        for block in blocks:
            # scale the residual branches the model owns by depth (GPT-2 style); mixers keep their own init
            nn.init.normal_(block.mlp.gate_up.weight, std=0.02)
            nn.init.normal_(block.mlp.down.weight, std=0.02 / (2 * n_layers) ** 0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.final_norm(x) @ self.embed.weight.T
        return logits


def count_parameters(module: nn.Module) -> int:
    return sum(int(p.numel()) for p in module.parameters())


def mixer_parameters(model: CausalLM) -> int:
    """Parameters inside the candidate's token mixers (all layers)."""
    return sum(count_parameters(block.get_submodule("mixer")) for block in model.blocks)
