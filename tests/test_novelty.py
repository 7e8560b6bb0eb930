"""The Novelty-Checker and insight write-back through the real graph: a scripted run on circle_packing
against the embedded Postgres, the real sandbox and evaluator, and the MiniLM embedder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_graph import scripted_config
from typer.testing import CliRunner

from evoforge.cli import app
from evoforge.cognition.provenance import node_provenance
from evoforge.graph.runner import start_run
from evoforge.memory.database import Database
from evoforge.runtime import services

pytestmark = pytest.mark.integration
RUN = "novelty"


def test_a_near_copy_is_rejected_and_the_retry_succeeds(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = scripted_config(
        database,
        tmp_path,
        "near_copy.yaml",
        rounds=2,
        bounds={
            "max_parse_retries": 1,
            "max_static_retries": 1,
            "max_novelty_retries": 3,
            "max_debug_attempts": 1,
        },
        novelty={"duplicate_similarity": 0.94, "judge_similarity": 0.8},
        cognition={"top_k": 6, "prior_code_fallback": False},
    )
    steps: list[str] = []
    updates: list[tuple[str, dict[str, Any]]] = []

    def on_update(node: str, update: dict[str, Any]) -> None:
        steps.append(node)
        updates.append((node, update))

    outcome = start_run(config, RUN, on_update=on_update)
    assert outcome.state["stop_reason"] == "2 rounds done"
    novelty_checks = [update["novelty_report"] for node, update in updates if node == "check_novelty"]
    same, close, grey, novel = novelty_checks[:4]
    assert same["verdict"] == "duplicate" and same["nearest_name"] == "seed" and same["similarity"] == 1.0
    assert "up to comments, docstrings, formatting and the names of local variables" in same["reason"]
    assert close["verdict"] == "duplicate" and close["nearest_name"] == "seed"
    assert close["similarity"] >= 0.94 and "above the duplicate threshold" in close["reason"]
    assert grey["verdict"] == "duplicate" and 0.8 <= grey["similarity"] < 0.94, grey
    assert grey["reason"].startswith("judge: DUPLICATE")
    assert novel["verdict"] == "novel" and novel["similarity"] < 0.8
    attempt = ["propose_candidate", "check_candidate", "check_novelty"]  # three duplicates, then a novel one
    assert steps[:15] == ["prepare_run", "sample_context", *attempt * 4, "run_evaluation"]

    res = services.get_services(config)
    nodes = {node.round: node for node in res.nodes.list_nodes(RUN)}
    seed, grid, corner = nodes[0], nodes[1], nodes[2]
    assert grid.name == "square_grid" and grid.valid and grid.score is not None and grid.score > 2.4
    assert grid.novelty["verdict"] == "novel" and grid.novelty["nearest_id"] == seed.id, (
        "the verdict is stored"
    )
    assert (grid.feedback or "").count("duplicates node 'seed'") == 3
    researcher = res.chat_model("researcher")
    retry_prompt = researcher.received[1][-1].content
    assert "'tidier_seed' duplicates node 'seed'" in retry_prompt, "the Researcher is told what it repeated"
    judge = res.chat_model("novelty_judge")
    assert "## Existing: seed" in judge.received[0][-1].content

    # the Analyzer's insight went back into cognition; round 2's Researcher was shown it
    [lesson] = res.cognition.list("circle_packing", kind="insight")
    assert lesson.node_id == grid.id and lesson.kind == "insight"
    assert lesson.id in corner.cognition_ids and corner.parent_ids == [grid.id]
    round_two_prompt = researcher.received[4][-1].content
    # the idea to implement is a prior; the lesson is shown beside it
    assert f"- Lesson learned: {lesson.content[:100]}" in round_two_prompt
    assert "## Idea to implement in this candidate (a prior)" in round_two_prompt

    # provenance links the lesson, the node it was learnt from and the node it inspired
    inspired = node_provenance(database, corner.id)
    seen = {entry.item.id: entry for entry in inspired.seen}
    assert [entry.item.id for entry in inspired.seen] == corner.cognition_ids
    assert seen[lesson.id].origin is not None and seen[lesson.id].origin.id == grid.id
    assert all(entry.origin is None for entry in inspired.seen if entry.item.kind == "prior")
    teacher = node_provenance(database, grid.id)
    assert [item.id for item in teacher.taught] == [lesson.id]
    assert [ref.id for ref in teacher.reused_by[lesson.id]] == [corner.id]

    # and so does the command line (on the run's database, which services.clear_services closes)
    monkeypatch.setenv("EVOFORGE_DATABASE_URL", database.url)
    monkeypatch.setenv("EVOFORGE_STATE_DIR", str(tmp_path / "state"))
    result = CliRunner().invoke(app, ["cognition", "provenance", corner.id, "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    origins = {entry["item"]["id"]: entry["origin"] for entry in answer["seen"]}
    assert origins[lesson.id]["id"] == grid.id and origins[lesson.id]["name"] == "square_grid"
