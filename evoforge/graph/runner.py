"""Starting, resuming and approving runs from the command line, with the Postgres checkpointer.

A run is one LangGraph thread whose id is the run id; its checkpoints live in the same database as its
nodes. Every step is checkpointed synchronously, so `kill -9` at any point loses at most the step in flight.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from evoforge.config import RunConfig
from evoforge.graph.builder import build_graph
from evoforge.graph.resources import open_store

UpdateHandler = Callable[[str, dict[str, Any]], None]
"""Called with (node name, the node's state update) after every step."""


@dataclass
class RunOutcome:
    run_id: str
    state: dict[str, Any]
    pending_approvals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return not self.pending_approvals and bool(self.state.get("stop_reason"))


class RunNotFound(LookupError):
    """No run with that id in the configured database."""


def new_run_id(task_name: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{task_name}-{stamp}-{secrets.token_hex(2)}"


def thread_config(run_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": run_id}, "recursion_limit": 1_000_000}


@contextmanager
def checkpointed_graph(config: RunConfig) -> Iterator[CompiledStateGraph]:
    database, _ = open_store(config)
    yield build_graph(checkpointer=database.checkpointer())


def _drive(graph: CompiledStateGraph, graph_input: Any, run_id: str, config: RunConfig,
           on_update: UpdateHandler | None) -> RunOutcome:
    thread = thread_config(run_id)
    for chunk in graph.stream(graph_input, thread, context=config, stream_mode="updates", durability="sync"):
        for node_name, update in chunk.items():
            if on_update is not None and isinstance(update, dict):
                on_update(node_name, update)
    snapshot = graph.get_state(thread)
    pending = [interrupt.value for interrupt in snapshot.interrupts]
    return RunOutcome(run_id=run_id, state=dict(snapshot.values), pending_approvals=pending)


def start_run(config: RunConfig, run_id: str | None = None, on_update: UpdateHandler | None = None) -> RunOutcome:
    """Start a new run (or continue one with this id, which makes a retried `run --run-id` idempotent)."""
    from evoforge.tasks.spec import load_task

    run_id = run_id or new_run_id(load_task(config.task).name)
    with checkpointed_graph(config) as graph:
        return _drive(graph, {"run_id": run_id}, run_id, config, on_update)


def stored_config(run_id: str, base: RunConfig | None = None, **overrides: Any) -> RunConfig:
    """The configuration a run was started with, with explicit overrides (e.g. more rounds) applied."""
    base = base or RunConfig()
    _, nodes = open_store(base)
    run = nodes.get_run(run_id)
    if run is None:
        raise RunNotFound(f"no run {run_id!r} in the database at {nodes.database.url}")
    data = {**run.config, **{k: v for k, v in overrides.items() if v is not None}}
    config = RunConfig(**data)
    if overrides:
        nodes.update_run_config(run_id, config.model_dump(mode="json"))
    return config


def resume_run(run_id: str, *, base: RunConfig | None = None, on_update: UpdateHandler | None = None,
               **overrides: Any) -> RunOutcome:
    """Continue from the last checkpoint; a finished run goes on when `rounds` was raised."""
    config = stored_config(run_id, base, **overrides)
    with checkpointed_graph(config) as graph:
        snapshot = graph.get_state(thread_config(run_id))
        if snapshot.interrupts:
            return RunOutcome(run_id, dict(snapshot.values), [i.value for i in snapshot.interrupts])
        graph_input = None if snapshot.next else {"run_id": run_id}
        return _drive(graph, graph_input, run_id, config, on_update)


def approve(run_id: str, decision: dict[str, Any], *, base: RunConfig | None = None,
            on_update: UpdateHandler | None = None) -> RunOutcome:
    """Answer the pending approval of a run and continue it."""
    from evoforge.agents.engineer import parse_decision

    config = stored_config(run_id, base)
    parse_decision(decision)
    with checkpointed_graph(config) as graph:
        if not graph.get_state(thread_config(run_id)).interrupts:
            raise ValueError(f"run {run_id!r} has no pending approval")
        return _drive(graph, Command(resume=decision), run_id, config, on_update)


def pending_approvals(run_id: str, base: RunConfig | None = None) -> list[dict[str, Any]]:
    """Approval requests a run is waiting on (empty when it is not waiting)."""
    config = stored_config(run_id, base)
    with checkpointed_graph(config) as graph:
        return [i.value for i in graph.get_state(thread_config(run_id)).interrupts]
