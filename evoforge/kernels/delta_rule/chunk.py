"""Triton fast path for the chunked delta rule (DeltaNet; maths and the backward derivation in README.md).

One program per (batch, head). The forward walks the chunks in order, keeps the K×V state in registers and
writes the state entering every chunk to `h` for the backward; the backward walks the chunks in reverse,
recomputing the chunk's T = (I + N)⁻¹ by forward substitution, and carries dS (the gradient of the state).
Inputs of any float dtype are upcast to float32; `tl.dot` runs in exact float32 ("ieee").
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
def _unit_lower_inverse(b_kbk, o_t, BT: tl.constexpr):
    """(I + N)⁻¹ for N = strictly_lower(b_kbk), by forward substitution one row at a time: after row j is
    done, row j holds T_j − e_j, and T_i − e_i = −Σ_{j<i} N_ij T_j."""
    b_a = -tl.where(o_t[:, None] > o_t[None, :], b_kbk, 0.0)
    for i in range(1, BT):
        is_row = o_t == i
        b_row = tl.sum(tl.where(is_row[:, None], b_a, 0.0), 0)
        b_row = b_row + tl.sum(b_row[:, None] * b_a, 0) * (o_t < i)
        b_a = tl.where(is_row[:, None], b_row[None, :], b_a)
    return b_a + (o_t[:, None] == o_t[None, :])


@triton.jit
def chunk_delta_rule_fwd_kernel(
    q, k, v, beta, o, h, scale, T,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    i_bh = tl.program_id(0)
    NT = tl.cdiv(T, BT)
    base_k = i_bh.to(tl.int64) * T * K
    base_v = i_bh.to(tl.int64) * T * V
    base_b = i_bh.to(tl.int64) * T
    base_h = i_bh.to(tl.int64) * NT * K * V
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    causal = o_t[:, None] >= o_t[None, :]
    m_kv = (o_k[:, None] < K) & (o_v[None, :] < V)
    S = tl.zeros([BK, BV], dtype=tl.float32)  # state entering the current chunk
    for i_t in range(0, NT):
        rows = (i_t * BT + o_t).to(tl.int64)
        m_t = rows < T
        m_tk = m_t[:, None] & (o_k[None, :] < K)
        m_tv = m_t[:, None] & (o_v[None, :] < V)
        b_q = tl.load(q + base_k + rows[:, None] * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k + base_k + rows[:, None] * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        b_v = tl.load(v + base_v + rows[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_beta = tl.load(beta + base_b + rows, mask=m_t, other=0.0).to(tl.float32)
        tl.store(h + base_h + i_t * K * V + o_k[:, None] * V + o_v[None, :], S, mask=m_kv)

        b_kb = b_k * b_beta[:, None]
        b_tinv = _unit_lower_inverse(tl.dot(b_kb, tl.trans(b_k), input_precision=PRECISION), o_t, BT)
        b_r = b_v - tl.dot(b_k, S, input_precision=PRECISION)  # V − K S
        b_u = tl.dot(b_tinv, b_r * b_beta[:, None], input_precision=PRECISION)  # (BT, BV)
        b_a = tl.where(causal, tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION), 0.0)
        b_o = tl.dot(b_q, S, input_precision=PRECISION) + tl.dot(b_a, b_u, input_precision=PRECISION)
        tl.store(o + base_v + rows[:, None] * V + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m_tv)
        S += tl.dot(tl.trans(b_k), b_u, input_precision=PRECISION)


@triton.jit
def chunk_delta_rule_bwd_kernel(
    q, k, v, beta, h, do, dq, dk, dv, dbeta, scale, T,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    i_bh = tl.program_id(0)
    NT = tl.cdiv(T, BT)
    base_k = i_bh.to(tl.int64) * T * K
    base_v = i_bh.to(tl.int64) * T * V
    base_b = i_bh.to(tl.int64) * T
    base_h = i_bh.to(tl.int64) * NT * K * V
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    causal = o_t[:, None] >= o_t[None, :]
    strictly_lower = o_t[:, None] > o_t[None, :]
    m_kv = (o_k[:, None] < K) & (o_v[None, :] < V)
    dS = tl.zeros([BK, BV], dtype=tl.float32)  # gradient w.r.t. the state leaving the current chunk
    for i_rev in range(0, NT):
        i_t = NT - 1 - i_rev
        rows = (i_t * BT + o_t).to(tl.int64)
        m_t = rows < T
        m_tk = m_t[:, None] & (o_k[None, :] < K)
        m_tv = m_t[:, None] & (o_v[None, :] < V)
        b_q = tl.load(q + base_k + rows[:, None] * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k + base_k + rows[:, None] * K + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        b_v = tl.load(v + base_v + rows[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        b_beta = tl.load(beta + base_b + rows, mask=m_t, other=0.0).to(tl.float32)
        b_do = tl.load(do + base_v + rows[:, None] * V + o_v[None, :], mask=m_tv, other=0.0).to(tl.float32)
        S = tl.load(h + base_h + i_t * K * V + o_k[:, None] * V + o_v[None, :], mask=m_kv, other=0.0)

        # recompute the forward quantities of this chunk
        b_kk = tl.dot(b_k, tl.trans(b_k), input_precision=PRECISION)
        b_tinv = _unit_lower_inverse(b_kk * b_beta[:, None], o_t, BT)
        b_r = b_v - tl.dot(b_k, S, input_precision=PRECISION)
        b_y = b_r * b_beta[:, None]
        b_u = tl.dot(b_tinv, b_y, input_precision=PRECISION)
        b_a = tl.where(causal, tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION), 0.0)

        # S_next = S + Kᵀ U  and  O = Q̃ S + A U
        b_du = tl.dot(b_k, dS, input_precision=PRECISION) + tl.dot(tl.trans(b_a), b_do, input_precision=PRECISION)
        b_da = tl.where(causal, tl.dot(b_do, tl.trans(b_u), input_precision=PRECISION), 0.0)
        b_dq = tl.dot(b_do, tl.trans(S), input_precision=PRECISION) + tl.dot(b_da, b_k, input_precision=PRECISION)
        b_dk = tl.dot(b_u, tl.trans(dS), input_precision=PRECISION)
        b_dk += tl.dot(tl.trans(b_da), b_q, input_precision=PRECISION)
        # U = T Y with Y = diag(β)(V − K S)
        b_dy = tl.dot(tl.trans(b_tinv), b_du, input_precision=PRECISION)
        b_dt = tl.dot(b_du, tl.trans(b_y), input_precision=PRECISION)
        b_dr = b_dy * b_beta[:, None]
        b_dbeta = tl.sum(b_dy * b_r, 1)
        b_dk -= tl.dot(b_dr, tl.trans(S), input_precision=PRECISION)
        dS += tl.dot(tl.trans(b_q), b_do, input_precision=PRECISION) - tl.dot(
            tl.trans(b_k), b_dr, input_precision=PRECISION
        )
        # T = (I + N)⁻¹ with N_ij = β_i k_i·k_j (i > j):  dN = −Tᵀ dT Tᵀ on the strictly lower part
        b_dn = -tl.dot(
            tl.dot(tl.trans(b_tinv), b_dt, input_precision=PRECISION), tl.trans(b_tinv), input_precision=PRECISION
        )
        b_dn = tl.where(strictly_lower, b_dn, 0.0)
        b_dbeta += tl.sum(b_dn * b_kk, 1)
        b_g = b_dn * b_beta[:, None]
        b_dk += tl.dot(b_g, b_k, input_precision=PRECISION) + tl.dot(tl.trans(b_g), b_k, input_precision=PRECISION)

        tl.store(dq + base_k + rows[:, None] * K + o_k[None, :], (b_dq * scale).to(dq.dtype.element_ty), mask=m_tk)
        tl.store(dk + base_k + rows[:, None] * K + o_k[None, :], b_dk.to(dk.dtype.element_ty), mask=m_tk)
        tl.store(dv + base_v + rows[:, None] * V + o_v[None, :], b_dr.to(dv.dtype.element_ty), mask=m_tv)
        tl.store(dbeta + base_b + rows, b_dbeta.to(dbeta.dtype.element_ty), mask=m_t)


def _tiles(K: int, V: int) -> tuple[int, int]:
    assert K <= MAX_HEAD_DIM and V <= MAX_HEAD_DIM, f"head dims must be ≤ {MAX_HEAD_DIM}, got K={K}, V={V}"
    return max(16, triton.next_power_of_2(K)), max(16, triton.next_power_of_2(V))


def chunk_delta_rule_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, scale: float, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel on contiguous tensors; returns o (B, H, T, V) and the chunk-entry states
    h (B, H, NT, K, V) in float32, which the backward needs."""
    B, H, T, K = q.shape
    V = v.shape[-1]
    BK, BV = _tiles(K, V)
    NT = triton.cdiv(T, chunk_size)
    o = backend.empty_buffer((B, H, T, V), like=v)
    h = backend.empty_buffer((B, H, NT, K, V), like=v, dtype=torch.float32)
    chunk_delta_rule_fwd_kernel[(B * H,)](
        q, k, v, beta, o, h, scale, T, K=K, V=V, BT=chunk_size, BK=BK, BV=BV, PRECISION="ieee"
    )
    return o, h


