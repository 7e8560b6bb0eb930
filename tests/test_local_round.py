"""One real round with the embedded local model (Qwen2.5-Coder-0.5B) through the real graph, sandbox and database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from evoforge.config import RunConfig
from evoforge.graph.runner import start_run
from evoforge.llm.llama_server import stop_all_servers
from evoforge.memory.database import Database
from evoforge.runtime import services

pytestmark = [pytest.mark.integration, pytest.mark.local_llm, pytest.mark.slow]


@pytest.fixture(autouse=True)
def stop_local_servers() -> Iterator[None]:
    yield
    stop_all_servers()


def test_one_real_round_on_circle_packing(database: Database, tmp_path: Path) -> None:
    config = RunConfig(
        task="circle_packing",
        rounds=1,
        llm={"provider": "local", "model": "qwen2.5-coder-0.5b", "max_tokens": 700, "temperature": 0.7},
        database_url=database.url,
        state_dir=tmp_path / "state",
        cognition={"top_k": 2},
        sampling={"inspirations": 0},
        # one model call per agent at most, so the test stays within a few minutes on 2 cores
        bounds={"max_parse_retries": 0, "max_static_retries": 0, "max_novelty_retries": 0, "max_debug_attempts": 0},
    )
    steps: list[str] = []
    outcome = start_run(config, "local-llm", on_update=lambda node, update: steps.append(node))
    assert outcome.state["stop_reason"] == "1 round done"
    nodes = services.get_services(config).nodes.list_nodes("local-llm")
    assert [n.round for n in nodes] == [0, 1]
    node = nodes[1]
    print(f"local model round: {node.name!r} {node.status} score={node.score} error={node.error}")
    assert node.tokens_in > 200 and node.tokens_out > 0 and node.llm_seconds > 0
    assert steps[:3] == ["prepare_run", "sample_context", "propose_candidate"]
    if node.status not in ("parse_failed", "static_rejected", "duplicate"):
        assert "analyze_result" in steps and node.analysis.strip()
        assert node.stage_results, "an evaluated candidate has stage results"
