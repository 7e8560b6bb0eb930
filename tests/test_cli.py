"""The command line as a user types it: evaluate --json, clear errors for bad input, status / best on a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evoforge.cli import app
from evoforge.memory.database import Database
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
