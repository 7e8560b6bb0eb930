"""Running one evaluation stage of a task on a candidate program, and judging what came back.

`run_stage` prepares a fresh work dir (program.py, the task's evaluator and extra files, results/), runs
`evaluate.py program.py results --stage NAME` through a sandbox, keeps stdout.txt / stderr.txt beside it,
and turns `results/metrics.json` into a `StageResult` whose status says what happened. Nothing the
candidate or the evaluator does makes it raise; a broken sandbox configuration does.
The Engineer's read-only tools (`read_log_tail`, `read_metrics`, from engineer_tools.py) are re-exported.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from typing_extensions import TypedDict

from evoforge.sandbox.base import Job, Limits, Sandbox, SandboxResult
from evoforge.sandbox.ending import RESOURCE_LIMITS
from evoforge.tasks.spec import METRICS_FILE, STAGE_SETTINGS_ENV, EvaluationReport, Stage, TaskSpec
from evoforge.tasks.tree import TREE_DIR
from evoforge.tools.engineer_tools import read_log_tail, read_metrics
from evoforge.tools.job_files import RESULTS_DIR, read_job_file

__all__ = ["StageResult", "StageStatus", "read_log_tail", "read_metrics", "run_stage", "run_static_check",
           "stage_failed"]

StageStatus = Literal["ok", "below_threshold", "invalid", "runtime_error", "timeout", "resource_limit",
                      "evaluator_error"]
PROGRAM_FILE = "program.py"
CHECK_FILE = "check.json"
EVOFORGE_PACKAGE = Path(__file__).resolve().parents[1]
"""Made readable inside the sandbox: evaluators and adapters may import evoforge (e.g. its kernels)."""
TAIL_CHARS = 4000
_TRACEBACK_STARTS = ("Traceback (most recent call last):", "Fatal Python error:")
_PROGRAM_FRAME = re.compile(rf'^\s*File "(?:[^"]*/)?{re.escape(PROGRAM_FILE)}", line \d+', re.MULTILINE)
"""A frame of the candidate's own file, in a Python traceback or a faulthandler dump."""
_TREE_FRAME = re.compile(rf'^\s*File "(?:[^"]*/)?{re.escape(TREE_DIR)}/[^"]+", line \d+', re.MULTILINE)
"""A frame of a file of a tree candidate (its fixed files included: the candidate's change may break them)."""


def program_argument(task: TaskSpec) -> str:
    """What the evaluator and the check script get as PROGRAM: the program file, or a tree task's directory."""
    return TREE_DIR if task.is_tree else PROGRAM_FILE


class StageResult(TypedDict):
    """What one stage of one candidate produced, as `run_stage` returns it and the graph state and node memory
    hold it: plain JSON (a non-finite number is None). `results_dir` is the stage's work dir (program.py,
    stdout.txt, stderr.txt, results/metrics.json). From typing_extensions: see runtime/payloads.py."""

    stage: str
    status: StageStatus
    score: float | None
    valid: bool
    metrics: dict[str, Any]
    error: str | None
    feedback: str | None
    traceback: str | None
    artifacts: dict[str, Any]
    stdout_tail: str
    stderr_tail: str
    wall_s: float
    cpu_s: float
    peak_memory_mb: float
    gpu_seconds: float
    results_dir: str
    backend: str
    warnings: list[str]


def stage_failed(result: StageResult) -> bool:
    """True unless the evaluation itself went through (a score below the threshold is not a failure)."""
    return result["status"] not in ("ok", "below_threshold")


def run_stage(task: TaskSpec, stage: Stage, code: str, workdir: Path, sandbox: Sandbox, *,
              settings_override: dict[str, Any] | None = None, max_output_bytes: int = 2_000_000) -> StageResult:
    """Evaluate `code` at `stage` of `task` in a fresh `workdir` (emptied if it exists) through `sandbox`.

    Whatever the candidate or the evaluator does comes back as a status; only a sandbox that cannot run jobs
    at all (`SandboxError`) or settings that are not JSON (`ValueError`) raise.
    """
    settings = {**stage.settings, **(settings_override or {})}
    try:
        settings_json = json.dumps(settings)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"stage settings must be JSON-serialisable, got {settings!r}: {exc}") from exc
    workdir, fixed = _fresh_workdir(task, code, workdir)
    res = stage.resources
    limits = Limits(timeout_s=stage.timeout_s, memory_mb=res.memory_mb, cpus=res.cpus,
                    max_processes=res.max_processes, max_output_bytes=max_output_bytes, network=res.network,
                    gpus=res.gpus, gpu_ids=tuple(res.gpu_ids), custom=tuple(sorted(res.custom.items())))
    argv = task.evaluation_argv(sys.executable, Path(program_argument(task)), Path(RESULTS_DIR), stage.name)
    # faulthandler prints a Python stack on a segfault, so a crashing candidate still leaves a trace
    env = {STAGE_SETTINGS_ENV: settings_json, "PYTHONFAULTHANDLER": "1"}
    result = sandbox.run(Job(argv=argv, workdir=workdir, limits=limits, env=env, readonly_paths=(EVOFORGE_PACKAGE,),
                             readonly_within=fixed))
    _write_new(workdir / "stdout.txt", result.stdout)
    _write_new(workdir / "stderr.txt", result.stderr)
    safe: StageResult = _json_safe(_judge(task, stage, result, workdir))
    return safe


