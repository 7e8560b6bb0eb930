"""The task contract: built-in tasks load, bad task.yaml files fail naming the field, adapted tasks conform."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evoforge.tasks.adapters import time_budget
from evoforge.tasks.spec import (
    ADAPTER_MODULE,
    STAGE_SETTINGS_ENV,
    EvaluationReport,
    TaskError,
    TaskSpec,
    list_builtin_tasks,
    load_task,
)

OWNED_BUILTIN_TASKS = ["circle_packing"]


def make_task(root: Path, spec: dict | list | str, files: dict[str, str] | None = None) -> Path:
    """A task directory holding task.yaml (`spec` dumped as YAML unless it is already text) and `files`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "task.yaml").write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    return root


def minimal_spec(**changes) -> dict:
    spec = {"name": "tiny", "description": "a tiny task", "stages": [{"name": "quick", "timeout_s": 10}]}
    return {**spec, **changes}


NATIVE_FILES = {"initial_program.py": "x = 1\n", "evaluate.py": "print('unused')\n"}


@pytest.mark.parametrize("name", OWNED_BUILTIN_TASKS)
def test_builtin_task_loads(name: str) -> None:
    assert name in list_builtin_tasks()
    task = load_task(name)
    assert task.name == name and task.adapter == "native"
    assert task.program_path.is_file() and task.evaluator_path.is_file()
    assert [s.name for s in task.stages][0] == "quick"
    code = task.seed_code()
    assert code.count("# EVOLVE-BLOCK-START") == 1 and code.count("# EVOLVE-BLOCK-END") == 1
    for entry in task.entry_points:
        assert f"def {entry}(" in code.split("# EVOLVE-BLOCK-END")[1], f"{entry} must sit in the fixed part"
    notes = task.cognition_files()
    assert 3 <= len(notes) <= 6
    for note in notes:
        text = note.read_text()
        assert text.startswith("# ") and "Sources:" in text, f"{note.name} needs a title and its sources"


def test_circle_packing_contract_details() -> None:
    task = load_task("circle_packing")
    quick, full = task.stage("quick"), task.stage("full")
    assert quick.settings["program_timeout_s"] < quick.timeout_s
    assert full.settings["program_timeout_s"] * full.settings["repeats"] < full.timeout_s
    assert task.score.direction == "maximize" and task.score.target == pytest.approx(2.6359830849)
    assert {"socket", "subprocess", "requests", "urllib", "http"} <= set(task.rules.forbidden_imports)
    assert len(task.seed_code()) < task.rules.max_code_chars
    tree = ast.parse(task.seed_code())
    imported = {
        a.name.split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])
    }
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert imported == {"numpy"}, "the seed must obey its own task's rules"
    assert not names & set(task.rules.forbidden_names)
    assert len(task.description) < 1000


@pytest.mark.parametrize(
    ("spec", "files", "message"),
    [
        (minimal_spec(stages=[{"name": "quick", "timeout_s": -1}]), NATIVE_FILES, "stages.0.timeout_s"),
        (minimal_spec(stages=[{"name": "bad name!", "timeout_s": 1}]), NATIVE_FILES, "stages.0.name"),
        (
            minimal_spec(stages=[{"name": "q", "timeout_s": 1, "colour": "red"}]),
            NATIVE_FILES,
            "stages.0.colour",
        ),
        (minimal_spec(stages=[]), NATIVE_FILES, "stages: List should have at least 1 item"),
        (
            minimal_spec(stages=[{"name": "q", "timeout_s": 1}, {"name": "q", "timeout_s": 2}]),
            NATIVE_FILES,
            "stages: Value error, stage names must be unique, got ['q', 'q']",
        ),
        (minimal_spec(), {"evaluate.py": ""}, "program='initial_program.py'"),
        (minimal_spec(evaluator="judge.py"), NATIVE_FILES, "evaluator='judge.py'"),
        (minimal_spec(extra_files=["data.csv"]), NATIVE_FILES, "extra_files='data.csv'"),
        (minimal_spec(colour="red"), NATIVE_FILES, "colour: Extra inputs are not permitted"),
        (minimal_spec(score={"direction": "up"}), NATIVE_FILES, "score.direction"),
        (minimal_spec(adapter="funsearch"), NATIVE_FILES, "adapter"),
        (minimal_spec(root="/elsewhere"), NATIVE_FILES, "root: not a task.yaml field"),
        (["name", "tiny"], NATIVE_FILES, "expected a mapping at the top level, got list"),
        ("name: [unclosed\n", NATIVE_FILES, "not valid YAML"),
        (
            {k: v for k, v in minimal_spec().items() if k != "description"},
            NATIVE_FILES,
            "description: Field required",
        ),
    ],
)
def test_invalid_task_yaml_names_file_and_field(tmp_path: Path, spec, files, message: str) -> None:
    root = make_task(tmp_path / "task", spec, files)
    with pytest.raises(TaskError) as caught:
        load_task(root)
    assert str(root / "task.yaml") in str(caught.value)
    assert message in str(caught.value), str(caught.value)


