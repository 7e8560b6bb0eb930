"""Plain-torch references for the delta rule (DeltaNet), written for clarity (see README.md for the maths).

Layout: q, k (B, H, T, K); v (B, H, T, V); beta (B, H, T); output (B, H, T, V). The state S is K×V and
o_t = scale · S_tᵀ q_t. Arithmetic in float32 (float64 when the inputs are float64); output in v's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evoforge.kernels.backend import check_chunk_size, check_shapes, compute_dtype


def naive_recurrent_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Token-by-token recurrence S_t = S_{t-1} + β_t k_t (v_t − S_{t-1}ᵀ k_t)ᵀ, o_t = scale · S_tᵀ q_t."""
    check_shapes(q, k, v, beta)
    B, H, T, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    dtype = compute_dtype(v)
    q, k, v, beta = q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype)
    S = q.new_zeros(B, H, K, V)
    outputs = []
    for t in range(T):
        k_t, q_t = k[:, :, t], q[:, :, t]  # (B, H, K)
        v_old = torch.einsum("bhk,bhkv->bhv", k_t, S)  # what the state currently returns for k_t
        correction = beta[:, :, t, None] * (v[:, :, t] - v_old)  # (B, H, V)
        S = S + k_t[..., :, None] * correction[..., None, :]
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(outputs, dim=2).to(v.dtype) if outputs else v.new_zeros(B, H, 0, V)


def naive_chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    chunk_size: int = 64,
) -> torch.Tensor:
    """The chunk-parallel (WY) form in plain torch (what CPU runs use); differentiable by autograd.

    Per chunk: W = T·diag(β)·K and U' = T·diag(β)·V with T = (I + strictly_lower(diag(β) K Kᵀ))⁻¹, found by a
    unit-lower triangular solve; then, chunk after chunk, U = U' − W S, O = Q̃ S + (M ⊙ Q̃ Kᵀ) U, S += Kᵀ U.
    """
    check_shapes(q, k, v, beta)
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
    # padded positions have β = 0 and k = 0: they leave the state untouched and their outputs are cut off
    q, k, v = (F.pad(x.to(dtype), (0, 0, 0, pad)) for x in (q, k, v))
    beta = F.pad(beta.to(dtype), (0, pad))
    N = (T + pad) // C
    q = q.reshape(B, H, N, C, K) * scale
    k = k.reshape(B, H, N, C, K)
    v = v.reshape(B, H, N, C, V)
    beta = beta.reshape(B, H, N, C, 1)

    k_beta, v_beta = k * beta, v * beta
    strictly_lower = (k_beta @ k.transpose(-1, -2)).tril(-1)  # N_ij = β_i k_i·k_j, i > j
    eye = torch.eye(C, dtype=dtype, device=q.device)
    wy = torch.linalg.solve_triangular(
        eye + strictly_lower, torch.cat([k_beta, v_beta], dim=-1), upper=False, unitriangular=True
    )
    W, U_pre = wy[..., :K], wy[..., K:]  # (B, H, N, C, K), (B, H, N, C, V)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    attn = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0)  # (B, H, N, C, C)

    S = q.new_zeros(B, H, K, V)
    outputs = []
    for n in range(N):
        U = U_pre[:, :, n] - W[:, :, n] @ S  # the corrections β_i (v_i − S_{i-1}ᵀ k_i) of chunk n
        outputs.append(q[:, :, n] @ S + attn[:, :, n] @ U)
        S = S + k[:, :, n].transpose(-1, -2) @ U
    o = torch.stack(outputs, dim=2).reshape(B, H, N * C, V)[:, :, :T]
    return o.to(out_dtype)
