"""The circle_packing evaluator, run exactly as the sandbox runs it: `python evaluate.py PROGRAM RESULTS_DIR --stage S`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from evoforge.tasks.spec import BUILTIN_TASKS_DIR, EvaluationReport, load_task

TASK_DIR = BUILTIN_TASKS_DIR / "circle_packing"
SEED_SCORE_BAND = (0.955, 0.965)  # measured: 0.9605568049537079

# A 5 x 5 grid of radius-0.1 circles plus one circle in the gap at (0.2, 0.2): sum = 2.5 + (sqrt(2) - 1) / 10.
GRID_PACKING = """
import numpy as np

def layout():
    xs = 0.1 + 0.2 * np.arange(5)
    centers = np.array([[x, y] for y in xs for x in xs] + [[0.2, 0.2]])
    radii = np.array([0.1] * 25 + [(np.sqrt(2) - 1) / 10 - 1e-12])
    return centers, radii
"""
GRID_SUM = 2.5 + (2**0.5 - 1) / 10


def evaluate(
    tmp_path: Path, program: str, stage: str = "quick", settings: dict | None = None
) -> EvaluationReport:
    """Write `program`, run the evaluator in a work dir like the sandbox does, return the validated metrics.json."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "evaluate.py").write_text((TASK_DIR / "evaluate.py").read_text())
    (work / "program.py").write_text(program)
    results = work / f"results_{stage}"
    task = load_task(TASK_DIR)
    env = {**os.environ, **task.evaluation_env(stage)}
    if settings is not None:
        env["EVOFORGE_STAGE_SETTINGS"] = json.dumps(settings)
    argv = task.evaluation_argv(sys.executable, Path("program.py"), results, stage)
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return EvaluationReport.model_validate_json((results / "metrics.json").read_text())


def packing_program(body: str, reported_sum: str = "float(np.sum(radii))") -> str:
    """A candidate whose run_packing() returns the grid packing after `body` edits centers/radii."""
    lines = "".join(f"    {line}\n" for line in body.splitlines())
    return (
        GRID_PACKING
        + "\n\ndef run_packing():\n    centers, radii = layout()\n"
        + lines
        + f"    return centers, radii, {reported_sum}\n"
    )


def test_seed_program_scores_its_measured_value(tmp_path: Path) -> None:
    report = evaluate(tmp_path, (TASK_DIR / "initial_program.py").read_text())
    assert report.valid and report.error is None
    assert SEED_SCORE_BAND[0] <= report.score <= SEED_SCORE_BAND[1]
    assert report.metrics["valid_tol"] and report.metrics["valid_strict"]
    assert report.metrics["sum_radii"] == report.score and report.metrics["n_circles"] == 26
    assert report.metrics["max_overlap"] == 0.0 and report.metrics["max_escape"] == 0.0
    assert "valid packing" in report.feedback


def test_full_stage_repeats_and_reports_the_layout(tmp_path: Path) -> None:
    report = evaluate(tmp_path, (TASK_DIR / "initial_program.py").read_text(), stage="full")
    assert report.valid and SEED_SCORE_BAND[0] <= report.score <= SEED_SCORE_BAND[1]
    assert report.metrics["repeats"] == 2 and report.metrics["sum_radii_spread"] == 0.0
    assert len(report.artifacts["radii"]) == 26 and len(report.artifacts["centers"]) == 26
    picture = ElementTree.fromstring((tmp_path / "work" / "results_full" / "packing.svg").read_text())
    assert len(picture.findall("{http://www.w3.org/2000/svg}circle")) == 26


def test_better_packing_scores_higher(tmp_path: Path) -> None:
    report = evaluate(tmp_path, packing_program("pass"))
    assert report.valid
    assert report.score == pytest.approx(GRID_SUM, abs=1e-9)
    assert report.score > SEED_SCORE_BAND[1]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("radii[3] = float('nan')", "NaN or infinite values in circles [3]"),
        ("centers = centers[:25]", "centers must have shape (26, 2), got (25, 2)"),
        ("radii[7] = -0.01", "negative radii in circles [7]"),
        (
            "centers[12, 0] += 0.01",
            "circles 12 and 13 overlap by 0.01 (r12 + r13 = 0.2000, centre distance 0.1900)",
        ),
        (
            "centers[4, 0] = 0.95",
            "circle 4 (centre (0.9500, 0.1000), r=0.1000) crosses the right edge by 0.05",
        ),
        ("radii[25] += 1e-3", "4 overlapping pairs in all"),
    ],
)
def test_invalid_packings_are_rejected_with_a_clear_message(tmp_path: Path, body: str, message: str) -> None:
    report = evaluate(tmp_path, packing_program(body))
    assert not report.valid and report.score == 0.0 and report.error
    assert message in report.feedback, report.feedback
    assert report.metrics["valid_tol"] is False and report.metrics["valid_strict"] is False


