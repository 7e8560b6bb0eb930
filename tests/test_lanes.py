"""Parallel lanes: K checkpointed threads share one run's node memory, evaluate concurrently, seed once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from evoforge.agents.base import TRANSCRIPT
from evoforge.config import RunConfig
from evoforge.graph.runner import checkpointed_graph, resume_run, start_run, thread_config
from evoforge.memory.database import Database
from evoforge.runtime import services

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.integration


def slow_toy(tmp_path: Path, delay_s: float) -> Path:
    task_dir = tmp_path / "slow_toy"
    shutil.copytree(FIXTURES / "tasks" / "toy", task_dir)
    spec = yaml.safe_load((task_dir / "task.yaml").read_text())
    spec["stages"][0]["settings"]["delay_s"] = delay_s
    (task_dir / "task.yaml").write_text(yaml.safe_dump(spec))
    return task_dir


def evaluation_interval(stage_dir: Path) -> tuple[float, float]:
    """When an evaluation started (program written) and ended (metrics written)."""
    return (stage_dir / "program.py").stat().st_mtime, (stage_dir / "results" / "metrics.json").stat().st_mtime


def test_two_lanes_share_memory_and_overlap(database: Database, tmp_path: Path) -> None:
    config = RunConfig(
        task=str(slow_toy(tmp_path, 1.5)), rounds=4, workers=2,
        llm={"provider": "scripted", "script": str(FIXTURES / "scripts" / "slow_toy.yaml")},
        database_url=database.url, state_dir=tmp_path / "state", sampling={"policy": "greedy"},
    )
    lanes_seen: set[int] = set()
    outcome = start_run(config, "lanes", on_update=lambda node, update: lanes_seen.add(update["lane"]))
    assert lanes_seen == {0, 1}
    store = services.get_services(config).nodes
    ids = sorted(n.id for n in store.list_nodes("lanes"))
    assert ids == sorted(["lanes-r0000-l0", "lanes-r0001-l0", "lanes-r0002-l0", "lanes-r0001-l1", "lanes-r0002-l1"])
    assert {n.lane for n in store.list_nodes("lanes")} == {0, 1}
    assert not (tmp_path / "state" / "runs" / "lanes" / "nodes" / "lanes-r0000-l1").exists(), "one seed only"
    assert outcome.state["best_score"] == max(n.score for n in store.list_nodes("lanes") if n.valid)

    nodes_dir = tmp_path / "state" / "runs" / "lanes" / "nodes"
    lane0 = [evaluation_interval(nodes_dir / f"lanes-r000{r}-l0" / "quick-try0") for r in (1, 2)]
    lane1 = [evaluation_interval(nodes_dir / f"lanes-r000{r}-l1" / "quick-try0") for r in (1, 2)]
    assert any(a0 < b1 and a1 < b0 for a0, b0 in lane0 for a1, b1 in lane1), "the lanes never evaluated at once"
    # both lanes' first Researcher call of round 1 share a parent (the seed), but not a sampling seed
    first_calls = [json.loads((nodes_dir / f"lanes-r0001-l{lane}" / TRANSCRIPT).read_text().splitlines()[0])
                   for lane in (0, 1)]
    assert [call["role"] for call in first_calls] == ["researcher", "researcher"]
    assert first_calls[0]["seed"] != first_calls[1]["seed"]

    with checkpointed_graph(config) as graph:
        for lane in (0, 1):
            snapshot = graph.get_state(thread_config("lanes", lane))
            assert snapshot.values["lane"] == lane and snapshot.values["round"] == 2 and snapshot.next == ()

    resumed = resume_run("lanes", base=config, rounds=6)
    assert store.count_nodes("lanes") == 7 and resumed.state["stop_reason"] == "6 rounds done"
