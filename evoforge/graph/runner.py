"""Starting, resuming and approving runs from the command line, with the Postgres checkpointer.

A run is one LangGraph thread per lane (lane 0's thread id is the run id, lane k's `<run id>#lane<k>`); the
lanes share node memory and their checkpoints live in the same database. Every step is checkpointed
synchronously, so `kill -9` at any point loses at most the step in flight of each lane.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from pydantic import ValidationError
from typing_extensions import TypedDict

from evoforge.config import ConfigError, RunConfig, format_validation_errors
from evoforge.graph.builder import ResearchGraph, build_graph
from evoforge.memory.database import Database
from evoforge.memory.nodes import RunRecord
from evoforge.runtime.payloads import Candidate
from evoforge.runtime.services import open_store

log = logging.getLogger(__name__)

REASON_CHARS = 500
"""Of a failure's message kept as the run's stop reason."""
UpdateHandler = Callable[[str, dict[str, Any]], None]
"""Called with (node name, the node's state update plus its `lane`) after every step of every lane."""


@dataclass
class RunOutcome:
    run_id: str
    state: dict[str, Any]
    """Lane 0's final state, with the run-wide best node."""
    pending_approvals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return not self.pending_approvals and bool(self.state.get("stop_reason"))


class RunNotFound(LookupError):
    """No run with that id in the configured database."""


def new_run_id(task_name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{task_name}-{stamp}-{secrets.token_hex(2)}"


def lane_thread_id(run_id: str, lane: int) -> str:
    return run_id if lane == 0 else f"{run_id}#lane{lane}"


def thread_config(run_id: str, lane: int = 0) -> RunnableConfig:
    return RunnableConfig(configurable={"thread_id": lane_thread_id(run_id, lane)}, recursion_limit=1_000_000)


@contextmanager
def checkpointed_graph(config: RunConfig) -> Iterator[ResearchGraph]:
    database, _ = open_store(config)
    yield build_graph(checkpointer=database.checkpointer())


def _lane_interrupts(graph: ResearchGraph, run_id: str, lane: int) -> list[dict[str, Any]]:
    snapshot = graph.get_state(thread_config(run_id, lane))
    return [{**interrupt.value, "lane": lane} for interrupt in snapshot.interrupts]


def _drive_lane(graph: ResearchGraph, graph_input: Any, run_id: str, lane: int, config: RunConfig,
                on_update: UpdateHandler | None) -> dict[str, Any]:
    thread = thread_config(run_id, lane)
    for chunk in graph.stream(graph_input, thread, context=config, stream_mode="updates", durability="sync"):
        for node_name, update in chunk.items():
            if on_update is not None and isinstance(update, dict):
                on_update(node_name, {**update, "lane": lane})
    return dict(graph.get_state(thread).values)


def _drive(graph: ResearchGraph, inputs: dict[int, Any], run_id: str, config: RunConfig,
           on_update: UpdateHandler | None) -> RunOutcome:
    """Drive the given lanes to their end or their next interrupt; a lane that raises marks the run `failed`
    (Ctrl-C: `stopped`) with the reason, so `evoforge status` never shows a dead run as running."""
    _, nodes = open_store(config)
    if (run := nodes.get_run(run_id)) is not None and run.status in ("failed", "stopped"):
        nodes.update_run_status(run_id, "running")
    try:
        return _drive_lanes(graph, inputs, run_id, config, on_update)
    except KeyboardInterrupt:
        nodes.update_run_status(run_id, "stopped", "interrupted (Ctrl-C)")
        raise
    except Exception as exc:
        log.info("run %s failed", run_id, exc_info=exc)
        nodes.update_run_status(run_id, "failed", f"{type(exc).__name__}: {exc}"[:REASON_CHARS])
        raise


def _drive_lanes(graph: ResearchGraph, inputs: dict[int, Any], run_id: str, config: RunConfig,
                 on_update: UpdateHandler | None) -> RunOutcome:
    """Drive the given lanes concurrently to their end or their next interrupt."""
    states: dict[int, dict[str, Any]] = {}
    if len(inputs) == 1:
        (lane, graph_input), = inputs.items()
        states[lane] = _drive_lane(graph, graph_input, run_id, lane, config, on_update)
    elif inputs:
        with ThreadPoolExecutor(max_workers=len(inputs), thread_name_prefix="lane") as pool:
            futures = {lane: pool.submit(_drive_lane, graph, graph_input, run_id, lane, config, on_update)
                       for lane, graph_input in inputs.items()}
            # every lane finishes (or fails) before the first failure is raised
            errors = [f.exception() for f in futures.values()]
            for error in errors:
                if error is not None:
                    raise error
            states = {lane: future.result() for lane, future in futures.items()}
    return _outcome(graph, run_id, config, states)


def _outcome(graph: ResearchGraph, run_id: str, config: RunConfig, states: dict[int, dict[str, Any]]) -> RunOutcome:
    from evoforge.tasks.spec import load_task

    state = states.get(0) or dict(graph.get_state(thread_config(run_id, 0)).values)
    _, nodes = open_store(config)
    best = nodes.best_node(run_id, load_task(config.task).score.direction)
    state.update(best_node_id=best.id if best else None, best_score=best.score if best else None)
    pending = [request for lane in range(config.workers) for request in _lane_interrupts(graph, run_id, lane)]
    return RunOutcome(run_id=run_id, state=state, pending_approvals=pending)


def register_run(config: RunConfig, run_id: str | None = None) -> str:
    """Record a run before any of its work starts, so it is resumable from its first moment; its id (new unless
    given; an existing run of that id is left as it is)."""
    from evoforge.tasks.spec import load_task

    task = load_task(config.task)
    run_id = run_id or new_run_id(task.name)
    _, nodes = open_store(config)
    nodes.create_run(run_id, task.name, str(task.root), config.model_dump(mode="json"))
    return run_id


def start_run(config: RunConfig, run_id: str | None = None, on_update: UpdateHandler | None = None) -> RunOutcome:
    """Start a new run (or continue one with this id, which makes a retried `run --run-id` idempotent)."""
    run_id = register_run(config, run_id)
    with checkpointed_graph(config) as graph:
        inputs = {lane: {"run_id": run_id, "lane": lane} for lane in range(config.workers)}
        return _drive(graph, inputs, run_id, config, on_update)


def stored_config(run_id: str, base: RunConfig | None = None, **overrides: Any) -> RunConfig:
    """The configuration a run was started with, with explicit overrides (e.g. more rounds) applied."""
    base = base or RunConfig()
    _, nodes = open_store(base)
    run = nodes.get_run(run_id)
    if run is None:
        raise RunNotFound(f"no run {run_id!r} in the database at {nodes.database.url}")
    explicit = {k: v for k, v in overrides.items() if v is not None}
    try:
        config = RunConfig(**{**run.config, **explicit})
    except ValidationError as exc:
        raise ConfigError(f"run {run_id!r}: {format_validation_errors(exc)}") from exc
    if explicit:
        nodes.update_run_config(run_id, config.model_dump(mode="json"))
    return config


def resume_run(run_id: str, *, base: RunConfig | None = None, on_update: UpdateHandler | None = None,
               **overrides: Any) -> RunOutcome:
    """Continue every lane from its last checkpoint; finished lanes go on when `rounds` was raised.

    A lane waiting for an approval stays waiting (answer it with `approve`).
    """
    from evoforge.tasks.spec import load_task

    config = stored_config(run_id, base, **overrides)
    load_task(config.task)  # a task that moved or was deleted fails here, before any step
    with checkpointed_graph(config) as graph:
        inputs: dict[int, Any] = {}
        for lane in range(config.workers):
            snapshot = graph.get_state(thread_config(run_id, lane))
            if snapshot.interrupts:
                continue
            inputs[lane] = None if snapshot.next else {"run_id": run_id, "lane": lane}
        return _drive(graph, inputs, run_id, config, on_update)


def approve(run_id: str, decision: Mapping[str, Any], *, lane: int | None = None, base: RunConfig | None = None,
            on_update: UpdateHandler | None = None) -> RunOutcome:
    """Answer a pending approval of a run (of `lane`, needed when several lanes wait) and continue that lane."""
    from evoforge.agents.engineer import parse_decision

    config = stored_config(run_id, base)
    parse_decision(decision)
    with checkpointed_graph(config) as graph:
        waiting = sorted({request["lane"] for lane in range(config.workers)
                          for request in _lane_interrupts(graph, run_id, lane)})
        if not waiting:
            raise ValueError(f"run {run_id!r} has no pending approval")
        if lane is None:
            if len(waiting) > 1:
                raise ValueError(f"lanes {waiting} of run {run_id!r} wait for approval: name one with --lane")
            lane = waiting[0]
        elif lane not in waiting:
            raise ValueError(f"lane {lane} of run {run_id!r} has no pending approval; waiting: {waiting}")
        # an edit of a setting the stage lacks is refused here, before it reaches the graph
        parse_decision(decision, _lane_interrupts(graph, run_id, lane)[0]["settings"])
        return _drive(graph, {lane: Command(resume=decision)}, run_id, config, on_update)


class LanePosition(TypedDict):
    """Where a lane stands at its last checkpoint (`lane_positions`)."""

    round: int
    rounds_done: int
    """Rounds the lane has recorded."""
    best_score: float | None
    candidate: Candidate | None
    """The round's candidate in flight."""


def lane_positions(run_id: str, base: RunConfig | None = None) -> dict[int, LanePosition]:
    """Where each lane of a run stands at its last checkpoint: `round`, `rounds_done` (the current round counts
    when the checkpoint sits between rounds or at the end), `best_score` and the `candidate` in flight. A
    progress display of a resumed or approved run starts from here rather than from round 0."""
    config = stored_config(run_id, base)
    positions: dict[int, LanePosition] = {}
    with checkpointed_graph(config) as graph:
        for lane in range(config.workers):
            snapshot = graph.get_state(thread_config(run_id, lane))
            round_ = int(snapshot.values.get("round", 0))
            between_rounds = not snapshot.next or snapshot.next[0] in ("prepare_run", "sample_context")
            positions[lane] = {"round": round_, "rounds_done": round_ if between_rounds else max(0, round_ - 1),
                               "best_score": snapshot.values.get("best_score"),
                               "candidate": snapshot.values.get("candidate")}
    return positions


def pending_approvals(run_id: str, base: RunConfig | None = None) -> list[dict[str, Any]]:
    """Approval requests a run is waiting on, each with its `lane` (empty when it is not waiting)."""
    config = stored_config(run_id, base)
    with checkpointed_graph(config) as graph:
        return [request for lane in range(config.workers) for request in _lane_interrupts(graph, run_id, lane)]



def run_status(run: RunRecord, database: Database) -> tuple[str, str | None]:
    """A run's status and its reason, as its record and its lanes' checkpoints (in `database`) tell it together.

    A run started through the thread API is recorded as running by its first step and as finished by its last;
    when a step raises, only its checkpoint keeps the error, and a lane stopped at an approval keeps waiting
    there. So a run recorded as running is `failed` when a lane's last step raised (also when that step was
    answering an approval), and `waiting for approval` when a lane waits on a person.
    """
    if run.status != "running":
        return run.status, run.stop_reason
    graph = build_graph(checkpointer=database.checkpointer())
    waiting: list[str] = []
    for lane in range(int(run.config.get("workers", 1))):
        snapshot = graph.get_state(thread_config(run.id, lane))
        for task in snapshot.tasks:
            if task.error:
                return "failed", f"lane {lane}, step {task.name}: {task.error}"[:REASON_CHARS]
        if snapshot.interrupts:
            waiting.append(f"lane {lane}")
    if waiting:
        return "waiting for approval", ", ".join(waiting)
    return run.status, run.stop_reason
