"""Text Postgres cannot hold (NUL, lone surrogates) from a model, an evaluator or a program: every store of the
database keeps it, with U+FFFD in place of each such character, and a round carrying it is recorded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from langgraph.graph import END, START, StateGraph

from evoforge.cognition.embeddings import LocalEmbedder
from evoforge.cognition.store import CognitionStore
from evoforge.config import RunConfig
from evoforge.graph.runner import start_run
from evoforge.memory.database import Database, async_checkpointer
from evoforge.memory.nodes import NodeRecord, NodeStore
from evoforge.memory.storable import storable_text
from evoforge.runtime import services

pytestmark = pytest.mark.integration

TOY = Path(__file__).parent / "fixtures" / "tasks" / "toy"
RAW = "a\x00b\udcff"  # a NUL, and what surrogateescape leaves of the undecodable byte 0xff
KEPT = "a\ufffdb\ufffd"
NUL, NUL_KEPT = "a\x00b", "a\ufffdb"
"""For text that is hashed or embedded before it is stored (code, cognition), which needs encodable text."""


def test_only_the_refused_characters_are_replaced() -> None:
    assert storable_text(RAW) == KEPT
    assert storable_text("naïve ✓ 𝄞 \t\n") == "naïve ✓ 𝄞 \t\n", "other text, astral characters included, is kept"


def test_node_run_and_cognition_records_keep_such_text(database: Database, embedder: LocalEmbedder) -> None:
    nodes = NodeStore(database)
    nodes.create_run("nul", "toy", f"/tasks/{RAW}", {"note": RAW, RAW: [RAW]})
    nodes.update_run_status("nul", "failed", f"reason {RAW}")
    record = NodeRecord(id="nul-r1", run_id="nul", round=1, name=RAW, motivation=RAW, code=f"x = '{NUL}'\n",
                        diff=RAW, status="invalid", analysis=RAW, error=RAW, feedback=RAW, parent_ids=[RAW],
                        metrics={RAW: RAW}, stage_results=[{"stdout_tail": RAW, "nested": [{"k": RAW}]}])
    assert nodes.record_node(record)

    stored = nodes.get_node("nul-r1")
    assert stored is not None
    assert (stored.name, stored.motivation, stored.diff, stored.analysis, stored.error, stored.feedback) == (
        KEPT, KEPT, KEPT, KEPT, KEPT, KEPT)
    assert stored.code == f"x = '{NUL_KEPT}'\n" and stored.parent_ids == [KEPT]
    assert stored.metrics == {KEPT: KEPT}
    assert stored.stage_results == [{"stdout_tail": KEPT, "nested": [{"k": KEPT}]}]
    run = nodes.get_run("nul")
    assert run is not None and run.task_dir == f"/tasks/{KEPT}" and run.stop_reason == f"reason {KEPT}"
    assert run.config == {"note": KEPT, KEPT: [KEPT]}

    cognition = CognitionStore(database, embedder)
    item_id = cognition.add("toy", f"insight {NUL}", title=NUL, source="node:nul-r1", kind="insight",
                            node_id="nul-r1")
    assert item_id is not None
    (item,) = cognition.get([item_id])
    assert (item.title, item.content) == (NUL_KEPT, f"insight {NUL_KEPT}")


@dataclass
class Echo:
    text: str = ""


def echo_graph() -> StateGraph:
    builder = StateGraph(Echo)
    builder.add_node("say", lambda state: {"text": RAW})
    builder.add_edge(START, "say")
    builder.add_edge("say", END)
    return builder


def test_checkpoints_keep_such_text(database: Database) -> None:
    """A str channel is stored inline in the checkpoint's jsonb, by the CLI's saver and the dev server's."""
    graph = echo_graph().compile(checkpointer=database.checkpointer())
    thread = {"configurable": {"thread_id": "echo"}}
    graph.invoke({"text": ""}, thread)
    assert graph.get_state(thread).values["text"] == KEPT

    async def through_the_server_saver() -> str:
        async with async_checkpointer(database.url) as saver:
            served = echo_graph().compile(checkpointer=saver)
            thread = {"configurable": {"thread_id": "echo-async"}}
            await served.ainvoke({"text": ""}, thread)
            return (await served.aget_state(thread)).values["text"]

    assert asyncio.run(through_the_server_saver()) == KEPT


def test_a_round_carrying_nul_bytes_is_recorded(database: Database, tmp_path: Path) -> None:
    """NUL in a reply's motivation, in a program's output and in the Analyzer's insight (round 1), and in a reply's
    code (round 2, which the Static-Checker refuses by name): both rounds are recorded and the run finishes."""
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump({
        "researcher": [
            "NAME: loud\nMOTIVATION: print a\x00b, then score 2\n```python\ndef solve():\n"
            "    print('out\\x00put')\n    return 2.0\n```",
            "NAME: nul_code\nMOTIVATION: score 3\n```python\ndef solve():\n    return 3.0\x00\n```",
        ],
        "analyzer": {"cycle": True, "replies": [
            "RESULT: it printed a NUL.\nINSIGHT: a program printing a\x00NUL byte still scores as usual.\nNEXT: go on."]},
    }))
    config = RunConfig(task=str(TOY), rounds=2, database_url=database.url, state_dir=tmp_path / "state",
                       llm={"provider": "scripted", "script": str(script)},
                       sampling={"policy": "greedy", "inspirations": 0}, bounds={"max_static_retries": 0},
                       novelty={"duplicate_similarity": 0.9999, "judge_similarity": 0.9999})
    outcome = start_run(config, "nul-round")
    assert outcome.state["stop_reason"] == "2 rounds done"

    stored = {node.round: node for node in services.get_services(config).nodes.list_nodes("nul-round")}
    loud, nul_code = stored[1], stored[2]
    assert loud.status == "evaluated" and loud.motivation == "print a\ufffdb, then score 2" and loud.score == 2.0
    assert "out\ufffdput" in loud.stage_results[0]["stdout_tail"]
    assert nul_code.status == "static_rejected" and "\ufffd" in nul_code.code
    assert "source code string cannot contain null bytes" in (nul_code.error or "")
    lessons = [item.content for item in services.get_services(config).cognition.list("toy", kind="insight")]
    assert lessons == ["a program printing a\ufffdNUL byte still scores as usual."]
