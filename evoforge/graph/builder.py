"""Wiring of the research graph (one round: sample → propose → check → novelty → evaluate ⇄ debug →
analyze → record). `graph` is compiled without a checkpointer for `langgraph dev`, which brings its own;
the server gets it through `research_graph`, which validates a run's context first."""

from __future__ import annotations

from typing import Any

from langgraph._internal._runnable import RunnableCallable
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph_sdk.runtime import ServerRuntime

from evoforge.agents.analyzer import analyze_result
from evoforge.agents.bootstrap import prepare_run
from evoforge.agents.debugger import debug_candidate
from evoforge.agents.engineer import run_evaluation
from evoforge.agents.novelty_checker import check_novelty
from evoforge.agents.recorder import record_node
from evoforge.agents.researcher import propose_candidate
from evoforge.agents.sampler import sample_context
from evoforge.agents.static_checker import check_candidate
from evoforge.config import RunConfig, load_config
from evoforge.graph import routing
from evoforge.llm.cancellation import cancellable
from evoforge.runtime.state import InputState, State

ResearchGraph = CompiledStateGraph[Any, RunConfig, Any, Any]


def build_graph(checkpointer: BaseCheckpointSaver[str] | None = None) -> ResearchGraph:
    # No output_schema: the dev server streams `updates` and `values` filtered to the output keys, so a
    # narrower output would show every agent's step in Studio as null. The run's summary is OutputState's part.
    builder = StateGraph(State, context_schema=RunConfig, input_schema=InputState)
    calls_a_model = (propose_candidate, check_candidate, check_novelty, debug_candidate, analyze_result)
    for node in (prepare_run, sample_context, propose_candidate, check_candidate, check_novelty,
                 run_evaluation, debug_candidate, analyze_result, record_node):
        # under an async runner (langgraph dev), cancelling a run cancels the model call its agent waits on;
        # RunnableCallable is what add_node makes of a function, given the async twin explicitly
        action = RunnableCallable(node, cancellable(node), name=node.__name__) if node in calls_a_model else node
        builder.add_node(node.__name__, action)
    builder.add_edge(START, "prepare_run")
    builder.add_conditional_edges("prepare_run", routing.route_after_prepare_run)
    builder.add_edge("sample_context", "propose_candidate")
    builder.add_conditional_edges("propose_candidate", routing.route_after_propose_candidate)
    builder.add_conditional_edges("check_candidate", routing.route_after_check_candidate)
    builder.add_conditional_edges("check_novelty", routing.route_after_check_novelty)
    builder.add_conditional_edges("run_evaluation", routing.route_after_run_evaluation)
    builder.add_conditional_edges("debug_candidate", routing.route_after_debug_candidate)
    builder.add_edge("analyze_result", "record_node")
    builder.add_conditional_edges("record_node", routing.route_after_record_node)
    return builder.compile(checkpointer=checkpointer, name="research")


graph = build_graph()
"""The research graph for `langgraph dev` / Studio (the server supplies the Postgres checkpointer)."""


def research_graph(runtime: ServerRuntime[object]) -> ResearchGraph:
    """`graph`, for `langgraph dev` (langgraph.json), once the context a run was started with is valid.

    The server keeps only the context keys that the context schema lists and drops the rest before the graph
    runs, so an unknown key would be silently ignored. The server hands the whole context to this factory
    first: it is checked here by the rules of a `--config` file (`load_config`), and a bad key fails the run.
    """
    execution = runtime.execution_runtime  # None when the server only reads the graph or a thread's state
    context = execution.context if execution is not None else None
    if isinstance(context, dict) and context:
        load_config(None, **context)
    return graph
