"""The gated delta rule (Gated DeltaNet): S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ, α_t = exp(g_t).
Plain torch only (no Triton kernel yet): the chunked reference runs on every device. See README.md."""

from __future__ import annotations

import torch

from evoforge.kernels.gated_delta_rule.naive import (
    naive_chunk_gated_delta_rule,
    naive_recurrent_gated_delta_rule,
)

__all__ = ["chunk_gated_delta_rule", "naive_chunk_gated_delta_rule", "naive_recurrent_gated_delta_rule"]


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    chunk_size: int = 64,
    backend: str = "auto",
) -> torch.Tensor:
    """Chunked gated delta rule, the token mixer of Gated DeltaNet.

    Args:
        q, k: (B, H, T, K), L2-normalised as for the delta rule; v: (B, H, T, V).
        beta: (B, H, T) writing strengths in (0, 1) (or (0, 2)).
        g: (B, H, T) log decays, g ≤ 0 (α = exp(g) ∈ (0, 1]); e.g. g = −softplus(x W_a) · exp(A_log).
        scale: multiplies q; defaults to K ** -0.5.
        chunk_size: 16, 32, 64 or 128.
        backend: "auto" or "torch" (both run the torch reference: this op has no Triton kernel yet).
    Returns:
        o: (B, H, T, V) in v's dtype.

    Example:
        >>> q = torch.nn.functional.normalize(torch.randn(2, 4, 100, 32), dim=-1); k = q.flip(2)
        >>> v = torch.randn(2, 4, 100, 32); beta = torch.rand(2, 4, 100); g = -torch.rand(2, 4, 100)
        >>> chunk_gated_delta_rule(q, k, v, beta, g).shape
        torch.Size([2, 4, 100, 32])
    """
    if backend not in ("auto", "torch"):
        raise ValueError(
            f"backend must be 'auto' or 'torch' (the gated delta rule has no Triton kernel yet), got {backend!r}"
        )
    return naive_chunk_gated_delta_rule(q, k, v, beta, g, scale=scale, chunk_size=chunk_size)
