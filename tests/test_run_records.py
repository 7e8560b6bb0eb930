"""What a run's record says about it: it exists (and the run is resumable) from the run's first moment, its task
is found from any directory, and `evoforge status` tells a failed run or one waiting on a person from a running
one, also for a run started through the thread API."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from langgraph.types import Command
from typer.testing import CliRunner

from evoforge.cli import app
from evoforge.config import RunConfig
from evoforge.graph.builder import build_graph
from evoforge.graph.runner import run_status, thread_config
from evoforge.memory.database import Database
from evoforge.memory.nodes import NodeStore
from evoforge.runtime.services import clear_services
from evoforge.tasks.spec import TaskError

FIXTURES = Path(__file__).parent / "fixtures"
SLOW_TOY_SCRIPT = FIXTURES / "scripts" / "slow_toy.yaml"
EVOFORGE = [sys.executable, "-m", "evoforge.cli"]
pytestmark = pytest.mark.integration
runner = CliRunner()


def toy_task(where: Path, stage_cost: float = 0.0) -> Path:
    shutil.copytree(FIXTURES / "tasks" / "toy", where)
    spec = yaml.safe_load((where / "task.yaml").read_text())
    spec["stages"][0]["cost"] = stage_cost
    (where / "task.yaml").write_text(yaml.safe_dump(spec))
    return where


def run_config_file(tmp_path: Path, database: Database, **settings: object) -> Path:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "llm": {"provider": "scripted", "script": str(SLOW_TOY_SCRIPT)},
        "database_url": database.url, "state_dir": str(tmp_path / "state"), **settings,
    }))
    return config


@pytest.fixture
def cli_environment(database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands that take no --config (status, resume, replay) find the test's database and state."""
    monkeypatch.setenv("EVOFORGE_DATABASE_URL", database.url)
    monkeypatch.setenv("EVOFORGE_STATE_DIR", str(tmp_path / "state"))


@pytest.mark.slow
def test_a_run_is_resumable_from_the_moment_it_names_its_id(database: Database, tmp_path: Path) -> None:
    task = toy_task(tmp_path / "toy")
    config = run_config_file(tmp_path, database)
    env = {**os.environ, "EVOFORGE_DATABASE_URL": database.url, "EVOFORGE_STATE_DIR": str(tmp_path / "state")}
    started = subprocess.Popen([*EVOFORGE, "run", str(task), "--rounds", "1", "--config", str(config)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        assert started.stderr is not None
        for line in started.stderr:
            seen.append(line)
            if announced := re.search(r"continue it with: evoforge resume (\S+)$", line):
                started.kill()  # at once: before the run's first step has done anything
                break
        started.wait(timeout=60)
    finally:
        if started.poll() is None:
            started.kill()
    assert announced, f"the run never said how to resume it:\n{''.join(seen)}"
    run_id = announced[1]
    store = NodeStore(database)
    assert store.get_run(run_id) is not None

    resumed = subprocess.run([*EVOFORGE, "resume", run_id], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [node.round for node in store.list_nodes(run_id)] == [0, 1]
    record = store.get_run(run_id)
    assert record is not None and (record.status, record.stop_reason) == ("finished", "1 round done")


@pytest.mark.slow
def test_a_relative_task_path_is_recorded_so_any_directory_resumes_and_replays_the_run(
        database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_environment: None) -> None:
    tasks = tmp_path / "tasks"
    task = toy_task(tasks / "my_task")
    config = run_config_file(tmp_path, database)
    monkeypatch.chdir(tasks)
    started = runner.invoke(app, ["run", "my_task", "--rounds", "1", "--config", str(config), "--run-id", "rel"])
    assert started.exit_code == 0, started.output
    assert "run rel: 1 round done" in started.output
    record = NodeStore(database).get_run("rel")
    assert record is not None and record.config["task"] == str(task.resolve())

    monkeypatch.chdir(tmp_path)
    resumed = runner.invoke(app, ["resume", "rel", "--rounds", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert "run rel: 2 rounds done" in resumed.output
    replayed = runner.invoke(app, ["replay", "rel", "--round", "1", "--from-node", "analyze_result",
                                   "--fork-id", "rel-fork"])
    assert replayed.exit_code == 0, replayed.output
    assert "fork rel-fork of run rel" in replayed.output

    task.rename(tmp_path / "moved")
    missing = runner.invoke(app, ["resume", "rel", "--rounds", "3"])
    assert missing.exit_code == 2 and isinstance(missing.exception, SystemExit), missing.output
    assert f"error: task {str(task.resolve())!r} is neither a directory" in missing.output
    assert "Traceback" not in missing.output


@pytest.mark.slow
def test_status_tells_a_thread_api_run_waiting_or_failed_from_a_running_one(
        database: Database, tmp_path: Path, cli_environment: None) -> None:
    task = toy_task(tmp_path / "toy", stage_cost=1.0)
    # as `langgraph dev` runs it: the thread id is the run id, the settings are the context
    context = RunConfig(task=str(task), rounds=1, llm={"provider": "scripted", "script": str(SLOW_TOY_SCRIPT)},
                        database_url=database.url, state_dir=tmp_path / "state", approval_cost_threshold=0.5)
    graph = build_graph(checkpointer=database.checkpointer())
    thread = thread_config("api-run")
    list(graph.stream({}, thread, context=context, stream_mode="updates", durability="sync"))
    assert graph.get_state(thread).interrupts, "round 1 should wait for approval of its costly stage"
    store = NodeStore(database)

    def status_now() -> tuple[str, str | None]:
        record = store.get_run("api-run")
        assert record is not None
        return run_status(record, database)

    assert status_now() == ("waiting for approval", "lane 0")
    listing = runner.invoke(app, ["status"])
    assert listing.exit_code == 0 and re.search(r"api-run .* waiting for approval", listing.output), listing.output

    # the task directory goes away while the run waits; the server's next step raises
    shutil.rmtree(task)
    clear_services()  # as a new server process would: nothing loaded before
    with pytest.raises(TaskError):
        list(graph.stream(Command(resume={"action": "approve"}), thread, context=context, stream_mode="updates",
                          durability="sync"))
    state, reason = status_now()
    assert state == "failed" and reason is not None
    assert reason.startswith("lane 0, step run_evaluation:") and str(task) in reason
    one = runner.invoke(app, ["status", "api-run"])
    assert one.exit_code == 0 and "api-run — task toy, failed (lane 0, step run_evaluation:" in one.output
