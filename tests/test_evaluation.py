"""run_stage on a tiny task of our own, one test per status, through the real bubblewrap sandbox."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from evoforge.config import RunConfig
from evoforge.graph.runner import resume_run, start_run
from evoforge.memory.database import Database
from evoforge.runtime import services
from evoforge.sandbox.local import LocalSandbox
from evoforge.tasks.spec import TaskError, TaskSpec, load_task
from evoforge.tools.engineer_tools import read_log_tail, read_metrics
from evoforge.tools.evaluation import StageResult, run_stage, stage_failed

pytestmark = pytest.mark.integration

TASK_YAML = """
name: tiny
description: return a number; the evaluator scores it (test fixture)
extra_files: [data.txt]
score: {direction: maximize}
stages:
  - name: quick
    timeout_s: 10
    threshold: 0.5
    resources: {memory_mb: 300, max_processes: 16}
    settings: {factor: 1.0}
"""

# The evaluator follows the task contract; `evaluator` in the stage settings makes it misbehave on purpose.
EVALUATE_PY = """
import argparse, importlib.util, json, os, sys, traceback
parser = argparse.ArgumentParser()
parser.add_argument("program")
parser.add_argument("results")
parser.add_argument("--stage", required=True)
args = parser.parse_args()
settings = json.loads(os.environ["EVOFORGE_STAGE_SETTINGS"])
out = os.path.join(args.results, "metrics.json")

def write(report):
    with open(out, "w") as f:
        json.dump(report, f)

behaviour = settings.get("evaluator", "honest")
if behaviour == "silent":
    sys.exit(0)
if behaviour == "crash":
    raise KeyError("the evaluator's own bug")
if behaviour == "own_failure":
    write({"valid": False, "error": "evaluator error: no GPU", "evaluator_traceback": "Traceback ..."})
    sys.exit(0)
if behaviour in ("nan", "huge", "coerced", "huge_string"):
    write({"nan": {"valid": True, "score": float("nan")}, "huge": {"valid": True, "score": 1e300},
           "coerced": {"score": "2", "valid": "yes"}, "huge_string": {"score": "1e300"}}[behaviour])
    sys.exit(0)
if behaviour == "odd_metrics":
    write({"valid": True, "score": 1.0, "metrics": {"loss": float("nan"), "curve": [1.0, float("inf")]}})
    sys.exit(0)
if behaviour == "garbage":
    open(out, "w").write("{not json")
    sys.exit(0)
spec = importlib.util.spec_from_file_location("candidate", args.program)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)  # an error at import escapes: its traceback goes to stderr
data = open("data.txt").read().strip()
try:
    value = module.solve(settings["factor"])