def test_unknown_task_lists_the_builtin_ones() -> None:
    with pytest.raises(TaskError, match="circle_packing"):
        load_task("no_such_task_here")


def test_evaluator_defaults_follow_the_adapter(tmp_path: Path) -> None:
    openevolve = load_task(
        make_task(
            tmp_path / "oe",
            minimal_spec(adapter="openevolve"),
            {"initial_program.py": "", "evaluator.py": ""},
        )
    )
    asi = load_task(
        make_task(
            tmp_path / "asi", minimal_spec(adapter="asi_evolve"), {"initial_program.py": "", "eval.sh": ""}
        )
    )
    assert (openevolve.evaluator, asi.evaluator) == ("evaluator.py", "eval.sh")
    with pytest.raises(TaskError, match="evaluator: adapter 'openevolve' needs a Python evaluator file"):
        load_task(
            make_task(
                tmp_path / "bad",
                minimal_spec(adapter="openevolve", evaluator="eval.sh"),
                {"initial_program.py": "", "eval.sh": ""},
            )
        )


def test_evaluation_argv_and_env_per_adapter(tmp_path: Path) -> None:
    stages = [
        {"name": "quick", "timeout_s": 30, "settings": {"steps": 3}},
        {"name": "full", "timeout_s": 600},
    ]
    native = load_task(make_task(tmp_path / "n", minimal_spec(stages=stages), NATIVE_FILES))
    assert native.evaluation_argv("py", Path("p.py"), Path("out"), "full") == [
        "py",
        "evaluate.py",
        "p.py",
        "out",
        "--stage",
        "full",
    ]
    assert json.loads(native.evaluation_env("quick")[STAGE_SETTINGS_ENV]) == {"steps": 3}
    asi = load_task(
        make_task(
            tmp_path / "a",
            minimal_spec(adapter="asi_evolve", stages=stages),
            {"initial_program.py": "", "eval.sh": ""},
        )
    )
    assert asi.evaluation_argv("py", Path("p.py"), Path("out"), "full") == [
        "py",
        "-m",
        ADAPTER_MODULE,
        "asi_evolve",
        "eval.sh",
        "p.py",
        "out",
        "--stage",
        "full",
        "--stage-index",
        "2",
        "--timeout",
        "600",
    ]
    with pytest.raises(TaskError, match="no stage 'nope'"):
        asi.evaluation_argv("py", Path("p.py"), Path("out"), "nope")
    assert (
        time_budget(600) == 570 and time_budget(10) == 8 and time_budget(1) == 1 and time_budget(None) is None
    )


# ---- adapted tasks, run as the sandbox runs them: evaluator copied into a work dir, cwd = work dir ----

OPENEVOLVE_EVALUATOR = """
import importlib.util, time
from openevolve.evaluation_result import EvaluationResult

def _load(path):
    spec = importlib.util.spec_from_file_location("candidate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def evaluate_stage1(program_path):
    return {"combined_score": 0.25, "stage": 1}

def evaluate(program_path):
    value = _load(program_path).solve()
    if value == "raise":
        raise RuntimeError("candidate broke")
    if value == "sleep":
        time.sleep(30)
    if value == "object":
        return EvaluationResult(metrics={"combined_score": 0.75}, artifacts={"log": b"bytes ok"})
    if isinstance(value, dict):
        return value
    return {"combined_score": value, "runtime_s": 0.01, "validity": 1.0, "note": "plain text", "nan": float("nan")}
"""

ASI_EVAL_SH = """#!/bin/bash
# As in ASI-Evolve: cwd is steps/step_N; the experiment files sit two levels up.
set -e
EXPERIMENT_DIR="$(dirname "$(dirname "$(pwd)")")"
echo "evaluating $1 at stage $EVOFORGE_STAGE" > eval.log
python3 "$EXPERIMENT_DIR/asi_evaluator.py" code results.json
"""

ASI_EVALUATOR = """
import json, sys
code = open(sys.argv[1]).read()
if "exit" in code:
    sys.exit(4)
score = float(code.split("=")[1])
json.dump({"success": score >= 0, "eval_score": score, "sum_radii": 2 * score,
           "temp": {"error": "negative score" if score < 0 else None}}, open(sys.argv[2], "w"))
"""


