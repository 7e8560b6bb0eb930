"""The token mixer: (B, T, C) -> (B, T, C), strictly causal. Seed: linear attention with an elu+1 feature map,
in its parallel (masked) form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TokenMixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        q, k = F.elu(q) + 1, F.elu(k) + 1
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        scores = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0.0)  # (B, H, T, T)
        o = (scores @ v) / (scores.sum(-1, keepdim=True) + 1e-6)  # (B, H, T, D)
        return self.out(o.transpose(1, 2).reshape(B, T, C))
