"""A run's eligible nodes (valid, finite score) in the task's order, read in SQL so that sampling stays
fast at 100k nodes.

- A scalar task orders by score (direction-aware; earliest node first on a tie). The partial index on
  eligible nodes serves `top`; the narrow `node_stats` table (kept by triggers) serves counting,
  seeded random picks and UCB1.
- A task with several objectives orders by Pareto front and crowding distance, or by its declared
  lexicographic order; nodes missing an objective are not eligible. The objective values of the
  run's valid nodes are read once per `Ranking` (a narrow query) and ordered in Python.

Every method works on the connection it was given, so a whole selection runs in one transaction.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Collection
from typing import Any

import psycopg

from evoforge.memory.nodes import ELIGIBLE, NodeRecord, _node_from_row
from evoforge.memory.pareto import Point, better, objective_order, signed_objectives
from evoforge.memory.ucb import ucb1_choice
from evoforge.tasks.spec import Score

DIVERSITY_POOL = 100
"""The diverse inspirations come from this many of the run's best nodes: at 100k nodes, the least
similar node of the whole run is likely an outlier nobody should build on."""


def fetch_nodes(conn: psycopg.Connection[Any], ids: list[str]) -> list[NodeRecord]:
    """The nodes with these ids, in the order given (unknown ids are left out)."""
    if not ids:
        return []
    rows = conn.execute("SELECT * FROM nodes WHERE id = ANY(%s)", (ids,), binary=True).fetchall()
    by_id = {row["id"]: _node_from_row(row) for row in rows}
    return [by_id[node_id] for node_id in ids if node_id in by_id]


def seed_node_id(conn: psycopg.Connection[Any], run_id: str) -> str | None:
    """The run's first node (its seed), valid or not."""
    row = conn.execute(
        "SELECT id FROM nodes WHERE run_id = %s ORDER BY round, lane, id LIMIT 1", (run_id,)
    ).fetchone()
    return row["id"] if row else None