@dataclass(frozen=True)
class StaticCheckVerdict:
    """What a task's check script decided: the reasons it rejects (empty: ok), and whether the candidate
    itself raised during the check (a bug for the Debugger, not a rule the Researcher broke)."""

    reasons: list[str]
    crashed: bool = False


def run_static_check(task: TaskSpec, code: str, workdir: Path, sandbox: Sandbox) -> StaticCheckVerdict:
    """Run the task's own static check script on `code` in the sandbox.

    check.json holds `{"ok": bool, "reasons": [...], "crashed": bool}`. A check that crashes, hangs or writes no
    verdict rejects with what happened, so a broken checker is seen.
    """
    check = task.rules.static_check
    if check is None:
        return StaticCheckVerdict([])
    workdir, fixed = _fresh_workdir(task, code, workdir, extra=(check.script,))
    res = check.resources
    limits = Limits(timeout_s=check.timeout_s, memory_mb=res.memory_mb, cpus=res.cpus,
                    max_processes=res.max_processes, network=False)
    argv = [sys.executable, check.script, program_argument(task), RESULTS_DIR]
    result = sandbox.run(Job(argv=argv, workdir=workdir, limits=limits, env={"PYTHONFAULTHANDLER": "1"},
                             readonly_paths=(EVOFORGE_PACKAGE,), readonly_within=fixed))
    _write_new(workdir / "stdout.txt", result.stdout)
    _write_new(workdir / "stderr.txt", result.stderr)
    where = f"static check {check.script}"
    try:
        verdict = json.loads(read_job_file(workdir / RESULTS_DIR / CHECK_FILE))
    except (OSError, ValueError) as exc:
        failure = result.describe_failure() or "exited normally"
        trace = _last_traceback(result.stderr)
        detail = f" ({_summary(trace)})" if trace else ""
        return StaticCheckVerdict([f"{where} gave no verdict: the check {failure}{detail}; {CHECK_FILE}: {exc}"])
    if not isinstance(verdict, dict) or not isinstance(verdict.get("ok"), bool):
        return StaticCheckVerdict([f"{where} wrote {CHECK_FILE} without a boolean 'ok': {str(verdict)[:200]}"])
    if verdict["ok"]:
        return StaticCheckVerdict([])
    reasons = verdict.get("reasons") or ["rejected without a reason"]
    reasons = [str(reason) for reason in reasons] if isinstance(reasons, list) else [str(reasons)]
    return StaticCheckVerdict(reasons, crashed=verdict.get("crashed") is True)


def _judge(task: TaskSpec, stage: Stage, result: SandboxResult, workdir: Path) -> StageResult:
    outcome = StageResult(
        stage=stage.name, status="ok", score=None, valid=False, metrics={}, error=None, feedback=None,
        traceback=None, artifacts={}, stdout_tail=result.stdout[-TAIL_CHARS:],
        stderr_tail=result.stderr[-TAIL_CHARS:], wall_s=result.wall_s, cpu_s=result.cpu_s,
        peak_memory_mb=result.peak_memory_mb, gpu_seconds=result.gpu_seconds, results_dir=str(workdir),
        backend=result.backend, warnings=list(result.warnings),
    )
    prefix = f"Stage {stage.name!r}:"
    happened = _clause(result)
    if result.killed_reason == "timeout":
        return _fail(outcome, "timeout", f"{prefix} the evaluation {happened}.")
    if result.killed_reason in RESOURCE_LIMITS:
        return _fail(outcome, "resource_limit", f"{prefix} the evaluation {happened}.")
    report, problem = _read_report(workdir / RESULTS_DIR)
    if report is None:
        trace = _last_traceback(result.stderr) if result.returncode not in (0, None) else None
        if trace and (_TREE_FRAME if task.is_tree else _PROGRAM_FRAME).search(trace):
            # the candidate raised (or crashed) inside the evaluator process before a result could be written
            outcome["traceback"] = trace
            return _fail(outcome, "runtime_error", f"{prefix} the evaluation {happened} with a Python "
                                                   f"traceback ({_summary(trace)}); {problem}.")
        # no frame of the candidate's file: the evaluator broke on its own, and the Debugger cannot fix that
        raised = f" ({_clean(_summary(trace))})" if trace else ""
        return _fail(outcome, "evaluator_error", f"{prefix} {problem}; the evaluator process {happened}{raised}.")
    outcome.update({"score": report.score, "valid": report.valid, "metrics": report.metrics,
                    "feedback": report.feedback, "traceback": report.traceback, "artifacts": report.artifacts})
    if result.returncode != 0:
        outcome["warnings"].append(f"the evaluator {happened} after writing {METRICS_FILE}")
    if report.evaluator_traceback:
        outcome["traceback"] = None  # not the candidate's: nothing for the Debugger
        failure = report.error or _summary(report.evaluator_traceback)
        return _fail(outcome, "evaluator_error", f"{prefix} the evaluator failed: {_clean(failure)}.")
    if report.traceback:
        raised = _summary(report.traceback)
        if raised.startswith("MemoryError"):
            # RLIMIT_AS surfaces as a MemoryError the evaluator may catch and report: still a resource limit
            return _fail(outcome, "resource_limit", f"{prefix} the candidate ran out of memory (MemoryError "
                                                    f"under the {stage.resources.memory_mb} MB limit).")
        # the evaluator's error often says itself what raised ("run_packing() raised KeyError: ...")
        return _fail(outcome, "runtime_error", f"{prefix} the candidate failed: {_clean(report.error or raised)}.")
    if not report.valid:
        return _fail(outcome, "invalid", f"{prefix} the evaluator marked the candidate invalid: "
                                         f"{_clean(report.error or 'no reason given')}.")
    if not task.passes(report.score, stage):
        word = "at least" if task.score.direction == "maximize" else "at most"
        return _fail(outcome, "below_threshold", f"{prefix} score {report.score:g} is not {word} the stage "
                                                 f"threshold {stage.threshold:g}.")
    outcome["error"] = report.error
    return outcome


