"""What a report shows, gathered from node memory: the run's nodes as they stand (a run still in
progress is read as far as it got) and the figures derived from them."""

from __future__ import annotations

import difflib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from evoforge.cognition.store import CognitionItem
from evoforge.memory.nodes import NodeRecord, NodeStore, RunRecord, is_finite_score
from evoforge.memory.status import NODE_STATUSES
from evoforge.tasks.direction import Direction
from evoforge.tasks.tree import bundle_diff, is_bundle

log = logging.getLogger(__name__)

FUNNEL_STAGES = ("generated", "static-rejected", "duplicate", "early-rejected", "runtime-failed", "evaluated",
                 "improved")
FUNNEL_GROUP = {
    "static_rejected": "static-rejected",
    "parse_failed": "static-rejected",
    "duplicate": "duplicate",
    "early_rejected": "early-rejected",
    "rejected_by_human": "early-rejected",
    "runtime_failed": "runtime-failed",
    "timeout": "runtime-failed",
    "resource_limit": "runtime-failed",
    "invalid": "runtime-failed",
    "evaluator_error": "runtime-failed",
    "evaluated": "evaluated",
}
"""The funnel stage each node status falls into: unparseable replies count as rejected before evaluation,
a human rejection of a costly stage as an early rejection, and every failed execution as runtime-failed."""

MAX_DIFF_LINES = 400


class CognitionLookup(Protocol):
    def get(self, ids: list[str]) -> list[CognitionItem]: ...


def is_seed(node: NodeRecord) -> bool:
    """The seed program's evaluation (round 0, no parent): the baseline, not a candidate."""
    return node.round == 0 and not node.parent_ids


def is_failure(node: NodeRecord) -> bool:
    return node.status != "evaluated"


def figure_score(node: NodeRecord) -> float | None:
    """The score a figure places a node at, or None to show it by its status instead. A node a person
    rejected keeps the score of the cheaper stage it passed, but the rejection was no verdict on that score."""
    if node.status == "rejected_by_human" or not is_finite_score(node.score):
        return None
    return node.score


def code_diff(old: str, new: str, old_name: str, new_name: str) -> list[str]:
    """Unified diff lines (without line ends) from `old` to `new`; file by file for two tree programs."""
    if is_bundle(old) and is_bundle(new):
        return bundle_diff(old, new, old_name, new_name)
    return list(difflib.unified_diff(old.splitlines(), new.splitlines(), fromfile=old_name, tofile=new_name,
                                     lineterm=""))


@dataclass
class TopNode:
    node: NodeRecord
    parent: NodeRecord | None
    diff: list[str]
    """Unified diff against the parent (at most MAX_DIFF_LINES lines)."""
    diff_omitted: int
    """Lines of the diff left out."""


@dataclass
class CognitionUse:
    item: CognitionItem
    improving_node_ids: list[str]
    """Improving nodes whose Researcher saw this item."""
    used_by: int
    """All nodes whose Researcher saw it."""


