"""Run tasks written for OpenEvolve or ASI-Evolve unchanged; write EvoForge's metrics.json from what they return.

    python -m evoforge.tasks.adapters openevolve EVALUATOR_PY PROGRAM RESULTS_DIR --stage NAME [--stage-index K]
    python -m evoforge.tasks.adapters asi_evolve EVAL_SH PROGRAM RESULTS_DIR --stage NAME
    (both take --timeout SECONDS: the stage's limit; the adapter stops the evaluation a little before it)

`TaskSpec.evaluation_argv` builds these commands; they run in the sandbox work dir, where the evaluator and
the task's extra files have been copied. Standard library only, so the file also works as a plain script.

OpenEvolve: `evaluator.py` defines `evaluate(program_path)` and optionally `evaluate_stage1/2/3`. Stage K
(1-based position in task.yaml) calls `evaluate_stageK` when defined, else `evaluate`; the stage setting
`function` names another. The returned dict (or `EvaluationResult`, shimmed when openevolve is not
installed) maps as: `combined_score`, else `score` -> score; `error` -> error; a false `validity`/`valid`
-> invalid; other numbers -> metrics; anything else -> artifacts. No numeric score means invalid.

ASI-Evolve: as in ASI-Evolve, the program is written to `code` in a fresh step directory
`<eval.sh dir>/steps/step_<stage>` and `bash eval.sh CODE_PATH` runs with that directory as cwd (so a script
that looks for its experiment files two levels up finds them beside itself). It writes `results.json` there:
`eval_score` -> score; `success: false` (absent counts as true) or a non-zero exit -> invalid; `error` or
`temp.error` -> error; other numbers -> metrics; the rest -> artifacts. `python3` on its PATH is the
interpreter running this adapter; EVOFORGE_STAGE names the stage.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import traceback
import types
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
STAGE_SETTINGS_ENV = "EVOFORGE_STAGE_SETTINGS"
ADAPTERS = ("openevolve", "asi_evolve")
TAIL_CHARS = 2000
MAX_ARTIFACT_CHARS = 10_000


class EvaluationTimeout(BaseException):
    """The wrapped evaluator ran past the adapter's deadline (a BaseException, so its `except Exception`
    blocks cannot swallow it)."""


def time_budget(stage_timeout_s: float | None) -> float | None:
    """Seconds the wrapped evaluator may use: the stage limit minus room to write metrics.json."""
    if stage_timeout_s is None:
        return None
    return max(1.0, stage_timeout_s - max(2.0, 0.05 * stage_timeout_s))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _artifact(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value if len(value) <= MAX_ARTIFACT_CHARS else "..." + value[-MAX_ARTIFACT_CHARS:]
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return _artifact(repr(value))


def split_values(values: dict[str, Any], skip: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Numbers (and booleans) -> metrics; everything else -> artifacts, made JSON-safe."""
    metrics: dict[str, Any] = {}
    artifacts: dict[str, Any] = {}
    for key, value in values.items():
        if key in skip:
            continue
        if isinstance(value, bool):
            metrics[str(key)] = value
        elif _number(value) is not None:
            metrics[str(key)] = _number(value)
        elif isinstance(value, int | float):
            metrics[str(key)] = None  # NaN / inf: strict JSON has no spelling for them
        else:
            artifacts[str(key)] = _artifact(value)
    return metrics, artifacts


def report_from_values(values: dict[str, Any], score_keys: tuple[str, ...], source: str) -> dict[str, Any]:
    """The metrics.json content for a framework's result dict (see the module docstring)."""
    score_key = next((k for k in score_keys if k in values), None)
    score = _number(values.get(score_key)) if score_key else None
    error = values.get("error")
    error = str(error) if error not in (None, "", False) else None
    verdict = all(values[k] for k in ("validity", "valid", "success") if k in values)
    metrics, artifacts = split_values(values, skip={"error"})
    if error is None and score is None:
        error = f"{source} returned no numeric {' or '.join(repr(k) for k in score_keys)} (keys: {sorted(values)})"
    if error is None and not verdict:
        error = f"{source} marked the program invalid"
    valid = error is None
    shown = ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(metrics.items())[:12]
    )
    return {
        "score": score if valid else None,
        "valid": valid,
        "metrics": metrics,
        "error": error,
        "feedback": f"{source} returned {shown or 'no numbers'}",
        "traceback": None,
        "artifacts": artifacts,
    }


