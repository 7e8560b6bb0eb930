"""What the dashboard's pages show, read from the database the runs write.

Nothing here writes SQL: runs and nodes come from `NodeStore`, a run's figures from the report's `collect_run`,
a run's state and its pending approvals from the runner (which reads the lanes' checkpoints), cognition from
`CognitionStore`, and a node's model calls from the transcript `evoforge show --calls` reads. Every function
returns JSON-ready values, so a page and its polling endpoint show the same thing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from evoforge.cognition.store import CognitionItem, CognitionStore
from evoforge.commands.inspect import cognition_reader, read_calls
from evoforge.config import RunConfig
from evoforge.graph.runner import pending_approvals, run_status
from evoforge.memory.database import Database
from evoforge.memory.nodes import NodeRecord, NodeStore, RunRecord, is_finite_score
from evoforge.report.data import MAX_DIFF_LINES, RunData, code_diff, collect_run, figure_score, is_seed
from evoforge.runtime.services import embedder_for, open_store

log = logging.getLogger(__name__)

WAITING = "waiting for approval"
COGNITION_HITS = 20
"""Search results the cognition page shows."""


def _when(record: RunRecord | NodeRecord) -> str | None:
    return record.created_at.isoformat(timespec="seconds") if record.created_at else None


class DashboardData:
    """Read access to one database (the one `config` names), shared by every request of the app."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def store(self) -> tuple[Database, NodeStore]:
        # opened on the first request, not when the app is built: `langgraph dev` imports the app at start-up,
        # and a database that is not up yet must not stop the thread API from serving
        return open_store(self.config)

    def run_state(self, run: RunRecord) -> tuple[str, str | None]:
        """The run's status as `evoforge status` tells it (a lane's failed step or pending approval counts)."""
        database, _ = self.store()
        return run_status(run, database)

    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first, with its state, node count and best score."""
        _, nodes = self.store()
        rows = []
        for run in nodes.list_runs():
            state, reason = self.run_state(run)
            totals = nodes.run_totals(run.id)
            rows.append({"id": run.id, "task": run.task, "status": state, "reason": reason,
                         "nodes": int(totals.get("nodes") or 0), "best_score": totals.get("best_score"),
                         "created": _when(run)})
        return rows

    def run_live(self, run_id: str) -> dict[str, Any]:
        """Everything the live view draws: state, every node's point, best so far, lineage, funnel, costs.
        KeyError when there is no such run."""
        database, nodes = self.store()
        data = collect_run(nodes, run_id)
        state, reason = run_status(data.run, database)
        best = data.best_node
        improving = set(data.improving_ids)
        points = [_point(node, improving) for node in data.nodes]
        return {
            "run": {"id": data.run.id, "task": data.run.task, "status": state, "reason": reason,
                    "direction": data.direction, "created": _when(data.run),
                    "rounds": data.run.config.get("rounds"), "workers": data.run.config.get("workers", 1)},
            "best": {"id": best.id, "name": best.name, "score": best.score} if best else None,
            "points": points,
            "best_so_far": best_so_far(data),
            "funnel": [{"stage": stage, "count": count} for stage, count in data.funnel()],
            "roles": [{"role": role, **usage} for role, usage in data.usage_by_role().items()],
            "rounds": data.costs_by_round(),
            "approvals": self.approvals_of(data.run.id) if state == WAITING else [],
        }

    def approvals_of(self, run_id: str) -> list[dict[str, Any]]:
        """The approval requests a run waits on, as the engineer asked them (each with its `lane`)."""
        return pending_approvals(run_id, self.config)

    def approvals(self) -> list[dict[str, Any]]:
        """Every pending approval of every run, oldest run first."""
        _, nodes = self.store()
        waiting = [run for run in reversed(nodes.list_runs()) if self.run_state(run)[0] == WAITING]
        return [{**request, "run_id": run.id, "task": run.task}
                for run in waiting for request in self.approvals_of(run.id)]

    def node_detail(self, node_id: str) -> dict[str, Any] | None:
        """A node with its parent's diff, the cognition its Researcher saw and its model calls; None when unknown."""
        _, nodes = self.store()
        node = nodes.get_node(node_id)
        if node is None:
            return None
        parent = nodes.get_node(node.parent_ids[0]) if node.parent_ids else None
        diff = code_diff(parent.code, node.code, f"{parent.id} ({parent.name})", f"{node.id} ({node.name})") \
            if parent else []
        cognition = self._cognition_items(nodes, node.cognition_ids)
        record = asdict(node)
        record.pop("embedding")
        record["created_at"] = _when(node)
        return {
            "node": record,
            "parent": {"id": parent.id, "name": parent.name, "score": parent.score} if parent else None,
            "inspirations": [{"id": other.id, "name": other.name, "score": other.score}
                             for other in nodes.get_nodes(node.inspiration_ids)],
            "diff": diff[:MAX_DIFF_LINES],
            "diff_omitted": max(len(diff) - MAX_DIFF_LINES, 0),
            "cognition": cognition,
            "calls": read_calls(self.config.node_dir(node.run_id, node.id)),
        }

    def _cognition_items(self, nodes: NodeStore, ids: list[str]) -> list[dict[str, Any]]:
        reader = cognition_reader(self.config, nodes)
        found = {item.id: item for item in reader.get(ids)} if reader and ids else {}
        return [_item(found[item_id]) if item_id in found else {"id": item_id, "title": item_id, "kind": "unknown",
                                                               "content": "", "source": ""}
                for item_id in ids]

    def cognition(self, query: str = "", task: str | None = None) -> dict[str, Any]:
        """The cognition base: every item (of `task` and the global ones), or the nearest to `query`."""
        _, nodes = self.store()
        query = query.strip()
        try:
            store = CognitionStore(nodes.database, embedder_for(self.config))
        except ValueError as exc:  # the configured embedder cannot be built (e.g. an endpoint without its key)
            log.warning("cognition page: %s", exc)
            return {"query": query, "task": task, "items": [], "error": str(exc)}
        items = store.search([query], task=task, k=COGNITION_HITS) if query else store.list(task)
        return {"query": query, "task": task, "items": [_item(item) for item in items], "error": None}


def _item(item: CognitionItem) -> dict[str, Any]:
    return asdict(item)


def _point(node: NodeRecord, improving: set[str]) -> dict[str, Any]:
    return {"id": node.id, "name": node.name, "round": node.round, "lane": node.lane, "island": node.island,
            "status": node.status, "score": figure_score(node), "valid": node.valid,
            "parent": node.parent_ids[0] if node.parent_ids else None, "seed": is_seed(node),
            "improving": node.id in improving}


def best_so_far(data: RunData) -> list[dict[str, Any]]:
    """The best valid score reached by the end of each round that has a node, in the task's direction."""
    best: float | None = None
    by_round: dict[int, float] = {}
    for node in sorted(data.nodes, key=lambda node: node.round):
        if node.valid and is_finite_score(node.score):
            assert node.score is not None
            if best is None or data.better(node.score, best):
                best = node.score
        if best is not None:
            by_round[node.round] = best
    return [{"round": round_, "best": value} for round_, value in by_round.items()]