def chunk_delta_rule_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    h: torch.Tensor,
    do: torch.Tensor,
    scale: float,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the backward kernel; returns (dq, dk, dv, dbeta) shaped like (q, k, v, beta)."""
    B, H, T, K = q.shape
    V = v.shape[-1]
    BK, BV = _tiles(K, V)
    dq = backend.empty_buffer(tuple(q.shape), like=q)
    dk = backend.empty_buffer(tuple(k.shape), like=k)
    dv = backend.empty_buffer(tuple(v.shape), like=v)
    dbeta = backend.empty_buffer(tuple(beta.shape), like=beta)
    chunk_delta_rule_bwd_kernel[(B * H,)](
        q, k, v, beta, h, do, dq, dk, dv, dbeta, scale, T,
        K=K, V=V, BT=chunk_size, BK=BK, BV=BV, PRECISION="ieee",
    )  # fmt: skip
    return dq, dk, dv, dbeta


class ChunkDeltaRuleFunction(torch.autograd.Function):
    """Autograd wrapper around the Triton forward and backward kernels."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, scale: float,
                chunk_size: int) -> torch.Tensor:
        q, k, v, beta = q.contiguous(), k.contiguous(), v.contiguous(), beta.contiguous()
        o, h = chunk_delta_rule_fwd(q, k, v, beta, scale, chunk_size)
        ctx.save_for_backward(q, k, v, beta, h)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        return o

    @staticmethod
    def backward(
        ctx: Any, do: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, None, None]:
        q, k, v, beta, h = ctx.saved_tensors
        dq, dk, dv, dbeta = chunk_delta_rule_bwd(q, k, v, beta, h, do.contiguous(), ctx.scale, ctx.chunk_size)
        return dq, dk, dv, dbeta, None, None
