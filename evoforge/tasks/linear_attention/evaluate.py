"""Evaluator of the linear_attention task: `python evaluate.py PROGRAM RESULTS_DIR --stage NAME`.

Trains the task's causal LM with the DeltaNet seed (initial_program.py), then with the candidate's TokenMixer,
under the same settings and seeds through the same code (training.train_and_measure), and scores the
difference: score = Σ_b weight_b · Δ_b, Δ_mqar = recall accuracy − baseline's, Δ_lm = baseline's held-out loss −
candidate's. The seed against itself scores 0. The baseline is retrained in every run unless the setting
`baseline_cache_dir` names a writable directory, where results are kept under a hash of everything that
could change them. Writes RESULTS_DIR/metrics.json {score, valid, metrics, error, feedback, traceback, artifacts}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

if TYPE_CHECKING:  # run with this task's directory on sys.path; type-checked as part of the package
    from evoforge.tasks.linear_attention.settings import Settings, stage_settings
    from evoforge.tasks.linear_attention.static_check import (
        build_mixer,
        check_causality,
        check_interface,
        check_parameter_budget,
        load_program,
    )
    from evoforge.tasks.linear_attention.training import (
        Benchmarks,
        RunResult,
        TooSlow,
        TrainingDiverged,
        pick_device,
        train_and_measure,
    )
else:
    from settings import Settings, stage_settings
    from static_check import (
        build_mixer,
        check_causality,
        check_interface,
        check_parameter_budget,
        load_program,
    )
    from training import Benchmarks, RunResult, TooSlow, TrainingDiverged, pick_device, train_and_measure

BASELINE_PROGRAM = HERE / "initial_program.py"
RESULT_SOURCES = ("lm.py", "data.py", "corpus.py", "training.py", "initial_program.py")


def report(
    score: float | None = None,
    valid: bool = False,
    metrics: dict[str, Any] | None = None,
    error: str | None = None,
    feedback: str | None = None,
    tb: str | None = None,
    artifacts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of metrics.json (the EvaluationReport of evoforge/tasks/spec.py)."""
    return {
        "score": score, "valid": valid, "metrics": metrics or {}, "error": error,
        "feedback": feedback, "traceback": tb, "artifacts": artifacts or {},
    }  # fmt: skip


def candidate_failure(exc: BaseException, during: str) -> dict[str, Any]:
    """The candidate raised: its traceback goes to `traceback`, which the Debugger works from."""
    return report(
        error=f"{type(exc).__name__} {during}: {exc}",
        feedback=f"Fix the {type(exc).__name__} raised {during}; see the traceback.",
        tb="".join(traceback.format_exception(exc)),
    )


def _cache_key(settings: Settings, device: torch.device) -> str:
    """A hash of everything that can change the baseline's numbers."""
    import evoforge.kernels

    digest = hashlib.sha256(json.dumps(settings.semantic_dict(), sort_keys=True, default=str).encode())
    kernel_sources = sorted(Path(evoforge.kernels.__file__).parent.rglob("*.py"))
    for path in [*(HERE / name for name in RESULT_SOURCES), *kernel_sources]:
        digest.update(path.read_bytes())
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    digest.update(f"{torch.__version__}|{device_name}|{torch.get_num_threads()}".encode())
    return digest.hexdigest()[:20]


def baseline_result(settings: Settings, bench: Benchmarks) -> tuple[RunResult, str]:
    """The DeltaNet seed trained exactly like the candidate; from the cache when one is configured and hit."""
    cache_file = None
    if settings.baseline_cache_dir:
        cache_file = Path(settings.baseline_cache_dir) / f"baseline-{_cache_key(settings, bench.device)}.json"
        if cache_file.is_file():
            cached = json.loads(cache_file.read_text())
            return RunResult(metrics=cached["metrics"], curves=cached["curves"]), f"cache file {cache_file}"
    result = train_and_measure(load_program(BASELINE_PROGRAM, "baseline_program").TokenMixer, bench, "baseline")
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"metrics": result.metrics, "curves": result.curves}))
            tmp.replace(cache_file)
        except OSError as exc:
            print(f"baseline cache not written ({exc}); it is recomputed next time", file=sys.stderr)
    return result, "computed in this run"


def time_limit(settings: Settings, base: RunResult) -> tuple[float | None, str]:
    """The candidate's training-time allowance: the tighter of max_slowdown × the baseline's and max_train_seconds."""
    limits = []
    if settings.max_slowdown is not None:
        allowed = settings.max_slowdown * base.metrics["train_seconds"]
        limits.append((allowed, f"max_slowdown={settings.max_slowdown:g} × DeltaNet's {base.metrics['train_seconds']:.1f}s"))
    if settings.max_train_seconds is not None:
        limits.append((settings.max_train_seconds, f"max_train_seconds={settings.max_train_seconds:g}"))
    return min(limits) if limits else (None, "")


