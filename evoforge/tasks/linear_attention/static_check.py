"""Rules a candidate token mixer must keep, checked before any training is paid for.

Run as `python static_check.py PROGRAM RESULTS_DIR`; writes RESULTS_DIR/check.json
`{"ok": bool, "reasons": [str, ...], "measurements": {...}}`. Self-contained (torch and the standard library
only); evaluate.py imports the cheap rules from here as well.

1. interface: `TokenMixer(d_model, n_heads)` is an nn.Module mapping (B, T, C) → (B, T, C), finite, with a
   gradient reaching its input;
2. parameter budget: at most `MAX_PARAM_RATIO` × the DeltaNet seed's parameters at the same size;
3. causality: changing inputs at positions ≥ t leaves outputs before t unchanged (train and eval mode), and
   batch elements do not see each other;
4. sub-quadratic cost: forward+backward FLOPs, autograd-saved memory and wall time measured at T=256 and
   T=2048; each growth exponent log(ratio)/log(8) must stay under its limit (linear ≈ 1, quadratic ≈ 2).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn

CHECK_D_MODEL, CHECK_N_HEADS = 64, 4
MAX_PARAM_RATIO = 1.5
CAUSALITY_CUTS = (1, 17, 40, 63)
CAUSAL_TOLERANCE = 1e-4
"""relative to the output's magnitude; a real leak changes earlier outputs by O(1)"""
SHORT_T, LONG_T = 256, 2048
MAX_EXPONENT = {"flops": 1.35, "saved_memory": 1.35, "wall_time": 1.5}
"""FLOPs and saved bytes are deterministic; wall time is noisy on a shared machine, so its limit is looser."""


def deltanet_mixer_parameters(d_model: int, n_heads: int) -> int:
    """Parameters of the seed's DeltaNet mixer: q, k, v, o projections, β projection, three depthwise
    convolutions of width 4, and the per-head output RMSNorm (tests/test_linear_attention.py checks this)."""
    return 4 * d_model * d_model + d_model * n_heads + 3 * 4 * d_model + d_model // n_heads


def load_program(path: Path, name: str = "program") -> ModuleType:
    """Import a program file as a module called `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_mixer(module: ModuleType, d_model: int, n_heads: int) -> nn.Module:
    """Instantiate the candidate's TokenMixer; raises ValueError when the interface is not kept."""
    mixer_cls = getattr(module, "TokenMixer", None)
    if not (isinstance(mixer_cls, type) and issubclass(mixer_cls, nn.Module)):
        raise ValueError("the program must define `class TokenMixer(nn.Module)`")
    return mixer_cls(d_model, n_heads)


def check_interface(mixer: nn.Module, d_model: int) -> list[str]:
    x = torch.randn(2, 37, d_model, requires_grad=True)
    y = mixer(x)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, 37, d_model):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        return [f"interface: forward(x) must return a tensor shaped like x (2, 37, {d_model}), got {shape}"]
    if not torch.isfinite(y).all():
        return ["interface: forward(x) returned NaN or infinite values for a standard-normal input"]
    y.square().mean().backward()
    if x.grad is None or not torch.isfinite(x.grad).all() or x.grad.abs().sum() == 0:
        return ["interface: no finite, non-zero gradient reaches the input x — the output must depend on x"]
    return []


def check_parameter_budget(mixer: nn.Module, d_model: int, n_heads: int, ratio: float = MAX_PARAM_RATIO) -> list[str]:
    count = sum(p.numel() for p in mixer.parameters())
    baseline = deltanet_mixer_parameters(d_model, n_heads)
    if count > ratio * baseline:
        return [
            f"parameter budget: TokenMixer({d_model}, {n_heads}) has {count:,} parameters, more than "
            f"{ratio} × the DeltaNet seed's {baseline:,} (limit {int(ratio * baseline):,})"
        ]
    return []


def _seeded_call(mixer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(1234)  # same dropout masks (if any) for both calls being compared
    with torch.no_grad():
        y: torch.Tensor = mixer(x)
    return y


def check_causality(mixer: nn.Module, d_model: int, T: int = 64) -> list[str]:
    reasons = []
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, T, d_model, generator=gen)
    for mode in ("eval", "train"):
        mixer.train(mode == "train")
        y = _seeded_call(mixer, x)
        tol = CAUSAL_TOLERANCE * (1.0 + float(y.abs().max()))
        for cut in CAUSALITY_CUTS:
            x2 = x.clone()
            x2[:, cut:] = torch.randn(2, T - cut, d_model, generator=gen)
            diff = (_seeded_call(mixer, x2)[:, :cut] - y[:, :cut]).abs()
            if float(diff.max()) > tol:
                first = int(diff.amax(dim=(0, 2)).gt(tol).nonzero()[0])
                reasons.append(
                    f"causality ({mode} mode): changing only the inputs at positions ≥ {cut} changed the "
                    f"output at position {first} (max difference {float(diff.max()):.3g}, tolerance {tol:.1g}); "
                    "the output at t may depend only on inputs at positions ≤ t"
                )
                break
        x3 = x.clone()
        x3[1] = torch.randn(T, d_model, generator=gen)
        if float((_seeded_call(mixer, x3)[0] - y[0]).abs().max()) > tol:
            reasons.append(f"batch independence ({mode} mode): changing batch element 1 changed element 0's output")
    mixer.eval()
    return reasons


