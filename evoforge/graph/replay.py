"""Time travel over a run's checkpoints: list the steps a run took, inspect one, re-run from one as a fork.

Why a fork is a run of its own: node ids are `<run id>-r<round>-l<lane>` and written with ON CONFLICT DO
NOTHING, so a step re-run inside the original thread would record nothing (the first write wins) and would
move the original thread's head. A fork copies the state a past step was given into a new thread under a new
run id (`<run id>-fork-<hex>`), renames the round's node, and stops once that round is recorded. The original
run's nodes, run record and checkpoints are only read. The fork's node keeps its parents (nodes of the
original run), and its insights join the task's cognition with the fork's node as their source, like any run's.
The fork's record names its origin and when the forked step ran: its node memory (what the Novelty-Checker
compares with) is the origin's nodes as they stood then, plus its own (NodeStore.memory_scope).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from langgraph.types import StateSnapshot

from evoforge.agents.recorder import node_id_for
from evoforge.config import Role, RunConfig, load_config
from evoforge.graph.builder import ResearchGraph
from evoforge.graph.runner import RunOutcome, UpdateHandler, checkpointed_graph, stored_config, thread_config
from evoforge.runtime.services import get_services
from evoforge.tasks.spec import load_task

REPLAYABLE_NODES = ("propose_candidate", "check_candidate", "check_novelty", "run_evaluation", "debug_candidate",
                    "analyze_result", "record_node")
"""Steps a fork can start from: those after a round's context was sampled (the sampling policies' state —
visit counts, pools, archives — is kept per run, and a fork has none of its own)."""
ROLE_OF_NODE: dict[str, Role] = {"propose_candidate": "researcher", "check_candidate": "static_review",
                "check_novelty": "novelty_judge", "debug_candidate": "debugger", "analyze_result": "analyzer"}
"""The agent role whose model a `model` override replaces when a fork starts at that step."""
_FIXED_SETTINGS = ("database_url", "state_dir", "task")


class ReplayError(ValueError):
    """A step that cannot be found or forked; the message names what was asked for."""


@dataclass
class Step:
    """One step of a run: the checkpoint taken before a node ran, and what the node wrote."""

    checkpoint_id: str
    step: int
    round: int
    """The round the node worked on."""
    node: str
    candidate: str | None
    """The round's candidate as the node found it."""
    wrote: dict[str, Any] | None
    """The node's state update; None while it has not finished (e.g. it waits for an approval)."""
    asked: list[dict[str, Any]]
    """Approval requests the node raised (answered once `wrote` is set)."""
    created_at: str | None
    given: dict[str, Any] | None = None
    """The whole state the node was given (filled by `inspect_step` only)."""


def run_lineage(graph: ResearchGraph, run_id: str, lane: int = 0) -> list[StateSnapshot]:
    """The checkpoints of a run's thread from the first to the current one.

    Only the current head's ancestors count, so branches made inside the thread (e.g. a fork from Studio)
    do not mix into the run's history.
    """
    history = list(graph.get_state_history(thread_config(run_id, lane)))
    if not history:
        raise ReplayError(f"run_id: no checkpoints for run {run_id!r} (lane {lane})")
    by_id = {snapshot.config["configurable"]["checkpoint_id"]: snapshot for snapshot in history}
    chain: list[StateSnapshot] = []
    current: StateSnapshot | None = history[0]
    while current is not None:
        chain.append(current)
        parent = current.parent_config
        current = by_id.get(parent["configurable"]["checkpoint_id"]) if parent else None
    return chain[::-1]


def _step(snapshot: StateSnapshot) -> Step | None:
    if len(snapshot.next) != 1 or snapshot.next[0].startswith("__"):
        return None
    node = snapshot.next[0]
    values = snapshot.values
    round_ = int(values.get("round", 0)) + (1 if node == "sample_context" else 0)
    task = snapshot.tasks[0] if snapshot.tasks else None
    return Step(
        checkpoint_id=snapshot.config["configurable"]["checkpoint_id"],
        step=int(snapshot.metadata.get("step", -1)) if snapshot.metadata else -1,
        round=round_,
        node=node,
        candidate=(values.get("candidate") or {}).get("name"),
        wrote=task.result if task is not None and isinstance(task.result, dict) else None,
        asked=[interrupt.value for interrupt in snapshot.interrupts],
        created_at=snapshot.created_at,
    )


def steps_of(lineage: list[StateSnapshot]) -> list[Step]:
    return [step for step in map(_step, lineage) if step is not None]


def history(run_id: str, *, lane: int = 0, base: RunConfig | None = None) -> list[Step]:
    """Every step the run (lane) took, oldest first."""
    with checkpointed_graph(stored_config(run_id, base)) as graph:
        return steps_of(run_lineage(graph, run_id, lane))


def _locate(lineage: list[StateSnapshot], round_: int, node: str, occurrence: int) -> int:
    """Index in `lineage` of the checkpoint before the `occurrence`-th run of `node` in round `round_`."""
    matches = [i for i, snapshot in enumerate(lineage)
               if (step := _step(snapshot)) is not None and step.round == round_ and step.node == node]
    if not matches:
        raise ReplayError(f"round {round_}: step {node!r} never ran in that round")
    if not 0 <= occurrence < len(matches):
        raise ReplayError(f"occurrence: {node!r} ran {len(matches)} time(s) in round {round_}, got {occurrence}")
    return matches[occurrence]


