"""langgraph.json stays minimal and every target it names imports."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(target: str) -> object:
    path, _, attribute = target.partition(":")
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    assert spec and spec.loader, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, attribute)


def test_targets_import() -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())
    assert config["dependencies"] == ["."]
    for graph_id, target in config["graphs"].items():
        assert graph_id.islower(), graph_id
        graph = _load(target)
        assert graph.checkpointer is None, "the dev server refuses a graph compiled with its own checkpointer"
    assert callable(_load(config["checkpointer"]["path"]))
    assert (ROOT / ".env.example").is_file()


def test_graph_has_every_agent() -> None:
    from evoforge.graph.builder import graph

    nodes = set(graph.get_graph().nodes)
    assert {
        "prepare_run",
        "sample_context",
        "propose_candidate",
        "check_candidate",
        "check_novelty",
        "run_evaluation",
        "debug_candidate",
        "analyze_result",
        "record_node",
    } <= nodes
