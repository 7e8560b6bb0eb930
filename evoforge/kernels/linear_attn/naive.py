"""Plain-torch references for causal linear attention, written for clarity (see README.md for the maths).

Layout: q, k (B, H, T, K); v (B, H, T, V); output (B, H, T, V). Arithmetic in float32 (or float64 when the
inputs are float64); the output has v's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evoforge.kernels.backend import check_chunk_size, check_shapes, compute_dtype


def naive_recurrent_linear_attn(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Token-by-token recurrence S_t = S_{t-1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t. O(T) steps; the ground truth."""
    check_shapes(q, k, v)
    B, H, T, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    dtype = compute_dtype(v)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    S = q.new_zeros(B, H, K, V)
    outputs = []
    for t in range(T):
        S = S + k[:, :, t, :, None] * v[:, :, t, None, :]
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))
    return torch.stack(outputs, dim=2).to(v.dtype) if outputs else v.new_zeros(B, H, 0, V)


def naive_chunk_linear_attn(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None, chunk_size: int = 64
) -> torch.Tensor:
    """The chunk-parallel form in plain torch (what CPU runs use): within a chunk a masked C×C attention,
    across chunks the exclusive prefix sum of the chunk states Kᵀ V. Differentiable by autograd."""
    check_shapes(q, k, v)
    check_chunk_size(chunk_size)
    B, H, T, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    out_dtype = v.dtype
    if T == 0:
        return v.new_zeros(B, H, 0, V)
    dtype = compute_dtype(v)
    C = chunk_size
    pad = (-T) % C
    # zero padding at the end: padded keys/values add nothing to any state, padded outputs are cut off
    q, k, v = (F.pad(x.to(dtype), (0, 0, 0, pad)) for x in (q, k, v))
    N = (T + pad) // C
    q = q.reshape(B, H, N, C, K) * scale
    k = k.reshape(B, H, N, C, K)
    v = v.reshape(B, H, N, C, V)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    intra = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0) @ v  # (B, H, N, C, V)
    chunk_states = k.transpose(-1, -2) @ v  # (B, H, N, K, V)
    # state entering each chunk: exclusive prefix sum (shifted, not cumsum − x, which cancels in float32)
    states_before = F.pad(chunk_states.cumsum(dim=2)[:, :, :-1], (0, 0, 0, 0, 1, 0))
    inter = q @ states_before
    o = (intra + inter).reshape(B, H, N * C, V)[:, :, :T]
    return o.to(out_dtype)