def run_adapted(
    tmp_path: Path,
    adapter: str,
    task_files: dict[str, str],
    program: str,
    stage: str = "full",
    extra: dict | None = None,
) -> tuple[EvaluationReport, Path]:
    """Build the task, copy its evaluator and extra files into a fresh work dir, run the argv there."""
    stages = [{"name": "quick", "timeout_s": 3}, {"name": "full", "timeout_s": 3, **(extra or {})}]
    extra_files = [name for name in task_files if name not in ("evaluator.py", "eval.sh")]
    task = load_task(
        make_task(
            tmp_path / "task",
            minimal_spec(adapter=adapter, stages=stages, extra_files=extra_files),
            {"initial_program.py": program, **task_files},
        )
    )
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    for name in [task.evaluator, *task.extra_files]:
        shutil.copy(task.root / name, work / name)
    (work / "program.py").write_text(program)
    argv = task.evaluation_argv(sys.executable, Path("program.py"), Path("results"), stage)
    env = {"PATH": "/usr/bin:/bin", **task.evaluation_env(stage)}
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    raw = json.loads((work / "results" / "metrics.json").read_text())
    assert {"score", "valid", "metrics", "error", "feedback", "traceback", "artifacts"} <= set(raw)
    return EvaluationReport.model_validate(raw), work


def test_openevolve_task_runs_unchanged(tmp_path: Path) -> None:
    files = {"evaluator.py": OPENEVOLVE_EVALUATOR}
    report, _ = run_adapted(tmp_path, "openevolve", files, "def solve():\n    return 0.5\n")
    assert report.valid and report.score == 0.5 and report.error is None
    assert report.metrics == {"combined_score": 0.5, "runtime_s": 0.01, "validity": 1.0, "nan": None}
    assert report.artifacts == {"note": "plain text"}
    quick, _ = run_adapted(tmp_path, "openevolve", files, "def solve():\n    return 0.5\n", stage="quick")
    assert quick.valid and quick.score == 0.25 and quick.metrics["stage"] == 1.0
    result_object, _ = run_adapted(tmp_path, "openevolve", files, "def solve():\n    return 'object'\n")
    assert result_object.score == 0.75 and result_object.artifacts == {"log": "bytes ok"}
    chosen, _ = run_adapted(
        tmp_path,
        "openevolve",
        files,
        "def solve():\n    return 0.5\n",
        extra={"settings": {"function": "evaluate_stage1"}},
    )
    assert chosen.score == 0.25


@pytest.mark.parametrize(
    ("solve_returns", "error"),
    [
        ("{'combined_score': 0.0, 'error': 'overlap found'}", "overlap found"),
        ("{'sum_radii': 2.0}", "evaluate() returned no numeric 'combined_score' or 'score'"),
        ("{'combined_score': None}", "returned no numeric"),
        ("{'combined_score': 1.0, 'validity': 0.0}", "evaluate() marked the program invalid"),
        ("'raise'", "evaluate() raised RuntimeError: candidate broke"),
        ("'sleep'", "evaluate() did not finish within 1 s"),
    ],
)
def test_openevolve_failures_are_invalid(tmp_path: Path, solve_returns: str, error: str) -> None:
    report, _ = run_adapted(
        tmp_path,
        "openevolve",
        {"evaluator.py": OPENEVOLVE_EVALUATOR},
        f"def solve():\n    return {solve_returns}\n",
    )
    assert not report.valid and report.score is None
    assert error in report.error, report.error
    if solve_returns == "'raise'":
        assert "RuntimeError: candidate broke" in report.traceback


def test_asi_evolve_task_runs_unchanged(tmp_path: Path) -> None:
    files = {"eval.sh": ASI_EVAL_SH, "asi_evaluator.py": ASI_EVALUATOR}
    report, work = run_adapted(tmp_path, "asi_evolve", files, "score = 0.7\n")
    assert report.valid and report.score == 0.7
    assert report.metrics == {"success": True, "eval_score": 0.7, "sum_radii": 1.4}
    assert "at stage full" in report.artifacts["eval_log"]
    assert json.loads((work / "results" / "results.json").read_text())["eval_score"] == 0.7
    assert (work / "steps" / "step_full" / "code").read_text() == "score = 0.7\n"


@pytest.mark.parametrize(
    ("program", "error"),
    [("score = -1\n", "negative score"), ("exit\n", "eval.sh exited with status 4")],
)
def test_asi_evolve_failures_are_invalid(tmp_path: Path, program: str, error: str) -> None:
    report, _ = run_adapted(
        tmp_path, "asi_evolve", {"eval.sh": ASI_EVAL_SH, "asi_evaluator.py": ASI_EVALUATOR}, program
    )
    assert not report.valid and report.score is None
    assert error in report.error, report.error


def test_taskspec_is_frozen_and_strict(tmp_path: Path) -> None:
    task = load_task(make_task(tmp_path / "t", minimal_spec(), NATIVE_FILES))
    with pytest.raises(ValueError):
        task.name = "other"  # type: ignore[misc]
    assert isinstance(task, TaskSpec) and task.evaluator == "evaluate.py"
