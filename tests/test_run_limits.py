"""Evaluations that hang (leaving children) or eat memory are stopped by the framework's limits, recorded as
failed nodes with a clear error, and the run goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
from processes import processes_mentioning

from evoforge.config import RunConfig
from evoforge.graph.runner import start_run
from evoforge.memory.database import Database
from evoforge.runtime import services

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.integration


def test_hanging_and_hungry_candidates_become_failed_nodes(database: Database, tmp_path: Path) -> None:
    config = RunConfig(
        task=str(FIXTURES / "tasks" / "toy"),
        rounds=3,
        llm={"provider": "scripted", "script": str(FIXTURES / "scripts" / "hostile_toy.yaml")},
        database_url=database.url,
        state_dir=tmp_path / "state",
        sampling={"policy": "greedy"},
        bounds={"max_debug_attempts": 0},
    )
    outcome = start_run(config, "limits")
    nodes = {n.round: n for n in services.get_services(config).nodes.list_nodes("limits")}
    hang, hog, fine = nodes[1], nodes[2], nodes[3]
    assert hang.status == "timeout", (hang.status, hang.error)
    assert "wall-clock limit" in (hang.error or "")
    assert 6.0 <= hang.eval_seconds < 8.0
    assert hog.status == "resource_limit", (hog.status, hog.error)
    assert "memory" in (hog.error or "").lower()
    assert fine.status == "evaluated" and fine.score == 2.0
    assert outcome.state["best_score"] == 2.0 and outcome.state["stop_reason"] == "3 rounds done"
    assert processes_mentioning("987654") == []
