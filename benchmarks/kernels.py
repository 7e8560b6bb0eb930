"""Forward and backward time of the linear-attention kernels: torch references vs Triton, several sizes.

    python benchmarks/kernels.py [--sizes 2x4x512x64 ...] [--repeats 5] [--threads N] [--interpreter] [--out FILE]

On a CUDA machine both the torch chunked reference and the Triton kernels are timed (the gated delta rule
has no Triton kernel: only its torch forms are timed). On CPU Triton has no driver, so only the references
are timed (the chunked form, and the token-by-token recurrence at T ≤ 512);
`--interpreter` additionally runs the Triton kernels under TRITON_INTERPRET=1 at one tiny size — labelled as
such: it checks the kernels run, it says nothing about their speed. Figures go to benchmarks/results/kernels.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "kernels.json"
DEFAULT_SIZES = ("4x4x512x64", "4x4x2048x64", "2x8x4096x64")
INTERPRETER_SIZE = "1x2x64x32"
RECURRENT_MAX_T = 512
OPS = ("linear_attn", "delta_rule", "gated_delta_rule")
TRITON_OPS = ("linear_attn", "delta_rule")


def parse_size(text: str) -> tuple[int, int, int, int]:
    try:
        B, H, T, D = (int(x) for x in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like BxHxTxD (e.g. 2x4x512x64), got {text!r}") from exc
    return B, H, T, D


def make_inputs(op: str, B: int, H: int, T: int, D: int, device):
    import torch
    import torch.nn.functional as F

    gen = torch.Generator(device="cpu").manual_seed(0)
    q, k = (F.normalize(torch.randn(B, H, T, D, generator=gen), dim=-1) for _ in range(2))
    v = torch.randn(B, H, T, D, generator=gen)
    tensors = [q, k, v]
    if op != "linear_attn":
        tensors.append(torch.rand(B, H, T, generator=gen))  # beta
    if op == "gated_delta_rule":
        tensors.append(-0.1 * torch.rand(B, H, T, generator=gen))  # log decay
    return [t.to(device).requires_grad_() for t in tensors]


def time_fwd_bwd(fn, inputs, repeats: int, device) -> tuple[float, float]:
    """Median forward and backward milliseconds (one warm-up run first)."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    forward, backward = [], []
    for i in range(repeats + 1):
        for t in inputs:
            t.grad = None
        sync()
        start = time.perf_counter()
        out = fn(*inputs)
        sync()
        middle = time.perf_counter()
        out.sum().backward()
        sync()
        end = time.perf_counter()
        if i:  # the first run compiles / warms caches
            forward.append((middle - start) * 1e3)
            backward.append((end - middle) * 1e3)
    return statistics.median(forward), statistics.median(backward)


def implementations(op: str, device, with_triton: bool):
    """(label, callable) pairs to time for `op`."""
    from evoforge import kernels

    chunked: Callable[..., Any] = getattr(kernels, f"chunk_{op}")
    recurrent: Callable[..., Any] = getattr(kernels, f"naive_recurrent_{op}")
    impls = [
        ("torch-chunk", lambda *x: chunked(*x, chunk_size=64, backend="torch")),
        ("torch-recurrent", recurrent),
    ]
    if with_triton and op in TRITON_OPS:
        impls.append(("triton-chunk", lambda *x: chunked(*x, chunk_size=64, backend="triton")))
    return impls


def run(sizes, repeats: int, interpreter: bool, threads: int = 0) -> dict:
    if interpreter:
        os.environ["TRITON_INTERPRET"] = "1"  # before the kernel modules are imported
    import torch

    if threads:
        torch.set_num_threads(threads)

    from evoforge.kernels import triton_available

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    has_triton = triton_available()
    if device.type == "cuda" and has_triton:
        triton_mode = "gpu"
    elif interpreter and has_triton:
        triton_mode = f"interpreter at {INTERPRETER_SIZE} only (correctness, not speed)"
    else:
        triton_mode = "unavailable for real runs on CPU (Triton has no CPU driver); torch references timed"
    print(f"device: {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | Triton: {triton_mode}")
    rows = []
    plan = [(size, device.type == "cuda" and has_triton) for size in sizes]
    if interpreter and device.type == "cpu" and has_triton:
        plan.append((parse_size(INTERPRETER_SIZE), True))
    for (B, H, T, D), with_triton in plan:
        for op in OPS:
            for label, fn in implementations(op, device, with_triton):
                if label == "torch-recurrent" and T > RECURRENT_MAX_T:
                    continue
                if device.type == "cpu" and label == "triton-chunk":
                    label = "triton-interpreter"
                inputs = make_inputs(op, B, H, T, D, device)
                fwd, bwd = time_fwd_bwd(fn, inputs, 1 if label == "triton-interpreter" else repeats, device)
                rows.append({"op": op, "impl": label, "B": B, "H": H, "T": T, "D": D,
                             "forward_ms": round(fwd, 3), "backward_ms": round(bwd, 3)})  # fmt: skip
                print(f"{op:16s} {label:19s} B={B} H={H} T={T:5d} D={D:3d}  fwd {fwd:9.2f} ms  bwd {bwd:9.2f} ms")
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "triton": triton_mode,
        "chunk_size": 64,
        "repeats": repeats,
        "results": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--interpreter", action="store_true", help="also run Triton under the interpreter, tiny size")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    report = run(args.sizes, args.repeats, args.interpreter, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