def _fail(outcome: StageResult, status: StageStatus, error: str) -> StageResult:
    outcome.update({"status": status, "error": error})
    return outcome


def _clause(result: SandboxResult) -> str:
    failure = result.describe_failure() or "exited normally"
    return f"was {failure}" if failure.startswith("killed") else failure


def _fresh_workdir(task: TaskSpec, code: str, workdir: Path,
                   extra: tuple[str, ...] = ()) -> tuple[Path, tuple[str, ...]]:
    """The emptied `workdir` holding the candidate, the evaluator and its files, and results/; with the paths
    (relative to it) of a tree's fixed files, which the sandbox keeps read-only."""
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    fixed: tuple[str, ...] = ()
    if task.is_tree:
        # the whole tree, every time: fixed files come from the task, evolvable ones from the candidate's bundle
        fixed = tuple(f"{TREE_DIR}/{path}" for path in task.program_tree.materialize(code, workdir / TREE_DIR))
    else:
        (workdir / PROGRAM_FILE).write_text(code)
    for name in (task.evaluator, *task.extra_files, *extra):
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(task.root / name, target)
    (workdir / RESULTS_DIR).mkdir()
    return workdir, fixed


def _write_new(path: Path, text: str) -> None:
    """Write a file the job may have planted a symlink or a FIFO at: replace it, never follow it."""
    if path.is_symlink() or path.exists():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
        f.write(text)


def _read_report(results: Path) -> tuple[EvaluationReport | None, str]:
    """The validated report, or None and one phrase saying what was wrong with metrics.json."""
    where = f"{RESULTS_DIR}/{METRICS_FILE}"
    path = results / METRICS_FILE
    if not path.is_symlink() and not path.exists():
        return None, f"{where} was not written"
    try:
        raw = json.loads(read_job_file(path))
    except OSError as exc:
        return None, f"{where} could not be read ({exc})"
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError
        return None, f"{where} is not valid JSON ({exc})"
    if not isinstance(raw, dict):
        return None, f"{where} must hold a JSON object, got {type(raw).__name__}"
    try:
        return EvaluationReport.model_validate(raw), ""
    except ValidationError as exc:
        return None, f"{METRICS_FILE} breaks the contract: " + "; ".join(map(_contract_problem, exc.errors()))


def _contract_problem(error: Any) -> str:
    """One pydantic error of metrics.json as "field: what was expected, got the value" (a custom check's message
    names the value itself)."""
    field = ".".join(str(part) for part in error["loc"])
    if error["type"] == "value_error":
        message = error["msg"].removeprefix("Value error, ")
    else:
        expected = _EXPECTED.get(error["type"]) or error["msg"].lower()
        message = f"expected {expected}, got {error['input']!r}"
    return f"{field}: {message}" if field else message


_EXPECTED = {"float_type": "a JSON number", "bool_type": "true or false", "string_type": "a JSON string or null",
             "dict_type": "a JSON object"}


def _last_traceback(stderr: str) -> str | None:
    """The last Python traceback (or faulthandler dump) in `stderr`, to the end of the text."""
    starts = [stderr.rfind(marker) for marker in _TRACEBACK_STARTS]
    start = max(starts)
    return stderr[start:].strip() if start >= 0 else None


def _summary(trace: str) -> str:
    """The line of a traceback that says what went wrong: the exception (last line) of a Python
    traceback, the first line of a faulthandler dump (its last lines are stack frames)."""
    lines = trace.strip().splitlines() or [""]
    return lines[0] if lines[0].startswith("Fatal Python error") else lines[-1]


def _clean(text: str) -> str:
    """One phrase to end a sentence with: no trailing punctuation ("MemoryError: " -> "MemoryError")."""
    return text.strip().rstrip(":.").strip() or "no message"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    return str(value)
