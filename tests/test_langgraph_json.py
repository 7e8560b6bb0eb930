"""langgraph.json stays minimal and every target it names imports."""

import importlib.util
import json
from pathlib import Path

import pytest
from langgraph.pregel import Pregel
from langgraph_sdk.runtime import _ExecutionRuntime, _ReadRuntime
from starlette.applications import Starlette

from evoforge.config import ConfigError

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
        if not isinstance(graph, Pregel):  # a factory the server calls with its runtime
            graph = graph(_ReadRuntime(access_context="assistants.read", store=None))
        assert graph.checkpointer is None, "the dev server refuses a graph compiled with its own checkpointer"
    assert callable(_load(config["checkpointer"]["path"]))
    assert isinstance(_load(config["http"]["app"]), Starlette), "the dashboard mounted beside the thread API"
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


def test_the_served_graph_refuses_a_context_a_config_file_could_not_hold() -> None:
    """The server drops context keys its schema does not list; the factory sees them first and refuses them."""
    from evoforge.graph.builder import graph, research_graph

    def run_with(context: object) -> object:
        return research_graph(_ExecutionRuntime(access_context="threads.create_run", store=None, context=context))

    assert run_with({"task": "circle_packing", "rounds": 2}) is graph
    assert run_with({}) is graph, "a resume carries no context: the run's recorded settings apply"
    with pytest.raises(ConfigError, match=r"hyperparams: Extra inputs are not permitted \(got 3\)"):
        run_with({"task": "circle_packing", "hyperparams": 3})
    with pytest.raises(ConfigError, match="rounds: Input should be greater than or equal to 0"):
        run_with({"rounds": -1})
