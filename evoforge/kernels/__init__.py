"""Linear-attention building blocks: a plain-torch reference for every op and Triton kernels for the hot paths.

Layout everywhere: (B, H, T, D) — batch, heads, time, head dim. On CPU the torch reference runs; with CUDA
tensors and Triton installed the Triton kernels run (`backend="auto"`). See each op's README.md.

Ops: `chunk_linear_attn` and `chunk_delta_rule` (torch reference + Triton kernels), `chunk_gated_delta_rule`
(torch only).
"""

from evoforge.kernels.backend import resolve_backend, triton_available
from evoforge.kernels.delta_rule import chunk_delta_rule, naive_chunk_delta_rule, naive_recurrent_delta_rule
from evoforge.kernels.gated_delta_rule import (
    chunk_gated_delta_rule,
    naive_chunk_gated_delta_rule,
    naive_recurrent_gated_delta_rule,
)
from evoforge.kernels.linear_attn import (
    chunk_linear_attn,
    naive_chunk_linear_attn,
    naive_recurrent_linear_attn,
)

__all__ = [
    "chunk_delta_rule",
    "chunk_gated_delta_rule",
    "chunk_linear_attn",
    "naive_chunk_delta_rule",
    "naive_chunk_gated_delta_rule",
    "naive_chunk_linear_attn",
    "naive_recurrent_delta_rule",
    "naive_recurrent_gated_delta_rule",
    "naive_recurrent_linear_attn",
    "resolve_backend",
    "triton_available",
]