def inspect_step(run_id: str, round_: int, node: str, *, occurrence: int = 0, lane: int = 0,
                 base: RunConfig | None = None) -> Step:
    """One past step with the whole state it was given and the update it wrote."""
    with checkpointed_graph(stored_config(run_id, base)) as graph:
        lineage = run_lineage(graph, run_id, lane)
        snapshot = lineage[_locate(lineage, round_, node, occurrence)]
    step = _step(snapshot)
    assert step is not None
    step.given = dict(snapshot.values)
    return step


def model_override(config: RunConfig, node: str, model: str) -> dict[str, Any]:
    """Overrides that give the agent of `node` another model name on the same endpoint."""
    role = ROLE_OF_NODE.get(node)
    if role is None:
        raise ReplayError(f"model: step {node!r} calls no model; steps that do: {sorted(ROLE_OF_NODE)}")
    current = config.model_for(role).model_dump(mode="json")
    return {"roles": {role: {**current, "model": model}}}


def merge_overrides(into: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`into` with `overrides` applied key by key, nested mappings merged rather than replaced."""
    merged = dict(into)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged


def fork_config(config: RunConfig, round_: int, overrides: dict[str, Any]) -> RunConfig:
    """The original run's configuration with `overrides` applied, ending after round `round_`, one lane."""
    fixed = sorted(set(overrides) & set(_FIXED_SETTINGS))
    if fixed:
        raise ReplayError(f"overrides: a fork keeps the original run's {', '.join(fixed)}; got {overrides!r}")
    data = config.model_dump(mode="json")
    for role in overrides.get("roles") or {}:
        # a role override starts from the model that role used, so `{model: x}` changes only the name
        data["roles"].setdefault(role, data["llm"])
    data = merge_overrides(data, overrides)
    data.update(rounds=round_, workers=1)
    return load_config(None, **data)


def new_fork_id(run_id: str) -> str:
    return f"{run_id}-fork-{secrets.token_hex(3)}"


def fork_run(run_id: str, round_: int, *, from_node: str = "analyze_result",
             overrides: dict[str, Any] | None = None, occurrence: int = 0, lane: int = 0,
             fork_id: str | None = None, base: RunConfig | None = None,
             on_update: UpdateHandler | None = None) -> RunOutcome:
    """Re-run round `round_` of a run from the checkpoint before `from_node`, as a new run.

    `overrides` change the configuration (e.g. `{"roles": {"analyzer": {"model": ...}}}`). The fork runs to
    the end of that round, or until it waits for an approval (answer it with `approve(fork id, ...)`).
    """
    if from_node not in REPLAYABLE_NODES:
        raise ReplayError(f"from_node: expected one of {list(REPLAYABLE_NODES)}, got {from_node!r}")
    original = stored_config(run_id, base)
    config = fork_config(original, round_, overrides or {})
    fork_id = fork_id or new_fork_id(run_id)
    nodes = get_services(config).nodes  # checks the fork's settings (e.g. a replaced model) before anything is written
    if nodes.get_run(fork_id) is not None:
        raise ReplayError(f"fork_id: a run {fork_id!r} exists already")
    with checkpointed_graph(config) as graph:
        lineage = run_lineage(graph, run_id, lane)
        index = _locate(lineage, round_, from_node, occurrence)
        if index == 0:
            raise ReplayError(f"run {run_id!r} starts at {from_node!r} (it is a fork): fork its original run instead")
        # update_state as the node that produced this checkpoint re-applies its routing, which leads to from_node
        writer = lineage[index - 1].next[0]
        values = {**lineage[index].values, "run_id": fork_id, "lane": 0,
                  "node_id": node_id_for(fork_id, round_, 0), "stop_reason": None}
        thread = thread_config(fork_id)
        graph.update_state(thread, values, as_node=writer)
        routed_to = graph.get_state(thread).next
        if routed_to != (from_node,):
            raise ReplayError(f"the fork of {run_id!r} would start at {routed_to}, not {from_node!r}; nothing ran")
        task = load_task(config.task)
        # the memory the step saw: the original's nodes recorded before its checkpoint was written
        step_time = lineage[index].created_at
        if step_time is None:
            raise ReplayError(f"the checkpoint before {from_node!r} of run {run_id!r} has no time; nothing ran")
        nodes.create_run(fork_id, task.name, str(task.root), config.model_dump(mode="json"),
                         forked_from=run_id, forked_at=datetime.fromisoformat(step_time))
        for chunk in graph.stream(None, thread, context=config, stream_mode="updates", durability="sync"):
            for node_name, update in chunk.items():
                if on_update is not None and isinstance(update, dict):
                    on_update(node_name, update)
        snapshot = graph.get_state(thread)
    return RunOutcome(fork_id, dict(snapshot.values), [interrupt.value for interrupt in snapshot.interrupts])