def _cpu_attention_flop_formulas() -> dict[Any, Callable[..., int]]:
    """torch's FLOP counter knows the CUDA attention kernels but not the CPU flash one that
    F.scaled_dot_product_attention picks here; count it with the same formulas."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    Shape = tuple[int, ...]

    def forward_flops(query_shape: Shape, key_shape: Shape, value_shape: Shape, *args: object,
                      out_shape: Shape | None = None, **kwargs: object) -> int:
        flops: int = sdpa_flop_count(query_shape, key_shape, value_shape)  # torch leaves it unannotated
        return flops

    def backward_flops(grad_out_shape: Shape, query_shape: Shape, key_shape: Shape, value_shape: Shape,
                       *args: object, out_shape: Shape | None = None, **kwargs: object) -> int:
        flops: int = sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)
        return flops

    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = forward_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = backward_flops
    return mapping


def _saved_bytes_and_flops(mixer: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    from torch.utils.flop_counter import FlopCounterMode

    params = {p.untyped_storage().data_ptr() for p in mixer.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_flop_formulas())
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = mixer(x)
        y.square().mean().backward()
    return float(sum(saved.values())), float(counter.get_total_flops())


def _fwd_bwd_seconds(mixer: nn.Module, x: torch.Tensor) -> float:
    started = time.perf_counter()
    mixer(x).square().mean().backward()
    return time.perf_counter() - started


def check_subquadratic(mixer: nn.Module, d_model: int, measurements: dict[str, Any]) -> list[str]:
    mixer.eval()
    xs = {T: torch.randn(1, T, d_model, requires_grad=True) for T in (SHORT_T, LONG_T)}
    memory, flops = {}, {}
    for T, x in xs.items():
        memory[T], flops[T] = _saved_bytes_and_flops(mixer, x)
    times: dict[int, list[float]] = {SHORT_T: [], LONG_T: []}
    for _ in range(3):  # interleaved, so a burst of load on the shared machine hits both lengths
        for T, x in xs.items():
            times[T].append(_fwd_bwd_seconds(mixer, x))
    growth = math.log(LONG_T / SHORT_T)
    figures = {"flops": flops, "saved_memory": memory, "wall_time": {T: min(v) for T, v in times.items()}}
    reasons = []
    for name, by_length in figures.items():
        short, long = by_length[SHORT_T], by_length[LONG_T]
        exponent = math.log(long / short) / growth if short > 0 and long > 0 else 0.0
        measurements[name] = {"T": [SHORT_T, LONG_T], "values": [short, long], "exponent": round(exponent, 3)}
        if exponent > MAX_EXPONENT[name]:
            reasons.append(
                f"sub-quadratic rule: {name.replace('_', ' ')} grows like T^{exponent:.2f} between T={SHORT_T} "
                f"and T={LONG_T} ({short:.3g} → {long:.3g}); the limit is T^{MAX_EXPONENT[name]} — "
                "full attention over all past tokens is quadratic; use a recurrent/chunked state instead"
            )
    return reasons


def run_checks(program: Path) -> tuple[list[str], dict[str, Any], bool]:
    """(reasons, measurements, crashed): `crashed` when the candidate raised rather than broke a rule, so the
    framework hands it to the Debugger with the evaluator's traceback instead of back to the Researcher."""
    measurements: dict[str, Any] = {}
    try:
        module = load_program(program)
        mixer = build_mixer(module, CHECK_D_MODEL, CHECK_N_HEADS)
    except (Exception, SystemExit) as exc:  # the candidate's own error: report it, don't crash the checker
        tail = "".join(traceback.format_exception(exc)[-3:]).strip()
        return [f"interface: could not build TokenMixer({CHECK_D_MODEL}, {CHECK_N_HEADS}): {tail}"], measurements, True
    rules: tuple[tuple[str, Callable[[], list[str]]], ...] = (
        ("interface", lambda: check_interface(mixer, CHECK_D_MODEL)),
        ("parameter budget", lambda: check_parameter_budget(mixer, CHECK_D_MODEL, CHECK_N_HEADS)),
        ("causality", lambda: check_causality(mixer, CHECK_D_MODEL)),
        ("sub-quadratic rule", lambda: check_subquadratic(mixer, CHECK_D_MODEL, measurements)),
    )
    all_reasons: list[str] = []
    crashed = False
    for name, rule in rules:
        try:
            all_reasons += rule()
        except (Exception, SystemExit) as exc:  # a crash inside a rule is the candidate's failure; name it
            tail = "".join(traceback.format_exception(exc)[-3:]).strip()
            all_reasons.append(f"{name}: the mixer raised while being checked: {tail}")
            crashed = True
        if all_reasons and name == "interface":
            break  # the other rules need a working forward pass
    return all_reasons, measurements, crashed


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python static_check.py PROGRAM RESULTS_DIR", file=sys.stderr)
        return 2
    program, results_dir = Path(argv[0]), Path(argv[1])
    results_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    reasons, measurements, crashed = run_checks(program)
    report = {"ok": not reasons, "reasons": reasons, "crashed": crashed, "measurements": measurements}
    (results_dir / "check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