except Exception as exc:
    write({"valid": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    sys.exit(0)
print("value", value)
if value < 0:
    write({"valid": False, "score": value, "error": "negative values are not allowed"})
else:
    write({"valid": True, "score": value, "feedback": "fine",
           "metrics": {"value": value, "stage": args.stage, "settings": settings, "data": data}})
"""

GOOD = "def solve(factor):\n    return 1.0 * factor\n"


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> TaskSpec:
    root = tmp_path_factory.mktemp("tiny_task")
    (root / "task.yaml").write_text(TASK_YAML)
    (root / "evaluate.py").write_text(EVALUATE_PY)
    (root / "initial_program.py").write_text(GOOD)
    (root / "data.txt").write_text("extra file reached the work dir\n")
    return load_task(root)


@pytest.fixture(scope="module")
def sandbox() -> LocalSandbox:
    assert shutil.which("bwrap"), "bubblewrap is missing: apt-get install -y bubblewrap"
    return LocalSandbox("bubblewrap")


def evaluate(task: TaskSpec, sandbox: LocalSandbox, tmp_path: Path, code: str, **kwargs) -> StageResult:
    stage = task.stage("quick")
    if "timeout_s" in kwargs:
        stage = stage.model_copy(update={"timeout_s": kwargs.pop("timeout_s")})
    outcome = run_stage(task, stage, code, tmp_path / "node" / "quick", sandbox, **kwargs)
    json.dumps(outcome, allow_nan=False)  # always storable as JSON
    return outcome


def test_ok_reaches_the_evaluator_with_settings_and_files(task, sandbox, tmp_path: Path) -> None:
    outcome = evaluate(task, sandbox, tmp_path, GOOD, settings_override={"factor": 3})
    assert outcome["status"] == "ok" and not stage_failed(outcome) and outcome["error"] is None
    assert outcome["score"] == 3.0 and outcome["valid"] and outcome["feedback"] == "fine"
    assert outcome["metrics"] == {
        "value": 3.0,
        "stage": "quick",
        "settings": {"factor": 3},
        "data": "extra file reached the work dir",
    }
    stage_dir = Path(outcome["results_dir"])
    assert (stage_dir / "program.py").read_text() == GOOD and (
        stage_dir / "stdout.txt"
    ).read_text() == "value 3.0\n"
    assert outcome["backend"] == "local/bubblewrap" and outcome["wall_s"] > 0
    assert (
        read_log_tail.invoke({"results_dir": outcome["results_dir"], "stream": "stdout", "lines": 5})
        == "value 3.0"
    )
    assert json.loads(read_metrics.invoke({"results_dir": outcome["results_dir"]}))["score"] == 3.0


def test_below_threshold_uses_the_stage_settings(task, sandbox, tmp_path: Path) -> None:
    outcome = evaluate(task, sandbox, tmp_path, GOOD, settings_override={"factor": 0.2})
    assert outcome["status"] == "below_threshold" and not stage_failed(outcome) and outcome["score"] == 0.2
    assert "score 0.2 is not at least the stage threshold 0.5" in outcome["error"]


def test_invalid(task, sandbox, tmp_path: Path) -> None:
    outcome = evaluate(task, sandbox, tmp_path, "def solve(factor):\n    return -1.0\n")
    assert outcome["status"] == "invalid" and stage_failed(outcome) and not outcome["valid"]
    assert "negative values are not allowed" in outcome["error"]


def test_runtime_error_reported_by_the_evaluator(task, sandbox, tmp_path: Path) -> None:
    outcome = evaluate(task, sandbox, tmp_path, "def solve(factor):\n    return factor / 0\n")
    assert outcome["status"] == "runtime_error"
    assert "ZeroDivisionError" in outcome["traceback"] and "ZeroDivisionError" in outcome["error"]


def test_runtime_error_from_an_uncaught_traceback(task, sandbox, tmp_path: Path) -> None:
    outcome = evaluate(task, sandbox, tmp_path, "raise RuntimeError('boom at import')\n")
    assert outcome["status"] == "runtime_error"
    assert outcome["traceback"].startswith("Traceback") and "boom at import" in outcome["traceback"]
    assert "exited with status 1" in outcome["error"] and "metrics.json was not written" in outcome["error"]


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("silent", "results/metrics.json was not written; the evaluator process exited normally"),
        ("crash", "results/metrics.json was not written; the evaluator process exited with status 1 "
                  '(KeyError: "the evaluator\'s own bug")'),
        ("own_failure", "Stage 'quick': the evaluator failed: evaluator error: no GPU."),
        ("nan", "metrics.json breaks the contract: score: expected a finite number of magnitude at most 1e+150, "
                "got nan"),
        ("huge", "score: expected a finite number of magnitude at most 1e+150, got 1e+300"),
        ("coerced", "score: expected a JSON number, got '2'; valid: expected true or false, got 'yes'"),
        ("huge_string", "score: expected a JSON number, got '1e300'"),
        ("garbage", "results/metrics.json is not valid JSON"),
    ],
)
def test_evaluator_error(task, sandbox, tmp_path: Path, behaviour: str, message: str) -> None:
    outcome = evaluate(task, sandbox, tmp_path, GOOD, settings_override={"evaluator": behaviour})
    assert outcome["status"] == "evaluator_error" and outcome["traceback"] is None
    assert message in outcome["error"]


def test_timeout(task, sandbox, tmp_path: Path) -> None:
    outcome = evaluate(
        task, sandbox, tmp_path, "def solve(factor):\n    while True:\n        pass\n", timeout_s=1.0
    )
    assert outcome["status"] == "timeout" and stage_failed(outcome)
    assert "wall-clock limit" in outcome["error"] and outcome["wall_s"] < 2.0


def test_resource_limit_memory(task, sandbox, tmp_path: Path) -> None:
    outcome = evaluate(
        task, sandbox, tmp_path, "def solve(factor):\n    return len(bytearray(4 * 1024**3))\n"
    )
    assert outcome["status"] == "resource_limit" and "MemoryError" in outcome["traceback"]
    assert "ran out of memory (MemoryError under the 300 MB limit)" in outcome["error"]


def test_resource_limit_output_flood(task, sandbox, tmp_path: Path) -> None:
    code = "def solve(factor):\n    while True:\n        print('z' * 10000)\n"
    outcome = evaluate(task, sandbox, tmp_path, code, max_output_bytes=10_000)
    assert outcome["status"] == "resource_limit" and "flooding its output" in outcome["error"]
    assert len((Path(outcome["results_dir"]) / "stdout.txt").read_text()) < 10_200


def test_planted_symlinks_are_not_followed(task, sandbox, tmp_path: Path) -> None:
    target = tmp_path / "host_file_the_job_aims_at"
    lure = tmp_path / "lure.json"
    lure.write_text('{"valid": true, "score": 99}')
    code = (
        f"import os\nos.symlink({str(target)!r}, 'stdout.txt')\n"
        f"os.symlink({str(lure)!r}, 'results/metrics.json')\nos._exit(0)\n"
    )
    outcome = evaluate(task, sandbox, tmp_path, code)
    assert not target.exists() and not (Path(outcome["results_dir"]) / "stdout.txt").is_symlink()
    assert outcome["status"] == "evaluator_error" and outcome["score"] is None
    assert "results/metrics.json could not be read" in outcome["error"]


def test_a_stage_result_is_json_safe(task, sandbox, tmp_path: Path) -> None:
    outcome = evaluate(task, sandbox, tmp_path, GOOD, settings_override={"evaluator": "odd_metrics"})
    data = json.loads(json.dumps(outcome, allow_nan=False))
    assert data["metrics"] == {"loss": None, "curve": [1.0, None]}
    assert data["status"] == "ok" and data["results_dir"] == outcome["results_dir"]


def test_engineer_tools_answer_problems_with_text(tmp_path: Path) -> None:
    assert "between 1 and 500" in read_log_tail.invoke(
        {"results_dir": str(tmp_path), "stream": "stdout", "lines": 0}
    )
    assert "no stderr.txt" in read_log_tail.invoke({"results_dir": str(tmp_path), "stream": "stderr"})
    assert "no metrics.json" in json.loads(read_metrics.invoke({"results_dir": str(tmp_path)}))["error"]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "metrics.json").symlink_to("/etc/hostname")
    assert (
        "cannot read" in json.loads(read_metrics.invoke({"results_dir": str(tmp_path / "results")}))["error"]
    )


def test_an_evaluator_failing_on_the_seed_stops_the_run(task, database: Database, tmp_path: Path) -> None:
    """No round is spent on a candidate the evaluator cannot judge; once the evaluator is fixed, the resumed run
    evaluates the seed (recorded only now) and goes on."""
    root = tmp_path / "tiny_task"
    shutil.copytree(task.root, root)
    spec = yaml.safe_load(TASK_YAML)
    spec["stages"][0]["settings"]["evaluator"] = "crash"
    (root / "task.yaml").write_text(yaml.safe_dump(spec))
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump({"researcher": ["NAME: twice\nMOTIVATION: more\n```python\n"
                                                     "def solve(factor):\n    return 2.0 * factor\n```"],
                                      "analyzer": {"cycle": True, "replies": ["RESULT: twice as much."]}}))
    config = RunConfig(task=str(root), rounds=1, database_url=database.url, state_dir=tmp_path / "state",
                       llm={"provider": "scripted", "script": str(script)},
                       sampling={"policy": "greedy", "inspirations": 0})
    with pytest.raises(TaskError, match=r"the seed program of task 'tiny' could not be evaluated: Stage 'quick': "
                                        r"results/metrics.json was not written; the evaluator process exited with "
                                        r"status 1 \(KeyError: .*\)\. Fix the evaluator \(.*evaluate.py\), try it with "
                                        r"`evoforge evaluate .*tiny_task .*initial_program.py --stage quick`, then "
                                        r"continue with `evoforge resume broken`"):
        start_run(config, "broken")
    nodes = services.get_services(config).nodes
    assert nodes.count_nodes("broken") == 0
    assert services.get_services(config).chat_model("researcher").received == [], "no candidate was asked for"

    (root / "task.yaml").write_text(TASK_YAML)
    services.clear_services()  # the task as loaded before the fix
    outcome = resume_run("broken", base=config)
    assert outcome.state["stop_reason"] == "1 round done"
    recorded = services.get_services(config).nodes.list_nodes("broken")
    assert [(node.round, node.status, node.score) for node in recorded] == [(0, "evaluated", 1.0),
                                                                              (1, "evaluated", 2.0)]
