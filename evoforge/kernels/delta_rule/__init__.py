"""The delta rule (DeltaNet): S_t = S_{t-1} + β_t k_t (v_t − S_{t-1}ᵀ k_t)ᵀ, o_t = scale · S_tᵀ q_t.
See README.md in this folder."""

from __future__ import annotations

import torch

from evoforge.kernels import backend as _backend
from evoforge.kernels.delta_rule.naive import naive_chunk_delta_rule, naive_recurrent_delta_rule

__all__ = ["chunk_delta_rule", "naive_chunk_delta_rule", "naive_recurrent_delta_rule"]


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    chunk_size: int = 64,
    backend: str = "auto",
) -> torch.Tensor:
    """Chunked delta rule, the token mixer of DeltaNet.

    Args:
        q, k: (B, H, T, K) queries and keys; DeltaNet L2-normalises both (the update is only a contraction
            when ‖k‖ = 1 and 0 ≤ β ≤ 2). v: (B, H, T, V) values. Any float dtype.
        beta: (B, H, T) writing strengths, usually sigmoid(x W_β).
        scale: multiplies q; defaults to K ** -0.5.
        chunk_size: 16, 32, 64 or 128 tokens per chunk.
        backend: "auto" (Triton on CUDA, the torch reference elsewhere), "torch" or "triton".
    Returns:
        o: (B, H, T, V) in v's dtype.

    Example:
        >>> q = torch.nn.functional.normalize(torch.randn(2, 4, 100, 32), dim=-1); k = q.flip(2)
        >>> v = torch.randn(2, 4, 100, 32); beta = torch.rand(2, 4, 100)
        >>> chunk_delta_rule(q, k, v, beta).shape
        torch.Size([2, 4, 100, 32])
    """
    _backend.check_shapes(q, k, v, beta)
    _backend.check_chunk_size(chunk_size)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if _backend.resolve_backend(backend, q, k, v, beta) == "torch":
        return naive_chunk_delta_rule(q, k, v, beta, scale=scale, chunk_size=chunk_size)
    from evoforge.kernels.delta_rule.chunk import ChunkDeltaRuleFunction

    # torch leaves autograd.Function.apply unannotated (it takes and returns anything)
    o: torch.Tensor = ChunkDeltaRuleFunction.apply(q, k, v, beta, scale, chunk_size)  # type: ignore[no-untyped-call]
    return o
