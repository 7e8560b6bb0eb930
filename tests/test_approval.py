"""Human approval before costly stages: the decision rules, and the whole flow from the command line
(`evoforge run` stops at the interrupt, `evoforge status` lists it, `evoforge approve` continues)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from langgraph.types import Command, Interrupt
from pydantic import ValidationError

from evoforge.agents.engineer import needs_approval, parse_decision
from evoforge.config import RunConfig
from evoforge.graph.runner import approve, checkpointed_graph, pending_approvals, start_run, thread_config
from evoforge.memory.database import Database
from evoforge.memory.nodes import NodeStore
from evoforge.tasks.spec import load_task

SCRIPTS = Path(__file__).parent / "fixtures" / "scripts"
EVOFORGE = Path(sys.executable).parent / "evoforge"


def test_only_stages_costlier_than_the_threshold_ask() -> None:
    quick, full = load_task("circle_packing").stages
    assert (quick.cost, full.cost) == (0, 0.01)
    assert not needs_approval(RunConfig(), full), "a run with no threshold never stops to ask"
    assert needs_approval(RunConfig(approval_cost_threshold=0.005), full)
    assert not needs_approval(RunConfig(approval_cost_threshold=0.005), quick)
    assert not needs_approval(RunConfig(approval_cost_threshold=0.01), full), "only a cost above it asks"


def test_decisions_are_normalised_or_refused_by_name() -> None:
    assert parse_decision("approve") == {"action": "approve", "settings": {}, "reason": ""}
    assert parse_decision({"action": "edit", "settings": {"repeats": 1}}) == {
        "action": "edit", "settings": {"repeats": 1}, "reason": ""}
    assert parse_decision({"action": "reject", "reason": "too slow"})["reason"] == "too slow"
    with pytest.raises(ValueError, match="'maybe'"):
        parse_decision({"action": "maybe"})
    with pytest.raises(ValueError, match="settings must be a mapping, got 'fewer'"):
        parse_decision({"action": "edit", "settings": "fewer"})


@pytest.mark.integration
@pytest.mark.slow
def test_cli_run_stops_for_approval_and_continues(database: Database, tmp_path: Path,
                                                  fresh_resources: None) -> None:
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({
        "rounds": 2,
        "llm": {"provider": "scripted", "script": str(SCRIPTS / "approval.yaml")},
        "database_url": database.url,
        "state_dir": str(tmp_path / "state"),
        "sampling": {"policy": "greedy", "inspirations": 1},
        "novelty": {"duplicate_similarity": 0.9999, "judge_similarity": 0.9999},
        "approval_cost_threshold": 0.005,
    }))
    env = {**os.environ, "EVOFORGE_DATABASE_URL": database.url, "EVOFORGE_STATE_DIR": str(tmp_path / "state"),
           "COLUMNS": "200"}

    def evoforge(*args: str) -> str:
        done = subprocess.run([str(EVOFORGE), *args], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, f"evoforge {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    started = evoforge("run", "circle_packing", "--config", str(config_file), "--run-id", "asks")
    assert "waiting for approval: run asks, candidate 'square_grid', stage full (cost 0.01)" in started
    assert "answer with: evoforge approve asks" in started

    # what `evoforge status asks` lists (tests/test_studio.py runs that command on a thread's run)
    base = RunConfig(database_url=database.url, state_dir=tmp_path / "state")
    (request,) = pending_approvals("asks", base)
    assert (request["candidate"], request["stage"], request["round"]) == ("square_grid", "full", 1)

    # an edit runs the stage with changed settings: one repeat of the packing instead of two
    edited = evoforge("approve", "asks", "--set", "repeats=1")
    # the progress lines pick up where the run stopped: round 1 with its candidate, not round 0
    assert "round 1/2: square_grid evaluated score=2.45355" in edited
    assert "waiting for approval: run asks, candidate 'far_corner_gap'" in edited

    reason = "one circle moved: not worth the full stage"
    finished = evoforge("approve", "asks", "--reject", "--reason", reason)
    assert "round 2/2: far_corner_gap rejected_by_human" in finished and "run asks: 2 rounds done" in finished

    store = NodeStore(database)
    nodes = {node.round: node for node in store.list_nodes("asks")}
    assert [nodes[r].status for r in (0, 1, 2)] == ["evaluated", "evaluated", "rejected_by_human"]
    assert [r["stage"] for r in nodes[1].stage_results] == ["quick", "full"]
    assert nodes[0].stage_results[1]["metrics"]["repeats"] == 2  # the task's own setting, for the seed
    assert nodes[1].stage_results[1]["metrics"]["repeats"] == 1
    assert reason in (nodes[2].error or "") and [r["stage"] for r in nodes[2].stage_results] == ["quick"]

    with pytest.raises(ValueError, match="no pending approval"):
        approve("asks", {"action": "approve"}, base=base)


THIRD_REPLY = """NAME: grid_by_steps
MOTIVATION: The same grid written as steps of 0.2 from 0.1.
<<<<<<< SEARCH
    grid = (np.arange(5) + 0.5) / 5
