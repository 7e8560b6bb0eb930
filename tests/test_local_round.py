"""One real round with the embedded local model (Qwen2.5-Coder-0.5B) through the real graph, sandbox and database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evoforge.config import RunConfig
from evoforge.graph.runner import start_run
from evoforge.llm.llama_server import stop_all_servers
from evoforge.memory.database import Database
from evoforge.memory.nodes import NodeRecord
from evoforge.runtime import services

pytestmark = [pytest.mark.integration, pytest.mark.local_llm, pytest.mark.slow]


@pytest.fixture(autouse=True)
def stop_local_servers() -> Iterator[None]:
    yield
    stop_all_servers()


def one_round(database: Database, tmp_path: Path, run_id: str, task: str, llm: dict[str, Any],
              bounds: dict[str, int]) -> tuple[RunConfig, list[str], NodeRecord]:
    """One round of `task` with the local model `llm`, two priors retrieved and no inspirations: the run's
    config, the steps it took, and the round's node."""
    config = RunConfig(task=task, rounds=1, llm={"provider": "local", **llm}, database_url=database.url,
                       state_dir=tmp_path / "state", cognition={"top_k": 2}, sampling={"inspirations": 0},
                       bounds=bounds)
    steps: list[str] = []
    outcome = start_run(config, run_id, on_update=lambda node, update: steps.append(node))
    assert outcome.state["stop_reason"] == "1 round done"
    nodes = services.get_services(config).nodes.list_nodes(run_id)
    assert [n.round for n in nodes] == [0, 1]
    return config, steps, nodes[1]


def test_one_real_round_on_circle_packing(database: Database, tmp_path: Path) -> None:
    _, steps, node = one_round(
        database, tmp_path, "local-llm", "circle_packing",
        {"model": "qwen2.5-coder-0.5b", "max_tokens": 700, "temperature": 0.7},
        # one model call per agent at most, so the test stays within a few minutes on 2 cores
        {"max_parse_retries": 0, "max_static_retries": 0, "max_novelty_retries": 0, "max_debug_attempts": 0})
    print(f"local model round: {node.name!r} {node.status} score={node.score} error={node.error}")
    assert node.tokens_in > 200 and node.tokens_out > 0 and node.llm_seconds > 0
    assert steps[:3] == ["prepare_run", "sample_context", "propose_candidate"]
    if node.status not in ("parse_failed", "static_rejected", "duplicate"):
        assert "analyze_result" in steps and node.analysis.strip()
        assert node.stage_results, "an evaluated candidate has stage results"


def test_one_real_round_on_the_tree_task(database: Database, tmp_path: Path) -> None:
    """The embedded 1.5B model, the tree prompt and its file-addressed grammar, on linear_attention_repo."""
    import json

    from evoforge.tasks.tree import decode_bundle, is_bundle

    config, _, node = one_round(
        database, tmp_path, "local-tree", "linear_attention_repo", {"model": "qwen2.5-coder-1.5b"},
        {"max_parse_retries": 1, "max_static_retries": 0, "max_novelty_retries": 0, "max_debug_attempts": 1})
    print(f"local model tree round: {node.name!r} {node.status} score={node.score} error={node.error}\n"
          f"feedback={node.feedback}\ndiff:\n{node.diff}")
    calls = [json.loads(line) for line in (config.node_dir("local-tree", node.id) / "llm_calls.jsonl").open()]
    researcher = [call for call in calls if call["role"] == "researcher"]
    assert researcher and "## The tree" in researcher[0]["messages"][-1]["content"]
    assert all(call.get("reply", "").startswith("NAME: ") for call in researcher if "reply" in call), "the grammar"
    if node.status != "parse_failed":
        assert is_bundle(node.code) and set(decode_bundle(node.code)) >= {"mixer.py", "train.py"}
        assert node.diff.count("+++ b/") >= 1
