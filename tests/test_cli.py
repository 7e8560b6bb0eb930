"""The command line as a user types it: evaluate --json, clear errors for bad input, status / best on a run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evoforge.cli import app
from evoforge.config import RunConfig
from evoforge.memory.database import Database
from evoforge.memory.nodes import NodeStore
from evoforge.tasks.spec import load_task

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()


@pytest.mark.integration
def test_evaluate_json_prints_the_seed_score_last() -> None:
    seed = load_task("circle_packing").program_path
    done = subprocess.run([sys.executable, "-m", "evoforge.cli", "evaluate", "circle_packing", str(seed), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["valid"] is True and result["score"] == pytest.approx(0.9606, abs=1e-3)
    assert set(result) >= {"score", "valid", "metrics", "error"}
    assert result["metrics"]["valid_strict"] is True


def test_invalid_config_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling: {policy: best}\n")
    result = runner.invoke(app, ["run", "circle_packing", "--config", str(bad)])
    assert result.exit_code == 2
    assert "sampling.policy" in result.output


def test_unknown_task_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nowhere"), str(tmp_path / "p.py")])
    assert result.exit_code == 2 and "neither a directory with a task.yaml nor a built-in task" in result.output


def test_missing_program_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "circle_packing", str(tmp_path / "missing.py")])
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.integration
def test_status_and_best_after_a_scripted_run(database: Database, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({
        "llm": {"provider": "scripted", "script": str(FIXTURES / "scripts" / "slow_toy.yaml")},
        "database_url": database.url, "state_dir": str(tmp_path / "state"),
    }))
    monkeypatch.setenv("EVOFORGE_DATABASE_URL", database.url)
    monkeypatch.setenv("EVOFORGE_STATE_DIR", str(tmp_path / "state"))
    result = runner.invoke(app, ["run", str(FIXTURES / "tasks" / "toy"), "--rounds", "2", "--config", str(config),
                                 "--run-id", "cli-run"])
    assert result.exit_code == 0, result.output
    assert "best score: 3.0" in result.output and "best program:" in result.output
    best_program = tmp_path / "state" / "runs" / "cli-run" / "best_program.py"
    assert "return 3.0" in best_program.read_text()

    listing = runner.invoke(app, ["status"])
    assert listing.exit_code == 0 and "cli-run" in listing.output
    one = runner.invoke(app, ["status", "cli-run"])
    assert one.exit_code == 0 and "finished" in one.output and "v3" in one.output
    out = tmp_path / "best.py"
    best = runner.invoke(app, ["best", "cli-run", "--out", str(out)])
    assert best.exit_code == 0 and "return 3.0" in out.read_text()
    missing = runner.invoke(app, ["resume", "no-such-run"])
    assert missing.exit_code == 2 and "no run 'no-such-run'" in missing.output


def test_bad_input_is_one_line_not_a_traceback(database: Database, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOFORGE_DATABASE_URL", database.url)
    monkeypatch.setenv("EVOFORGE_STATE_DIR", str(tmp_path / "state"))
    toy = FIXTURES / "tasks" / "toy"
    config = RunConfig(task=str(toy), database_url=database.url, state_dir=tmp_path / "state")
    NodeStore(database).create_run("some-run", "toy", str(toy), config.model_dump(mode="json"))
    latin1 = tmp_path / "latin1.py"
    latin1.write_bytes("def solve():\n    return 1.0  # café\n".encode("latin-1"))
    seed = str(toy / "initial_program.py")
    expected = {
        ("resume", "some-run", "--rounds", "-1"): "error: run 'some-run': rounds: Input should be greater than or "
                                                   "equal to 0 (got -1)",
        ("evaluate", str(toy), seed, "--stage", "nosuch"): "error: task 'toy' has no stage 'nosuch'",
        ("evaluate", str(toy), str(latin1)): f"error: program {latin1} is not UTF-8 text (invalid continuation byte",
    }
    for args, message in expected.items():
        result = runner.invoke(app, list(args))
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
    assert NodeStore(database).get_run("some-run").config["rounds"] == config.rounds, "a refused value was stored"


def test_an_error_from_any_command_becomes_one_line() -> None:
    """The shared handler: what a user's input raises, in any command, is described in one line."""
    from pydantic import ValidationError

    from evoforge.commands.errors import describe

    with pytest.raises(ValidationError) as invalid:
        RunConfig(rounds=-1, workers=0)
    assert describe(invalid.value) == ("RunConfig: rounds: Input should be greater than or equal to 0 (got -1); "
                                       "workers: Input should be greater than or equal to 1 (got 0)")
    assert describe(KeyError("lane")) == "KeyError: 'lane'"
    assert describe(FileNotFoundError(2, "No such file or directory", "x.yaml")) == (
        "[Errno 2] No such file or directory: 'x.yaml'")
    with pytest.raises(UnicodeDecodeError) as undecodable:
        b"\xff".decode()
    assert describe(undecodable.value) == "a file is not utf-8 text (invalid start byte at byte 0)"


def evoforge_evaluate_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("evoforge-evaluate-*"))


@pytest.mark.integration
def test_evaluate_exits_nonzero_only_when_the_evaluator_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    task = tmp_path / "toy"
    shutil.copytree(FIXTURES / "tasks" / "toy", task)
    nan_program = tmp_path / "nan.py"
    nan_program.write_text("def solve():\n    return float('nan')\n")

    scored_invalid = runner.invoke(app, ["evaluate", str(task), str(nan_program), "--json"])
    assert scored_invalid.exit_code == 0, scored_invalid.output
    result = json.loads(scored_invalid.stdout.strip().splitlines()[-1])
    assert (result["status"], result["valid"], result["results_dir"]) == ("invalid", False, None)
    assert not evoforge_evaluate_dirs(scratch), "the evaluation's work dir was left behind"

    evaluator = task / "evaluate.py"
    for broken, what in [("import sys\nsys.exit(0)\n", "exited normally"), ("raise SystemExit(3)\n", "exited with status 3")]:
        evaluator.write_text(broken)  # writes no metrics.json
        failed = runner.invoke(app, ["evaluate", str(task), str(task / "initial_program.py")])
        assert failed.exit_code == 1, failed.output
        assert "error: the evaluator of task 'toy' failed, so the program has no result" in failed.output
        assert "metrics.json" in failed.output and what in failed.output
        assert not evoforge_evaluate_dirs(scratch)

    kept = tmp_path / "kept"
    runner.invoke(app, ["evaluate", str(task), str(task / "initial_program.py"), "--keep", str(kept)])
    assert (kept / "quick" / "program.py").is_file() and not evoforge_evaluate_dirs(scratch)


def test_counts_are_worded_in_the_right_number() -> None:
    from evoforge.ui.wording import counted

    assert [counted(n, "round") for n in (0, 1, 2)] == ["0 rounds", "1 round", "2 rounds"]
    assert counted(1, "call") == "1 call" and counted(3, "query", "queries") == "3 queries"