=======
    grid = 0.1 + 0.2 * np.arange(5)
>>>>>>> REPLACE
"""


@pytest.mark.integration
@pytest.mark.slow
def test_a_refused_answer_leaves_the_approval_answerable(database: Database, tmp_path: Path) -> None:
    """A malformed answer or an edit of a setting the stage lacks fails the resume that brought it; the question
    stays open, and each way of answering still works: a plain resume (the thread API's), a resume addressed by
    interrupt id, and `evoforge approve --set`."""
    script = yaml.safe_load((SCRIPTS / "approval.yaml").read_text())
    script["researcher"].append(THIRD_REPLY)
    (tmp_path / "script.yaml").write_text(yaml.safe_dump(script))
    state_dir = tmp_path / "state"
    config = RunConfig(task="circle_packing", rounds=3, database_url=database.url, state_dir=state_dir,
                       llm={"provider": "scripted", "script": str(tmp_path / "script.yaml")},
                       sampling={"policy": "greedy", "inspirations": 1},
                       novelty={"duplicate_similarity": 0.9999, "judge_similarity": 0.9999},
                       approval_cost_threshold=0.005)
    start_run(config, "refuses")
    with checkpointed_graph(config) as graph:
        thread = thread_config("refuses")

        def answer(resume: Any) -> None:
            for _ in graph.stream(Command(resume=resume), thread, context=config, durability="sync"):
                pass

        def asked() -> Interrupt:
            (question,) = graph.get_state(thread).interrupts
            return question

        first = asked()
        assert first.value["round"] == 1 and first.value["stage"] == "full"
        for refused, message in [({"action": "maybe"}, "got {'action': 'maybe'}"),
                                 ({first.id: {"action": "edit", "settings": {"nosuch": 1}}},
                                  "the stage has no setting 'nosuch'; its settings are ")]:
            with pytest.raises(ValidationError, match=message):
                answer(refused)
            assert asked() == first, "the same question stays open"
        with pytest.raises(ValueError, match="the stage has no setting 'nosuch'"):
            approve("refuses", {"action": "edit", "settings": {"nosuch": 1}}, base=config)
        answer({"action": "approve"})

        second = asked()
        assert second.value["round"] == 2
        with pytest.raises(ValidationError, match="'maybe'"):
            answer("maybe")
        answer({second.id: {"action": "edit", "settings": {"repeats": 1}}})

        third = asked()
        assert third.value["round"] == 3
        with pytest.raises(ValidationError, match="'maybe'"):
            answer({"action": "maybe"})

    env = {**os.environ, "EVOFORGE_DATABASE_URL": database.url, "EVOFORGE_STATE_DIR": str(state_dir)}
    refused_cli = subprocess.run([str(EVOFORGE), "approve", "refuses", "--set", "nosuch=1"], capture_output=True,
                                 text=True, env=env, timeout=300)
    assert refused_cli.returncode == 2 and "the stage has no setting 'nosuch'" in refused_cli.stderr
    edited = subprocess.run([str(EVOFORGE), "approve", "refuses", "--set", "repeats=1"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert edited.returncode == 0, edited.stdout + edited.stderr

    nodes = {node.round: node for node in NodeStore(database).list_nodes("refuses")}
    assert [nodes[r].status for r in (1, 2, 3)] == ["evaluated"] * 3
    assert [nodes[r].stage_results[-1]["metrics"]["repeats"] for r in (1, 2, 3)] == [2, 1, 1]