def _install_openevolve_shim() -> None:
    """Evaluators may import openevolve's EvaluationResult; provide a minimal one when openevolve is absent."""
    try:
        import openevolve.evaluation_result  # noqa: F401

        return
    except ImportError:
        pass

    @dataclasses.dataclass
    class EvaluationResult:
        metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
        artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)

    package = types.ModuleType("openevolve")
    package.__path__ = []
    module = types.ModuleType("openevolve.evaluation_result")
    module.EvaluationResult = EvaluationResult  # type: ignore[attr-defined]
    package.evaluation_result = module  # type: ignore[attr-defined]
    sys.modules.update({"openevolve": package, "openevolve.evaluation_result": module})


def _raise_timeout(signum: int, frame: Any) -> None:
    raise EvaluationTimeout


def run_openevolve(
    evaluator: Path, program: Path, stage_index: int, settings: dict[str, Any], budget_s: float | None
) -> dict[str, Any]:
    """Import evaluator.py, call the stage's function on `program`, map its result."""
    _install_openevolve_shim()
    sys.path.insert(0, str(evaluator.resolve().parent))
    spec = importlib.util.spec_from_file_location("openevolve_task_evaluator", evaluator)
    if spec is None or spec.loader is None:
        raise ValueError(f"evaluator={evaluator} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    name = settings.get("function") or next(
        (n for n in (f"evaluate_stage{stage_index}", "evaluate") if callable(getattr(module, n, None))), None
    )
    if name is None or not callable(getattr(module, name, None)):
        wanted = name or f"evaluate_stage{stage_index} or evaluate"
        raise ValueError(f"evaluator={evaluator.name} defines no function {wanted}")  # the task's fault
    if budget_s is not None:
        signal.signal(signal.SIGALRM, _raise_timeout)
        signal.setitimer(signal.ITIMER_REAL, budget_s)
    try:
        result = getattr(module, name)(str(program))
    except EvaluationTimeout:
        return {"score": None, "valid": False, "error": f"{name}() did not finish within {budget_s:.0f} s"}
    except Exception as exc:  # the evaluator (or the program it ran) failed: hand the trace to the Debugger
        return {
            "score": None,
            "valid": False,
            "error": f"{name}() raised {type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    finally:
        if budget_s is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
    if isinstance(getattr(result, "metrics", None), dict):
        report = report_from_values(result.metrics, ("combined_score", "score"), f"{name}()")
        extra = getattr(result, "artifacts", None) or {}
        report["artifacts"].update({str(k): _artifact(v) for k, v in extra.items()})
        return report
    if not isinstance(result, dict):
        return {
            "score": None,
            "valid": False,
            "error": f"{name}() returned {type(result).__name__}, expected a dict",
        }
    return report_from_values(result, ("combined_score", "score"), f"{name}()")


def _tail(path: Path) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - TAIL_CHARS))
        return handle.read().decode("utf-8", errors="replace")