def test_overlap_within_tolerance_is_valid_but_not_strictly(tmp_path: Path) -> None:
    report = evaluate(tmp_path, packing_program("radii[0] += 5e-7"))
    assert report.valid and report.metrics["valid_tol"]
    assert not report.metrics["valid_strict"]
    assert report.metrics["max_overlap"] == pytest.approx(5e-7, rel=1e-3)
    assert "tolerance" in report.feedback


def test_a_lying_sum_is_replaced_by_the_recomputed_one(tmp_path: Path) -> None:
    report = evaluate(tmp_path, packing_program("pass", reported_sum="100.0"))
    assert report.valid and report.score == pytest.approx(GRID_SUM, abs=1e-9)
    assert report.metrics["sum_mismatch"] is True and report.metrics["reported_sum"] == 100.0
    assert "disagrees with the radii" in report.feedback


def test_a_raising_program_reports_its_traceback(tmp_path: Path) -> None:
    report = evaluate(tmp_path, packing_program("raise KeyError('lost')"))
    assert not report.valid
    assert report.error == "run_packing() raised KeyError: 'lost'"
    assert "KeyError: 'lost'" in report.traceback and "program.py" in report.traceback


@pytest.mark.parametrize(
    ("program", "message"),
    [
        ("def run_packing(:\n    pass\n", "importing the program raised SyntaxError"),
        ("import numpy as np\n", "the program defines no callable run_packing()"),
        (
            "def run_packing():\n    return 3\n",
            "run_packing() must return (centers, radii, sum_radii); got int",
        ),
        ("import os\ndef run_packing():\n    os._exit(3)\n", "exited (status 3) without returning a packing"),
    ],
)
def test_broken_programs_are_reported(tmp_path: Path, program: str, message: str) -> None:
    report = evaluate(tmp_path, program)
    assert not report.valid and report.score == 0.0
    assert message in report.error, report.error


def test_a_slow_program_is_killed_at_the_stage_setting(tmp_path: Path) -> None:
    report = evaluate(
        tmp_path, "import time\ndef run_packing():\n    time.sleep(30)\n", settings={"program_timeout_s": 1}
    )
    assert not report.valid
    assert report.error == "the program did not finish within 1 s (killed)"
    assert report.metrics["eval_seconds"] < 10


def test_unknown_stage_setting_is_named(tmp_path: Path) -> None:
    report = evaluate(tmp_path, packing_program("pass"), settings={"program_timeout": 5})
    assert not report.valid
    assert "unknown stage setting(s) ['program_timeout']" in report.error


def test_a_program_cannot_write_its_own_metrics(tmp_path: Path) -> None:
    # The child learns RESULTS_DIR the only way it can (its parent's command line) and writes a fake report there.
    attack = """
import json, os
from pathlib import Path
FAKE = json.dumps({"score": 100.0, "valid": True, "metrics": {}})
Path("metrics.json").write_text(FAKE)
for arg in Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\\0"):
    if arg and Path(arg.decode()).is_dir():
        (Path(arg.decode()) / "metrics.json").write_text(FAKE)
        (Path(arg.decode()) / "attack_reached_results").write_text("yes")
"""
    report = evaluate(tmp_path, packing_program(attack))
    assert (tmp_path / "work" / "results_quick" / "attack_reached_results").is_file()
    assert report.valid and report.score == pytest.approx(GRID_SUM, abs=1e-9)
    assert not (tmp_path / "work" / "metrics.json").exists(), "the child must not run in the work dir"


@pytest.mark.integration
@pytest.mark.parametrize(("program", "status", "message"), [
    # the candidate's output goes through the sandbox's bounded capture, whose output limit names itself
    ("import sys\ndef run_packing():\n    while True:\n        sys.stdout.write('A' * 65535 + '\\n')\n",
     "resource_limit", "was killed for flooding its output (more than 1048576 bytes on one stream)"),
    # the evaluator's error says what raised; the stage's sentence does not say it again
    ("def run_packing(:\n    pass\n", "runtime_error", "the candidate failed: importing the program raised SyntaxError"),
])
def test_a_hostile_candidate_is_named_by_the_limit_it_hit(tmp_path: Path, program: str, status: str,
                                                          message: str) -> None:
    from evoforge.sandbox.local import LocalSandbox
    from evoforge.tools.evaluation import run_stage

    task = load_task(TASK_DIR)
    stage = task.stages[0]
    outcome = run_stage(task, stage, program, tmp_path / "work", LocalSandbox(isolation="bubblewrap"),
                        max_output_bytes=64 * 1024)
    assert outcome["status"] == status and message in outcome["error"], outcome["error"]
    assert "raised importing" not in outcome["error"]