def compare(settings: Settings, cand: RunResult, base: RunResult, baseline_source: str) -> dict[str, Any]:
    deltas: dict[str, float] = {}
    if "mqar" in settings.benchmarks:
        deltas["mqar"] = cand.metrics["mqar_accuracy"] - base.metrics["mqar_accuracy"]
    if "lm" in settings.benchmarks:
        deltas["lm"] = base.metrics["lm_loss"] - cand.metrics["lm_loss"]
    weights = {b: float(settings.score_weights.get(b, 0.0)) for b in deltas}
    score = sum(weights[b] * d for b, d in deltas.items())
    metrics: dict[str, Any] = dict(cand.metrics)
    metrics.update({f"baseline_{k}": v for k, v in base.metrics.items()})
    metrics.update({f"delta_{b}": round(d, 5) for b, d in deltas.items()})
    metrics["throughput_ratio"] = round(cand.metrics["train_tokens_per_s"] / base.metrics["train_tokens_per_s"], 3)
    metrics["activation_memory_ratio"] = round(cand.metrics["activation_mb"] / max(base.metrics["activation_mb"], 1e-9), 3)
    breakdown = {
        key: {"candidate": value, "baseline": base.metrics.get(key), "delta": round(value - base.metrics.get(key, 0.0), 5)}
        for key, value in cand.metrics.items()
        if key.startswith(("mqar_accuracy", "lm_")) and isinstance(base.metrics.get(key), int | float)
    }
    lines = []
    if "mqar" in deltas:
        per_set = ", ".join(
            f"{k.removeprefix('mqar_accuracy_')} {v['candidate']:.3f} vs {v['baseline']:.3f}"
            for k, v in breakdown.items() if k.startswith("mqar_accuracy_")
        )  # fmt: skip
        lines.append(
            f"MQAR recall {cand.metrics['mqar_accuracy']:.3f} vs DeltaNet {base.metrics['mqar_accuracy']:.3f} "
            f"({deltas['mqar']:+.3f}); per set: {per_set}."
        )
    if "lm" in deltas:
        lines.append(
            f"Held-out LM loss {cand.metrics['lm_loss']:.4f} vs DeltaNet {base.metrics['lm_loss']:.4f} "
            f"({-deltas['lm']:+.4f} nats/byte; lower is better)."
        )
    lines.append(
        f"Training throughput {cand.metrics['train_tokens_per_s']:.0f} tokens/s ({metrics['throughput_ratio']:.2f}× "
        f"DeltaNet); activation memory {cand.metrics['activation_mb']:.1f} MB "
        f"({metrics['activation_memory_ratio']:.2f}×); mixer parameters {cand.metrics['params_mixer']:,} vs "
        f"{base.metrics['params_mixer']:,}."
    )
    lines.append(f"Score {score:+.4f} = " + " + ".join(f"{weights[b]}·Δ{b}" for b in deltas) + ".")
    artifacts = {
        "benchmarks": breakdown,
        "curves": {"candidate": cand.curves, "baseline": base.curves},
        "baseline_source": baseline_source,
        "settings": settings.semantic_dict(),
    }
    return report(score=round(score, 6), valid=True, metrics=metrics, feedback=" ".join(lines), artifacts=artifacts)


def evaluate(program: Path, stage: str) -> dict[str, Any]:
    """Everything but writing the file; never raises."""
    try:
        settings = stage_settings(stage, HERE)
    except ValueError as exc:
        return report(error=f"evaluator misconfigured for stage {stage!r}: {exc}")
    threads = settings.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    device = pick_device(settings)
    started = time.time()
    try:
        module = load_program(program)
        mixer = build_mixer(module, settings.d_model, settings.n_heads)
        reasons = check_interface(mixer, settings.d_model)
        reasons = reasons or check_parameter_budget(mixer, settings.d_model, settings.n_heads, settings.max_param_ratio)
        reasons = reasons or check_causality(mixer, settings.d_model)
    except (Exception, SystemExit) as exc:  # the candidate's code failed to load or run: hand the trace to the Debugger
        return candidate_failure(exc, f"while building and checking TokenMixer({settings.d_model}, {settings.n_heads})")
    if reasons:
        return report(error="rule violated: " + "; ".join(reasons), feedback=" ".join(reasons))
    bench = Benchmarks(settings, device)
    # the baseline first: its training time, measured under the same load, bounds the candidate's
    print(f"[{stage}] the DeltaNet baseline: {settings.steps} steps on {device}, {threads} thread(s)", flush=True)
    try:
        base, source = baseline_result(settings, bench)
    except Exception as exc:  # not the candidate's fault: report it as an evaluator error
        return report(error=f"the DeltaNet baseline failed ({type(exc).__name__}: {exc})",
                      artifacts={"baseline_traceback": "".join(traceback.format_exception(exc))})  # fmt: skip
    max_seconds, limit_reason = time_limit(settings, base)
    print(f"[{stage}] baseline done after {time.time() - started:.0f}s; now the candidate", flush=True)
    try:
        cand = train_and_measure(type(mixer), bench, "candidate", max_seconds, limit_reason)
    except (TrainingDiverged, TooSlow) as exc:
        return report(error=str(exc), feedback=f"{exc}. Keep the mixer numerically stable and about as fast as DeltaNet.")
    except (Exception, SystemExit) as exc:  # the candidate raised during training
        return candidate_failure(exc, "during training")
    result = compare(settings, cand, base, source)
    result["metrics"]["eval_seconds"] = round(time.time() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("program", type=Path)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--stage", default="quick")
    args = parser.parse_args(argv)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    result = evaluate(args.program, args.stage)
    (args.results_dir / "metrics.json").write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps({k: result[k] for k in ("score", "valid", "error")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