def run_asi_evolve(
    script: Path, program: Path, results_dir: Path, stage: str, budget_s: float | None
) -> dict[str, Any]:
    """Run `bash eval.sh CODE` in a fresh step directory beside the script; map results.json."""
    step_dir = script.resolve().parent / "steps" / f"step_{stage}"
    shutil.rmtree(step_dir, ignore_errors=True)
    step_dir.mkdir(parents=True)
    shutil.copyfile(program, step_dir / "code")
    env = {
        **os.environ,
        "EVOFORGE_STAGE": stage,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    out_path, err_path = step_dir / "evoforge_stdout.txt", step_dir / "evoforge_stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        child = subprocess.Popen(
            ["bash", str(script.resolve()), str(step_dir / "code")],
            cwd=step_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            child.wait(timeout=budget_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)  # the script's leftovers must not outlive the evaluation
        child.wait()
    logs = {"stdout": _tail(out_path), "stderr": _tail(err_path), "eval_log": _tail(step_dir / "eval.log")}
    logs = {k: v for k, v in logs.items() if v}
    results_path = step_dir / "results.json"
    if timed_out:
        failure = f"{script.name} did not finish within {budget_s:.0f} s"
    elif child.returncode != 0:
        failure = f"{script.name} exited with status {child.returncode}"
    elif not results_path.is_file():
        failure = f"{script.name} wrote no results.json in {step_dir}"
    else:
        failure = None
    if failure:
        return {
            "score": None,
            "valid": False,
            "error": failure,
            "artifacts": logs,
            "feedback": logs.get("stderr") or logs.get("eval_log"),
        }
    shutil.copyfile(results_path, results_dir / "results.json")
    try:
        values = json.loads(results_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        return {
            "score": None,
            "valid": False,
            "error": f"results.json is not valid JSON: {exc}",
            "artifacts": logs,
        }
    if not isinstance(values, dict):
        return {
            "score": None,
            "valid": False,
            "error": "results.json must hold a JSON object",
            "artifacts": logs,
        }
    temp: dict[str, Any] = values["temp"] if isinstance(values.get("temp"), dict) else {}
    if not values.get("error") and temp.get("error"):
        values = {**values, "error": temp["error"]}
    report = report_from_values(values, ("eval_score",), script.name)
    report["artifacts"].update(logs)
    return report


def write_metrics(results_dir: Path, report: dict[str, Any]) -> None:
    """Atomically replace metrics.json with strict JSON holding every key of the contract."""
    full = {
        "score": None,
        "valid": False,
        "metrics": {},
        "error": None,
        "feedback": None,
        "traceback": None,
        "artifacts": {},
        **report,
    }
    tmp = results_dir / (METRICS_FILE + ".tmp")
    tmp.write_text(json.dumps(full, indent=2, allow_nan=False, default=repr))
    os.replace(tmp, results_dir / METRICS_FILE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evoforge.tasks.adapters", description=__doc__.splitlines()[0]
    )
    parser.add_argument("adapter", choices=ADAPTERS)
    parser.add_argument("evaluator", type=Path, help="evaluator.py (openevolve) or eval.sh (asi_evolve)")
    parser.add_argument("program", type=Path)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--stage", required=True)
    parser.add_argument(
        "--stage-index", type=int, default=1, help="1-based position of the stage in task.yaml"
    )
    parser.add_argument("--timeout", type=float, default=None, help="the stage's wall-clock limit in seconds")
    args = parser.parse_args(argv)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    budget = time_budget(args.timeout)
    try:
        settings = json.loads(os.environ.get(STAGE_SETTINGS_ENV) or "{}")
        if not isinstance(settings, dict):
            raise ValueError(f"{STAGE_SETTINGS_ENV} must hold a JSON object, got {settings!r}")
        if args.adapter == "openevolve":
            report = run_openevolve(args.evaluator, args.program, args.stage_index, settings, budget)
        else:
            report = run_asi_evolve(args.evaluator, args.program, args.results_dir, args.stage, budget)
    except Exception as exc:  # the adapter or the task's evaluator failed, not the candidate: say so in metrics.json
        traceback.print_exc()
        report = {
            "score": None,
            "valid": False,
            "error": f"{args.adapter} adapter failed: {type(exc).__name__}: {exc}",
            "evaluator_traceback": traceback.format_exc(),
        }
    write_metrics(args.results_dir, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
