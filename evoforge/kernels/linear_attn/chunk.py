"""Triton fast path for chunked causal linear attention (maths in README.md).

One program per (batch, head) walks the chunks in order and keeps the K×V state in registers; the backward
pass walks forwards for dq and backwards (carrying dH = Σ_later scale·Qᵀ dO) for dk and dv. Inputs of any
float dtype are upcast to float32 inside the kernels; `tl.dot` runs in exact float32 ("ieee").
Importing this module needs `triton`; set TRITON_INTERPRET=1 before importing it to run on CPU tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from evoforge.kernels import backend

MAX_HEAD_DIM = 256
"""The whole K×V state of a head lives in one program's registers."""


@triton.jit
def chunk_linear_attn_fwd_kernel(
    q, k, v, o, scale, T,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    i_bh = tl.program_id(0)
    base_k = i_bh.to(tl.int64) * T * K
    base_v = i_bh.to(tl.int64) * T * V
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    causal = o_t[:, None] >= o_t[None, :]
    S = tl.zeros([BK, BV], dtype=tl.float32)  # state entering the current chunk
    for i_t in range(0, tl.cdiv(T, BT)):
        rows = (i_t * BT + o_t).to(tl.int64)
        m_tk = (rows[:, None] < T) & (o_k[None, :] < K)
        m_tv = (rows[:, None] < T) & (o_v[None, :] < V)
        b_q = tl.load(q + base_k + rows[:, None] * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k + base_k + rows[:, None] * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        b_v = tl.load(v + base_v + rows[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_a = tl.where(causal, tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION), 0.0)
        b_o = tl.dot(b_q, S, input_precision=PRECISION) + tl.dot(b_a, b_v, input_precision=PRECISION)
        tl.store(o + base_v + rows[:, None] * V + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m_tv)
        S += tl.dot(tl.trans(b_k), b_v, input_precision=PRECISION)


@triton.jit
def chunk_linear_attn_bwd_kernel(
    q, k, v, do, dq, dk, dv, scale, T,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    i_bh = tl.program_id(0)
    base_k = i_bh.to(tl.int64) * T * K
    base_v = i_bh.to(tl.int64) * T * V
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    causal = o_t[:, None] >= o_t[None, :]
    NT = tl.cdiv(T, BT)

    # dq_c = scale · (dO_c S_{c-1}ᵀ + (M ⊙ dO_c V_cᵀ) K_c), walking forwards
    S = tl.zeros([BK, BV], dtype=tl.float32)
    for i_t in range(0, NT):
        rows = (i_t * BT + o_t).to(tl.int64)
        m_tk = (rows[:, None] < T) & (o_k[None, :] < K)
        m_tv = (rows[:, None] < T) & (o_v[None, :] < V)
        b_k = tl.load(k + base_k + rows[:, None] * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        b_v = tl.load(v + base_v + rows[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_do = tl.load(do + base_v + rows[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_ds = tl.where(causal, tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION), 0.0)
        b_dq = tl.dot(b_do, tl.trans(S), input_precision=PRECISION) + tl.dot(b_ds, b_k, input_precision=PRECISION)
        tl.store(dq + base_k + rows[:, None] * K + o_k[None, :], (b_dq * scale).to(dq.dtype.element_ty), mask=m_tk)
        S += tl.dot(tl.trans(b_k), b_v, input_precision=PRECISION)

    # dk_c = (M ⊙ dO_c V_cᵀ)ᵀ Q̃_c + V_c dHᵀ,  dv_c = (M ⊙ Q̃_c K_cᵀ)ᵀ dO_c + K_c dH, walking backwards
    dH = tl.zeros([BK, BV], dtype=tl.float32)  # Σ over later chunks of Q̃ᵀ dO
    for i_rev in range(0, NT):
        i_t = NT - 1 - i_rev
        rows = (i_t * BT + o_t).to(tl.int64)
        m_tk = (rows[:, None] < T) & (o_k[None, :] < K)
        m_tv = (rows[:, None] < T) & (o_v[None, :] < V)
        b_q = tl.load(q + base_k + rows[:, None] * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k + base_k + rows[:, None] * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        b_v = tl.load(v + base_v + rows[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_do = tl.load(do + base_v + rows[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_ds = tl.where(causal, tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION), 0.0)
        b_a = tl.where(causal, tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION), 0.0)
        b_dk = tl.dot(tl.trans(b_ds), b_q, input_precision=PRECISION)
        b_dk += tl.dot(b_v, tl.trans(dH), input_precision=PRECISION)
        b_dv = tl.dot(tl.trans(b_a), b_do, input_precision=PRECISION) + tl.dot(b_k, dH, input_precision=PRECISION)
        tl.store(dk + base_k + rows[:, None] * K + o_k[None, :], b_dk.to(dk.dtype.element_ty), mask=m_tk)
        tl.store(dv + base_v + rows[:, None] * V + o_v[None, :], b_dv.to(dv.dtype.element_ty), mask=m_tv)
        dH += tl.dot(tl.trans(b_q), b_do, input_precision=PRECISION)


def _tiles(K: int, V: int) -> tuple[int, int]:
    assert K <= MAX_HEAD_DIM and V <= MAX_HEAD_DIM, f"head dims must be ≤ {MAX_HEAD_DIM}, got K={K}, V={V}"
    return max(16, triton.next_power_of_2(K)), max(16, triton.next_power_of_2(V))


def chunk_linear_attn_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, chunk_size: int
) -> torch.Tensor:
    """Launch the forward kernel on contiguous (B, H, T, ·) tensors; returns o (B, H, T, V)."""
    B, H, T, K = q.shape
    V = v.shape[-1]
    BK, BV = _tiles(K, V)
    o = backend.empty_buffer((B, H, T, V), like=v)
    chunk_linear_attn_fwd_kernel[(B * H,)](
        q, k, v, o, scale, T, K=K, V=V, BT=chunk_size, BK=BK, BV=BV, PRECISION="ieee"
    )
    return o


def chunk_linear_attn_bwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, scale: float, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward kernel; returns (dq, dk, dv) shaped like (q, k, v)."""
    B, H, T, K = q.shape
    V = v.shape[-1]
    BK, BV = _tiles(K, V)
    dq = backend.empty_buffer(tuple(q.shape), like=q)
    dk = backend.empty_buffer(tuple(k.shape), like=k)
    dv = backend.empty_buffer(tuple(v.shape), like=v)
    chunk_linear_attn_bwd_kernel[(B * H,)](
        q, k, v, do, dq, dk, dv, scale, T, K=K, V=V, BT=chunk_size, BK=BK, BV=BV, PRECISION="ieee"
    )
    return dq, dk, dv


class ChunkLinearAttnFunction(torch.autograd.Function):
    """Autograd wrapper around the Triton forward and backward kernels."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                chunk_size: int) -> torch.Tensor:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        ctx.save_for_backward(q, k, v)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        return chunk_linear_attn_fwd(q, k, v, scale, chunk_size)

    @staticmethod
    def backward(ctx: Any, do: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None]:
        q, k, v = ctx.saved_tensors
        dq, dk, dv = chunk_linear_attn_bwd(q, k, v, do.contiguous(), ctx.scale, ctx.chunk_size)
        return dq, dk, dv, None, None
