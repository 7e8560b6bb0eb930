"""Which implementation of a kernel runs: the plain-torch reference or the Triton fast path.

`auto` picks Triton for CUDA tensors when Triton is importable and the torch reference otherwise (every CPU
run). `triton` on CPU tensors works only under the Triton interpreter (`TRITON_INTERPRET=1` set before the
kernel module is first imported), which is how the tests exercise the kernels on a machine without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Literal

import torch

Backend = Literal["auto", "torch", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")
INTERPRET_ENV = "TRITON_INTERPRET"


def triton_available() -> bool:
    """Whether the `triton` package can be imported at all (it is an optional dependency)."""
    return importlib.util.find_spec("triton") is not None


def interpreter_requested() -> bool:
    """Whether kernels defined from now on run under the Triton interpreter (CPU tensors allowed)."""
    return os.environ.get(INTERPRET_ENV, "0") == "1"


def resolve_backend(requested: str, *tensors: torch.Tensor) -> Literal["torch", "triton"]:
    """The backend that will run for `tensors`; raises ValueError when `requested` cannot be honoured."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    on_cuda = all(t.is_cuda for t in tensors)
    if requested == "torch":
        return "torch"
    if requested == "auto":
        return "triton" if on_cuda and triton_available() else "torch"
    if not triton_available():
        raise ValueError("backend='triton' needs the `triton` package (pip install 'evoforge[gpu]')")
    if not on_cuda and not interpreter_requested():
        raise ValueError(
            "backend='triton' on CPU tensors needs the Triton interpreter: set TRITON_INTERPRET=1 "
            "before the kernels are first imported"
        )
    return "triton"


def empty_buffer(shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Every output buffer a Triton wrapper hands to a kernel comes from here (tests fill it with NaN, so a
    kernel that leaves part of its output unwritten fails loudly)."""
    return torch.empty(shape, device=like.device, dtype=dtype or like.dtype)


def check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor | None = None) -> None:
    """Fail fast on the (B, H, T, K) / (B, H, T, V) / (B, H, T) layout every op here expects."""
    assert q.dim() == 4, f"q must be (B, H, T, K), got shape {tuple(q.shape)}"
    assert k.shape == q.shape, f"k must match q's shape {tuple(q.shape)}, got {tuple(k.shape)}"
    assert v.dim() == 4 and v.shape[:3] == q.shape[:3], (
        f"v must be (B, H, T, V) with (B, H, T) = {tuple(q.shape[:3])}, got {tuple(v.shape)}"
    )
    if beta is not None:
        assert beta.shape == q.shape[:3], f"beta must be (B, H, T) = {tuple(q.shape[:3])}, got {tuple(beta.shape)}"
    assert q.is_floating_point(), f"q must be a floating-point tensor, got {q.dtype}"


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The references' arithmetic precision: float64 for float64 inputs, float32 for everything else."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_chunk_size(chunk_size: int) -> None:
    """Chunk sizes are powers of two from 16 (the smallest tile `tl.dot` accepts) to 128."""
    if chunk_size not in (16, 32, 64, 128):
        raise ValueError(f"chunk_size must be one of 16, 32, 64, 128, got {chunk_size!r}")