@dataclass
class RunData:
    """A run's nodes (ordered by round, lane, creation) and what the report derives from them."""

    run: RunRecord
    direction: Direction
    nodes: list[NodeRecord]
    cognition: dict[str, CognitionItem] = field(default_factory=dict)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self.by_id = {node.id: node for node in self.nodes}
        self.improving_ids = self._improvements()

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b

    def _improvements(self) -> list[str]:
        """Candidates that set a new best at the time they were recorded (the seed is the baseline)."""
        best: float | None = None
        improving = []
        for node in sorted(self.nodes, key=_recorded_order):
            if not node.valid or not is_finite_score(node.score):
                continue
            assert node.score is not None
            if best is None or self.better(node.score, best):
                best = node.score
                if not is_seed(node):
                    improving.append(node.id)
        return improving

    @property
    def best_node(self) -> NodeRecord | None:
        valid = [n for n in self.nodes if n.valid and is_finite_score(n.score)]
        if not valid:
            return None
        sign = -1 if self.direction == "maximize" else 1
        return min(valid, key=lambda n: (sign * (n.score or 0.0), n.round, n.lane))

    def funnel(self) -> list[tuple[str, int]]:
        """Candidate counts per funnel stage; statuses the report does not know go into "other"."""
        counts: dict[str, int] = defaultdict(int)
        for node in self.nodes:
            if is_seed(node):
                continue
            counts["generated"] += 1
            stage = FUNNEL_GROUP.get(node.status)
            if stage is None:
                log.warning("node %s has status %r that the report's funnel does not know", node.id, node.status)
                stage = "other"
            counts[stage] += 1
        counts["improved"] = len(self.improving_ids)
        stages = [(stage, counts[stage]) for stage in FUNNEL_STAGES]
        return stages + ([("other", counts["other"])] if counts["other"] else [])

    def status_counts(self) -> dict[str, int]:
        counts = {status: 0 for status in NODE_STATUSES}
        for node in self.nodes:
            counts[node.status] = counts.get(node.status, 0) + 1
        return {status: n for status, n in counts.items() if n}

    def costs_by_round(self) -> list[dict[str, Any]]:
        """Per round: nodes, tokens in/out, LLM and evaluation seconds, CPU seconds, peak memory (MB)."""
        rounds: dict[int, dict[str, Any]] = {}
        for node in self.nodes:
            row = rounds.setdefault(node.round, {"round": node.round, "nodes": 0, "tokens_in": 0, "tokens_out": 0,
                                                 "llm_seconds": 0.0, "eval_seconds": 0.0, "cpu_s": 0.0,
                                                 "peak_memory_mb": 0.0})
            row["nodes"] += 1
            row["tokens_in"] += node.tokens_in
            row["tokens_out"] += node.tokens_out
            row["llm_seconds"] += node.llm_seconds
            row["eval_seconds"] += node.eval_seconds
            row["cpu_s"] += float(node.resources.get("cpu_s") or 0.0)
            row["peak_memory_mb"] = max(row["peak_memory_mb"], float(node.resources.get("peak_memory_mb") or 0.0))
        return [rounds[r] for r in sorted(rounds)]

    def usage_by_role(self) -> dict[str, dict[str, float]]:
        """LLM use per agent role over the run: tokens_in, tokens_out, seconds, calls."""
        roles: dict[str, dict[str, float]] = {}
        for node in self.nodes:
            for role, usage in (node.resources.get("usage") or {}).items():
                row = roles.setdefault(role, {"tokens_in": 0, "tokens_out": 0, "seconds": 0.0, "calls": 0})
                for key in row:
                    row[key] += usage.get(key, 0) or 0
        return dict(sorted(roles.items()))

    def cognition_uses(self) -> list[CognitionUse]:
        """Cognition items seen by improving nodes, most used by them first."""
        used_by: dict[str, int] = defaultdict(int)
        for node in self.nodes:
            for item_id in set(node.cognition_ids):
                used_by[item_id] += 1
        improving: dict[str, list[str]] = defaultdict(list)
        for node_id in self.improving_ids:
            for item_id in dict.fromkeys(self.by_id[node_id].cognition_ids):
                improving[item_id].append(node_id)
        uses = [CognitionUse(self.cognition[item_id], node_ids, used_by[item_id])
                for item_id, node_ids in improving.items() if item_id in self.cognition]
        return sorted(uses, key=lambda use: (-len(use.improving_node_ids), -use.used_by, use.item.id))

    def top_nodes(self, count: int) -> list[TopNode]:
        """The `count` best valid nodes, each with its diff against its (first) parent."""
        sign = -1 if self.direction == "maximize" else 1
        valid = [n for n in self.nodes if n.valid and is_finite_score(n.score)]
        ranked = sorted(valid, key=lambda n: (sign * (n.score or 0.0), n.round, n.lane))[:count]
        top = []
        for node in ranked:
            parent = self.by_id.get(node.parent_ids[0]) if node.parent_ids else None
            lines = code_diff(parent.code, node.code, parent.name, node.name) if parent else []
            top.append(TopNode(node, parent, lines[:MAX_DIFF_LINES], max(len(lines) - MAX_DIFF_LINES, 0)))
        return top


def _recorded_order(node: NodeRecord) -> tuple[Any, ...]:
    created = node.created_at.timestamp() if node.created_at else float("inf")
    return (created, node.round, node.lane)


def collect_run(nodes: NodeStore, run_id: str, *, cognition: CognitionLookup | None = None,
                direction: Direction | None = None) -> RunData:
    """Read a run's record, its nodes and the cognition items they used. `direction` defaults to the
    task's (maximize when the task directory can no longer be loaded)."""
    run = nodes.get_run(run_id)
    if run is None:
        raise KeyError(f"run_id: no run {run_id!r} in {nodes.database.url}")
    if direction is None:
        direction = _task_direction(run)
    records = nodes.list_nodes(run_id)
    items: dict[str, CognitionItem] = {}
    if cognition is not None:
        wanted = list(dict.fromkeys(item_id for node in records for item_id in node.cognition_ids))
        items = {item.id: item for item in cognition.get(wanted)} if wanted else {}
    return RunData(run=run, direction=direction, nodes=records, cognition=items)


def _task_direction(run: RunRecord) -> Direction:
    from evoforge.tasks.spec import TaskError, load_task

    try:
        return load_task(run.task_dir or run.task).score.direction
    except (TaskError, OSError) as exc:
        log.warning("run %s: cannot load task %r (%s); scores are read as maximized", run.id, run.task, exc)
        return "maximize"
