"""`kill -9` of a run in the middle of an evaluation, then `evoforge resume`: no node lost or duplicated, the seed
not evaluated again, no evaluation process left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from processes import processes_mentioning

from evoforge.memory.database import Database
from evoforge.memory.nodes import NodeStore

FIXTURES = Path(__file__).parent / "fixtures"
EVOFORGE = [sys.executable, "-m", "evoforge.cli"]
pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROUNDS = 6


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_kill_mid_evaluation_then_resume(database: Database, tmp_path: Path) -> None:
    task_dir = tmp_path / "slow_toy"
    shutil.copytree(FIXTURES / "tasks" / "toy", task_dir)
    spec = yaml.safe_load((task_dir / "task.yaml").read_text())
    spec["stages"][0]["settings"]["delay_s"] = 1.5
    (task_dir / "task.yaml").write_text(yaml.safe_dump(spec))
    state_dir = tmp_path / "state"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "llm": {"provider": "scripted", "script": str(FIXTURES / "scripts" / "slow_toy.yaml")},
        "database_url": database.url, "state_dir": str(state_dir), "sampling": {"policy": "greedy"},
        "cognition": {"top_k": 2},
    }))
    env = {**os.environ, "EVOFORGE_DATABASE_URL": database.url, "EVOFORGE_STATE_DIR": str(state_dir)}
    run_id = "killme"
    store = NodeStore(database)
    first = subprocess.Popen([*EVOFORGE, "run", str(task_dir), "--rounds", str(ROUNDS), "--config", str(config),
                              "--run-id", run_id], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: store.count_nodes(run_id) >= 3, 240, "two rounds to be recorded")
        in_flight = state_dir / "runs" / run_id / "nodes" / f"{run_id}-r0003-l0" / "quick-try0"
        wait_for(lambda: (in_flight / "program.py").exists(), 60, "round 3's evaluation to start")
        time.sleep(0.5)  # inside the evaluator's 1.5 s wait
        assert not (in_flight / "results" / "metrics.json").exists(), "the kill must land mid-evaluation"
        seed_program = state_dir / "runs" / run_id / "nodes" / f"{run_id}-r0000-l0" / "quick" / "program.py"
        seed_inode = seed_program.stat().st_ino
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    wait_for(lambda: not processes_mentioning(str(state_dir)), 10, "the killed run's evaluation to die with it")
    recorded_before = store.count_nodes(run_id)
    assert recorded_before == 3

    resumed = subprocess.run([*EVOFORGE, "resume", run_id], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "best score" in resumed.stderr

    nodes = store.list_nodes(run_id)
    assert [n.id for n in nodes] == [f"{run_id}-r{r:04d}-l0" for r in range(ROUNDS + 1)]
    assert seed_program.stat().st_ino == seed_inode, "the seed was evaluated again"
    assert all(n.status in ("evaluated", "duplicate") for n in nodes), [(n.id, n.status, n.error) for n in nodes]
    assert store.get_run(run_id).status == "finished"
    assert not processes_mentioning(str(state_dir))
