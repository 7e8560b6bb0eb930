"""Plain-torch references for the gated delta rule (Gated DeltaNet), written for clarity (maths in README.md).

Layout: q, k (B, H, T, K); v (B, H, T, V); beta, g (B, H, T) with g = log α ≤ 0 the per-token log decay;
output (B, H, T, V). Arithmetic in float32 (float64 when the inputs are float64); output in v's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evoforge.kernels.backend import check_chunk_size, check_shapes, compute_dtype


def _check_gate(g: torch.Tensor, q: torch.Tensor) -> None:
    assert g.shape == q.shape[:3], f"g must be (B, H, T) = {tuple(q.shape[:3])}, got {tuple(g.shape)}"


def naive_recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Token-by-token S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ with α_t = exp(g_t); o_t = scale · S_tᵀ q_t."""
    check_shapes(q, k, v, beta)
    _check_gate(g, q)
    B, H, T, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    dtype = compute_dtype(v)
    q, k, v, beta, g = (x.to(dtype) for x in (q, k, v, beta, g))
    S = q.new_zeros(B, H, K, V)
    outputs = []
    for t in range(T):
        S = S * g[:, :, t, None, None].exp()  # decay first, then the delta update on the decayed state
        k_t = k[:, :, t]
        correction = beta[:, :, t, None] * (v[:, :, t] - torch.einsum("bhk,bhkv->bhv", k_t, S))
        S = S + k_t[..., :, None] * correction[..., None, :]
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))
    return torch.stack(outputs, dim=2).to(v.dtype) if outputs else v.new_zeros(B, H, 0, V)


def naive_chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    chunk_size: int = 64,
) -> torch.Tensor:
    """The chunk-parallel form in plain torch; differentiable by autograd. With b the cumulative log decay
    inside a chunk, γ = exp(b) and Γ_ij = exp(b_i − b_j) (i ≥ j):
    U = (I + strictly_lower(diag(β) Γ ⊙ K Kᵀ))⁻¹ diag(β) (V − diag(γ) K S),
    O = diag(γ) Q̃ S + (M ⊙ Γ ⊙ Q̃ Kᵀ) U,  S ← γ_C S + (diag(γ_C / γ) K)ᵀ U."""
    check_shapes(q, k, v, beta)
    _check_gate(g, q)
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
    # padded positions: k = 0, β = 0, g = 0 (no decay), so the state passes through them unchanged
    q, k, v = (F.pad(x.to(dtype), (0, 0, 0, pad)) for x in (q, k, v))
    beta, g = (F.pad(x.to(dtype), (0, pad)) for x in (beta, g))
    N = (T + pad) // C
    q = q.reshape(B, H, N, C, K) * scale
    k = k.reshape(B, H, N, C, K)
    v = v.reshape(B, H, N, C, V)
    beta = beta.reshape(B, H, N, C, 1)
    b = g.reshape(B, H, N, C).cumsum(-1)  # cumulative log decay inside each chunk
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    # mask before exponentiating: above the diagonal b_i − b_j > 0 and could overflow
    decay = (b[..., :, None] - b[..., None, :]).masked_fill(~causal, float("-inf")).exp()  # Γ, (B, H, N, C, C)
    gamma = b.exp()[..., None]  # (B, H, N, C, 1)
    strictly_lower = (beta * decay * (k @ k.transpose(-1, -2))).tril(-1)
    eye = torch.eye(C, dtype=dtype, device=q.device)
    wy = torch.linalg.solve_triangular(
        eye + strictly_lower, torch.cat([beta * gamma * k, beta * v], dim=-1), upper=False, unitriangular=True
    )
    W, U_pre = wy[..., :K], wy[..., K:]
    attn = decay * (q @ k.transpose(-1, -2))  # zero above the diagonal already
    k_to_end = k * (b[..., -1:, None] - b[..., None]).exp()  # diag(γ_C / γ) K

    S = q.new_zeros(B, H, K, V)
    outputs = []
    for n in range(N):
        U = U_pre[:, :, n] - W[:, :, n] @ S
        outputs.append((q[:, :, n] * gamma[:, :, n]) @ S + attn[:, :, n] @ U)
        S = b[:, :, n, -1, None, None].exp() * S + k_to_end[:, :, n].transpose(-1, -2) @ U
    o = torch.stack(outputs, dim=2).reshape(B, H, N * C, V)[:, :, :T]
    return o.to(out_dtype)