class Ranking:
    """The eligible nodes of one run, best first by the task's `score` declaration."""

    def __init__(self, conn: psycopg.Connection[Any], run_id: str, score: Score) -> None:
        self.conn = conn
        self.run_id = run_id
        self.score = score
        self.maximize = score.direction == "maximize"
        self._order: list[str] | None = None  # objective mode: eligible ids, best first
        self._count: int | None = None  # stable: the caller holds the run's sampling lock

    @property
    def multi_objective(self) -> bool:
        return bool(self.score.objectives)

    def _ordered(self) -> list[str]:
        if self._order is None:
            rows = self.conn.execute(
                f"SELECT id, score, (SELECT jsonb_object_agg(name, metrics -> name) FROM unnest(%s::text[]) AS name) "
                f"AS values FROM nodes WHERE run_id = %s AND {ELIGIBLE} ORDER BY round, lane, id",
                ([objective.metric for objective in self.score.objectives], self.run_id),
            ).fetchall()
            ids: list[str] = []
            points: list[Point] = []
            for row in rows:
                point = signed_objectives(self.score, row["score"], row["values"] or {})
                if point is not None:
                    ids.append(row["id"])
                    points.append(point)
            self._order = [ids[i] for i in objective_order(points, self.score.order == "lexicographic")]
        return self._order

    def count(self) -> int:
        if self.multi_objective:
            return len(self._ordered())
        if self._count is None:
            row = self.conn.execute(
                "SELECT eligible FROM run_stats WHERE run_id = %s", (self.run_id,)
            ).fetchone()
            self._count = int(row["eligible"]) if row else 0
        return self._count

    def top(self, k: int, exclude: Collection[str] = ()) -> list[str]:
        """The ids of the best k eligible nodes not in `exclude`."""
        if k <= 0:
            return []
        if self.multi_objective:
            return [node_id for node_id in self._ordered() if node_id not in exclude][:k]
        order = "DESC" if self.maximize else "ASC"
        rows = self.conn.execute(
            f"SELECT id FROM nodes WHERE run_id = %s AND {ELIGIBLE} AND NOT (id = ANY(%s)) "
            f"ORDER BY score {order}, round, lane, id LIMIT %s",
            (self.run_id, list(exclude), k),
        ).fetchall()
        return [row["id"] for row in rows]

    def sample(self, rng: random.Random, k: int, exclude: Collection[str] = ()) -> list[str]:
        """Up to k distinct eligible ids not in `exclude`, uniformly at random (reproducible with `rng`)."""
        if self.multi_objective:
            pool = sorted(node_id for node_id in self._ordered() if node_id not in exclude)
            return rng.sample(pool, min(k, len(pool)))
        # eligible nodes are numbered 1..count as they arrive, so a uniform draw is an index lookup
        total = self.count()
        numbers = rng.sample(range(1, total + 1), min(total, k + len(exclude)))
        rows = self.conn.execute(
            "SELECT eligible_seq, node_id FROM node_stats WHERE run_id = %s AND eligible AND eligible_seq = ANY(%s)",
            (self.run_id, numbers),
        ).fetchall()
        by_number = {row["eligible_seq"]: row["node_id"] for row in rows}
        drawn = [by_number[number] for number in numbers if number in by_number]
        return [node_id for node_id in drawn if node_id not in exclude][:k]

    def ucb1(self, c: float) -> str | None:
        """UCB1's choice: every eligible node once (best first), then the highest upper confidence bound."""
        if self.multi_objective:
            return self._ucb1_by_rank(c)
        return ucb1_choice(self.conn, self.run_id, maximize=self.maximize, c=c)

    def _ucb1_by_rank(self, c: float) -> str | None:
        """UCB1 with rank-based rewards: 1 for the best node, 0 for the last (and for failed children)."""
        order = self._ordered()
        if not order:
            return None
        rows = self.conn.execute(
            "SELECT node_id, visits FROM node_stats WHERE run_id = %s AND node_id = ANY(%s)",
            (self.run_id, order),
        ).fetchall()
        visits = {row["node_id"]: int(row["visits"]) for row in rows}
        unvisited = [node_id for node_id in order if visits.get(node_id, 0) == 0]
        if unvisited:
            return unvisited[0]
        reward = {node_id: 1.0 - i / max(len(order) - 1, 1) for i, node_id in enumerate(order)}
        child_rewards: dict[str, list[float]] = defaultdict(list)
        for row in self.conn.execute(
            "SELECT parent_ids[1] AS parent, id FROM nodes WHERE run_id = %s AND cardinality(parent_ids) > 0",
            (self.run_id,),
        ):
            child_rewards[row["parent"]].append(reward.get(row["id"], 0.0))
        total = sum(visits[node_id] for node_id in order)

        def upper_bound(node_id: str) -> float:
            rewards = [reward[node_id], *child_rewards[node_id]]
            return sum(rewards) / len(rewards) + c * math.sqrt(math.log(total) / visits[node_id])

        return max(order, key=lambda node_id: (upper_bound(node_id), reward[node_id]))

    def least_similar(self, parent_id: str, k: int, exclude: Collection[str]) -> list[str]:
        """Up to k of the best `DIVERSITY_POOL` eligible nodes not in `exclude` (nor the parent) whose
        embeddings are least similar to the parent's: different ideas that still scored well. Exact
        cosine distances over the pool; nodes without an embedding are left out."""
        if k <= 0:
            return []
        pool = self.top(DIVERSITY_POOL, exclude={parent_id, *exclude})
        rows = self.conn.execute(
            "SELECT n.id FROM nodes n, nodes p WHERE p.id = %s AND n.id = ANY(%s) AND n.embedding IS NOT NULL "
            "ORDER BY n.embedding <=> p.embedding DESC, n.id LIMIT %s",
            (parent_id, pool, k),
        ).fetchall()
        return [row["id"] for row in rows]

    def better(self, a: NodeRecord, b: NodeRecord) -> bool:
        """Whether node `a` should replace node `b` as an elite."""
        if not self.multi_objective:
            assert a.score is not None and b.score is not None
            return a.score > b.score if self.maximize else a.score < b.score
        point_a = signed_objectives(self.score, a.score, a.metrics)
        point_b = signed_objectives(self.score, b.score, b.metrics)
        if point_a is None or point_b is None:
            return point_b is None and point_a is not None
        return better(point_a, point_b, self.score.order == "lexicographic")

    def sort(self, nodes: list[NodeRecord]) -> list[NodeRecord]:
        """`nodes` (eligible ones) best first, by the same order as the whole run."""
        earliest = sorted(nodes, key=lambda node: (node.round, node.lane, node.id))
        if not self.multi_objective:
            sign = -1.0 if self.maximize else 1.0
            return sorted(earliest, key=lambda node: sign * (node.score or 0.0))
        points = [signed_objectives(self.score, node.score, node.metrics) for node in earliest]
        placed = [(node, point) for node, point in zip(earliest, points, strict=True) if point is not None]
        order = objective_order([point for _, point in placed], self.score.order == "lexicographic")
        return [placed[i][0] for i in order] + [
            node for node, point in zip(earliest, points, strict=True) if point is None
        ]
