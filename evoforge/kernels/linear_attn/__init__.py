"""Causal linear attention: o_t = scale · Σ_{s≤t} (q_t · k_s) v_s. See README.md in this folder."""

from __future__ import annotations

import torch

from evoforge.kernels import backend as _backend
from evoforge.kernels.linear_attn.naive import naive_chunk_linear_attn, naive_recurrent_linear_attn

__all__ = ["chunk_linear_attn", "naive_chunk_linear_attn", "naive_recurrent_linear_attn"]


def chunk_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    chunk_size: int = 64,
    backend: str = "auto",
) -> torch.Tensor:
    """Chunked causal linear attention (no normalisation, no decay).

    Args:
        q, k: (B, H, T, K) queries and keys; v: (B, H, T, V) values. Any float dtype.
        scale: multiplies q·k; defaults to K ** -0.5.
        chunk_size: 16, 32, 64 or 128 tokens per chunk.
        backend: "auto" (Triton on CUDA, the torch reference elsewhere), "torch" or "triton".
    Returns:
        o: (B, H, T, V) in v's dtype.

    Example:
        >>> q = k = torch.randn(2, 4, 100, 32); v = torch.randn(2, 4, 100, 48)
        >>> chunk_linear_attn(q, k, v).shape
        torch.Size([2, 4, 100, 48])
    """
    _backend.check_shapes(q, k, v)
    _backend.check_chunk_size(chunk_size)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if _backend.resolve_backend(backend, q, k, v) == "torch":
        return naive_chunk_linear_attn(q, k, v, scale=scale, chunk_size=chunk_size)
    from evoforge.kernels.linear_attn.chunk import ChunkLinearAttnFunction

    # torch leaves autograd.Function.apply unannotated (it takes and returns anything)
    o: torch.Tensor = ChunkLinearAttnFunction.apply(q, k, v, scale, chunk_size)  # type: ignore[no-untyped-call]
    return o
