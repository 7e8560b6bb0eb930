"""Seed of the linear_attention task: a DeltaNet token mixer (Yang et al., 2024).

The evaluator builds a small causal language model whose every block is
    x = x + TokenMixer(d_model, n_heads)(RMSNorm(x));  x = x + MLP(RMSNorm(x))
and trains it. Only the code between EVOLVE-BLOCK-START and EVOLVE-BLOCK-END is evolved. The interface is
fixed: `class TokenMixer(nn.Module)` with `__init__(self, d_model: int, n_heads: int)` and
`forward(x: (B, T, C)) -> (B, T, C)`. Rules checked before training: output at position t may depend only on
inputs at positions ≤ t; time and memory must grow sub-quadratically with T; the mixer's parameter count
stays within the budget; training may be at most 3× slower than with this DeltaNet. Building blocks:
`evoforge.kernels` (chunk_delta_rule, chunk_gated_delta_rule, chunk_linear_attn and their plain-torch
references; layout (B, H, T, D)), or write the recurrence in torch yourself.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from evoforge.kernels import chunk_delta_rule

# EVOLVE-BLOCK-START


class ShortConv(nn.Module):
    """Depthwise causal convolution over time (kernel 4) followed by SiLU: cheap local token shift."""

    def __init__(self, channels: int, kernel_size: int = 4):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, C); left padding only, so position t sees t-3..t
        x = F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))
        return F.silu(self.conv(x)).transpose(1, 2)


class TokenMixer(nn.Module):
    """DeltaNet: q, k, v projections with short convolutions, L2-normalised q and k, a per-head writing
    strength β = sigmoid(x W_β), the delta rule S_t = S_{t-1} + β_t k_t (v_t − S_{t-1}ᵀ k_t)ᵀ, o_t = S_tᵀ q_t,
    a per-head RMSNorm on the output and an output projection."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        assert d_model % n_heads == 0, f"d_model={d_model} must be divisible by n_heads={n_heads}"
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.beta_proj = nn.Linear(d_model, n_heads, bias=False)
        self.q_conv = ShortConv(d_model)
        self.k_conv = ShortConv(d_model)
        self.v_conv = ShortConv(d_model)
        self.o_norm = nn.RMSNorm(self.head_dim)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q = F.normalize(self._heads(self.q_conv(self.q_proj(x))), dim=-1)
        k = F.normalize(self._heads(self.k_conv(self.k_proj(x))), dim=-1)
        v = self._heads(self.v_conv(self.v_proj(x)))
        beta = torch.sigmoid(self.beta_proj(x)).transpose(1, 2)  # (B, H, T)
        o = chunk_delta_rule(q, k, v, beta, chunk_size=64)  # (B, H, T, D)
        o = self.o_norm(o.transpose(1, 2))  # (B, T, H, D)
        return self.o_proj(o.reshape(B, T, C))


# EVOLVE-BLOCK-END
