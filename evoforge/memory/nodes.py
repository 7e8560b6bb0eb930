"""Node memory: every evaluated (or rejected) candidate of a run, the runs themselves, and the
parent selections that sampling policies derive their state from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from pgvector import Vector
from psycopg.types.json import Jsonb

from evoforge.memory.database import Database
from evoforge.memory.fingerprint import code_hash
from evoforge.memory.status import NODE_STATUSES, NodeStatus
from evoforge.tasks.direction import DIRECTIONS, Direction

RUN_STATUSES = ("running", "stopped", "finished", "failed")

_FINITE_SCORE = "score IS NOT NULL AND score > '-Infinity'::float8 AND score < 'Infinity'::float8"
"""Postgres orders NaN above Infinity, so `< 'Infinity'` excludes NaN as well."""
ELIGIBLE = "valid AND " + _FINITE_SCORE
"""Nodes a sampling policy may choose: the predicate of the partial index on eligible nodes (a query
must repeat it to use the index)."""

NEAREST_EF_SEARCH = 100
"""HNSW candidates kept while searching for a candidate's nearest nodes (pgvector's default is 40). Measured
(2026-12-03) with 11 clustered vectors recorded after an index built over 100k random unit vectors (the
benchmarks/overhead.py layout): at 40, 1 to 6 of 30 queries near the cluster returned a random vector (similarity
~0.2, the true nearest ~0.83), because the greedy walk through the random vectors rarely reaches so small a
cluster; at 100, none of 30 did (~2-5 ms a query); with 40 clustered vectors, 40 sufficed. The iterative scan does
not help here: it continues only when the run filter removes rows."""


def check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: expected one of {DIRECTIONS}, got {direction!r}")


def is_finite_score(score: float | None) -> bool:
    return score is not None and math.isfinite(score)


@dataclass(kw_only=True)
class NodeRecord:
    """One evaluated (or rejected) candidate. Ids are deterministic (`<run_id>-r<round>-l<lane>`)."""

    id: str
    run_id: str
    round: int
    lane: int = 0
    parent_ids: list[str] = field(default_factory=list)
    inspiration_ids: list[str] = field(default_factory=list)
    name: str = ""
    motivation: str = ""
    code: str = ""
    diff: str = ""
    status: NodeStatus = "evaluated"
    score: float | None = None
    valid: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    stage_results: list[dict[str, Any]] = field(default_factory=list)
    analysis: str = ""
    error: str | None = None
    feedback: str | None = None
    code_hash: str = ""
    """Filled from `code` when left empty."""
    embedding: list[float] | None = field(default=None, repr=False)
    cognition_ids: list[str] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    llm_seconds: float = 0.0
    eval_seconds: float = 0.0
    resources: dict[str, Any] = field(default_factory=dict)
    policy: str = ""
    """The sampling policy that chose this node's parent."""
    island: int = 0
    """The island (MAP-Elites) whose archive the parent came from; 0 for policies without islands."""
    novelty: dict[str, Any] = field(default_factory=dict)
    """The Novelty-Checker's last verdict: verdict, nearest_id, nearest_name, similarity, reason."""
    created_at: datetime | None = None
    """Set by the database."""

    def __post_init__(self) -> None:
        if self.status not in NODE_STATUSES:
            raise ValueError(f"status: expected one of {NODE_STATUSES}, got {self.status!r}")
        if not self.code_hash:
            self.code_hash = code_hash(self.code)


@dataclass(kw_only=True)
class RunRecord:
    id: str
    task: str
    task_dir: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    """One of RUN_STATUSES."""
    stop_reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    forked_from: str | None = None
    """For a fork (graph/replay.py): the run whose past step it re-ran."""
    forked_at: datetime | None = None
    """For a fork: when that step ran; the origin's nodes recorded by then belong to the fork's memory."""


@dataclass(kw_only=True)
class SelectionRecord:
    """The parent (and inspirations) chosen for one round of one lane."""

    run_id: str
    lane: int
    round: int
    parent_id: str
    inspiration_ids: list[str]
    policy: str
    island: int = 0


_NODE_COLUMNS = tuple(f.name for f in fields(NodeRecord) if f.name != "created_at")
_JSON_COLUMNS = {"metrics", "stage_results", "resources", "novelty"}
_INSERT_NODE = (
    f"INSERT INTO nodes ({', '.join(_NODE_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_NODE_COLUMNS))}) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)


def _node_from_row(row: dict[str, Any]) -> NodeRecord:
    values = {name: row[name] for name in (*_NODE_COLUMNS, "created_at")}
    embedding = values["embedding"]
    values["embedding"] = embedding.to_list() if embedding is not None else None
    return NodeRecord(**values)


class NodeStore:
    """Runs, nodes and selections of one database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def _rows(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        # Binary results: parsing vectors from their text form costs ~0.2 ms per 384-d row.
        with self.database.pool.connection() as conn:
            return conn.execute(sql, params, binary=True).fetchall()

    def _execute(self, sql: str, params: Any = ()) -> int:
        """Run a statement that returns no rows; returns the number of rows it touched."""
        with self.database.pool.connection() as conn:
            return conn.execute(sql, params).rowcount

    def _nodes(self, sql: str, params: tuple[Any, ...] = ()) -> list[NodeRecord]:
        return [_node_from_row(row) for row in self._rows(sql, params)]

    # Runs

    def create_run(self, run_id: str, task: str, task_dir: str, config: dict[str, Any], *,
                   forked_from: str | None = None, forked_at: datetime | None = None) -> RunRecord:
        """Register a run (a fork names its origin and the time of the step it re-runs); an existing run of
        that id is returned unchanged."""
        if (forked_from is None) != (forked_at is None):
            raise ValueError(f"forked_at: a fork needs both its origin and a time, got {forked_from!r}, {forked_at!r}")
        self._execute(
            "INSERT INTO runs (id, task, task_dir, config, forked_from, forked_at) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO NOTHING",
            (run_id, task, str(task_dir), Jsonb(config), forked_from, forked_at),
        )
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._rows("SELECT * FROM runs WHERE id = %s", (run_id,))
        return RunRecord(**rows[0]) if rows else None

    def list_runs(self, task: str | None = None) -> list[RunRecord]:
        rows = self._rows(
            "SELECT * FROM runs WHERE %(task)s::text IS NULL OR task = %(task)s ORDER BY created_at, id",
            {"task": task},
        )
        return [RunRecord(**row) for row in rows]

    def update_run_config(self, run_id: str, config: dict[str, Any]) -> None:
        """Replace a run's stored configuration (a resumed run may change, e.g., its round budget)."""
        if not self._execute(
            "UPDATE runs SET config = %s, updated_at = now() WHERE id = %s", (Jsonb(config), run_id)
        ):
            raise KeyError(f"run_id: no run {run_id!r}")

    def update_run_status(self, run_id: str, status: str, stop_reason: str | None = None) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"status: expected one of {RUN_STATUSES}, got {status!r}")
        updated = self._execute(
            "UPDATE runs SET status = %s, stop_reason = %s, updated_at = now() WHERE id = %s",
            (status, stop_reason, run_id),
        )
        if not updated:
            raise KeyError(f"run_id: no run {run_id!r}")

    def memory_scope(self, run_id: str) -> list[tuple[str, datetime | None]]:
        """The runs whose nodes make up a run's node memory, each with the time up to which its nodes count
        (None: all of them): the run itself, and for a fork its origin's nodes as they stood when the forked
        step ran (a fork of a fork inherits its origin's scope, cut at the earlier time)."""
        scope: list[tuple[str, datetime | None]] = [(run_id, None)]
        cutoff: datetime | None = None
        run = self.get_run(run_id)
        while run is not None and run.forked_from is not None and run.forked_at is not None:
            cutoff = run.forked_at if cutoff is None else min(cutoff, run.forked_at)
            scope.append((run.forked_from, cutoff))
            run = self.get_run(run.forked_from)
        return scope

    def _in_memory_of(self, run_id: str) -> tuple[str, list[Any]]:
        """An SQL condition (and its parameters) selecting the nodes in `run_id`'s memory."""
        conditions: list[str] = []
        params: list[Any] = []
        for member, cutoff in self.memory_scope(run_id):
            conditions.append("run_id = %s" if cutoff is None else "(run_id = %s AND created_at <= %s)")
            params.extend([member] if cutoff is None else [member, cutoff])
        return f"({' OR '.join(conditions)})", params

    # Nodes

    def record_node(self, node: NodeRecord) -> bool:
        """Insert a node unless one with its id exists; returns whether it was inserted."""
        params = []
        for name in _NODE_COLUMNS:
            value = getattr(node, name)
            if name in _JSON_COLUMNS:
                value = Jsonb(value)
            elif name == "embedding" and value is not None:
                value = Vector(value)
            params.append(value)
        return bool(self._rows(_INSERT_NODE, tuple(params)))

    def get_node(self, node_id: str) -> NodeRecord | None:
        nodes = self._nodes("SELECT * FROM nodes WHERE id = %s", (node_id,))
        return nodes[0] if nodes else None

    def get_nodes(self, node_ids: list[str]) -> list[NodeRecord]:
        """The nodes with these ids, in the order given (unknown ids are left out)."""
        by_id = {node.id: node for node in self._nodes("SELECT * FROM nodes WHERE id = ANY(%s)", (node_ids,))}
        return [by_id[node_id] for node_id in node_ids if node_id in by_id]

    def list_nodes(self, run_id: str, *, statuses: list[str] | None = None) -> list[NodeRecord]:
        """A run's nodes ordered by round, then lane."""
        return self._nodes(
            "SELECT * FROM nodes WHERE run_id = %s AND (%s::text[] IS NULL OR status = ANY(%s::text[])) "
            "ORDER BY round, lane, created_at",
            (run_id, statuses, statuses),
        )

    def count_nodes(self, run_id: str) -> int:
        return int(self._rows("SELECT count(*) AS n FROM nodes WHERE run_id = %s", (run_id,))[0]["n"])

    def best_node(self, run_id: str, direction: Direction) -> NodeRecord | None:
        """The best valid node with a finite score; the earliest one on a tie."""
        check_direction(direction)
        order = "DESC" if direction == "maximize" else "ASC"
        nodes = self._nodes(
            f"SELECT * FROM nodes WHERE run_id = %s AND valid AND {_FINITE_SCORE} "
            f"ORDER BY score {order}, round, lane LIMIT 1",
            (run_id,),
        )
        return nodes[0] if nodes else None

    def find_by_code_hash(self, run_id: str, code_hash: str) -> NodeRecord | None:
        """The earliest node in the run's memory (`memory_scope`) whose code hashes the same (see `code_hash`)."""
        in_memory, params = self._in_memory_of(run_id)
        nodes = self._nodes(
            f"SELECT * FROM nodes WHERE {in_memory} AND code_hash = %s ORDER BY round, lane LIMIT 1",
            (*params, code_hash),
        )
        return nodes[0] if nodes else None

    def nearest_nodes(self, run_id: str, embedding: list[float], k: int) -> list[tuple[NodeRecord, float]]:
        """The k nodes in the run's memory (`memory_scope`) most similar to `embedding` (cosine similarity, best
        first)."""
        if k <= 0:
            return []
        query = Vector(embedding)
        in_memory, params = self._in_memory_of(run_id)
        with self.database.pool.connection() as conn, conn.transaction():
            self.database.configure_hnsw_scan(conn, ef_search=max(NEAREST_EF_SEARCH, k))
            rows = conn.execute(
                "SELECT *, 1 - (embedding <=> %s) AS similarity FROM nodes "
                f"WHERE {in_memory} AND embedding IS NOT NULL ORDER BY embedding <=> %s LIMIT %s",
                (query, *params, query, k),
                binary=True,
            ).fetchall()
        return [(_node_from_row(row), float(row["similarity"])) for row in rows]

    def run_totals(self, run_id: str, direction: Direction = "maximize") -> dict[str, Any]:
        """Counts and costs of a run: nodes, valid_nodes, statuses, tokens_in/out, llm/eval seconds,
        best_score (None before any valid finite score)."""
        check_direction(direction)
        best = "max" if direction == "maximize" else "min"
        totals = self._rows(
            "SELECT count(*) AS nodes, count(*) FILTER (WHERE valid) AS valid_nodes, "
            "coalesce(sum(tokens_in), 0)::bigint AS tokens_in, coalesce(sum(tokens_out), 0)::bigint AS tokens_out, "
            "coalesce(sum(llm_seconds), 0) AS llm_seconds, coalesce(sum(eval_seconds), 0) AS eval_seconds, "
            f"{best}(score) FILTER (WHERE valid AND {_FINITE_SCORE}) AS best_score "
            "FROM nodes WHERE run_id = %s",
            (run_id,),
        )[0]
        statuses = self._rows(
            "SELECT status, count(*) AS n FROM nodes WHERE run_id = %s GROUP BY status", (run_id,)
        )
        totals["statuses"] = {row["status"]: row["n"] for row in statuses}
        return totals

    # Selections

    def get_selection(self, run_id: str, lane: int, round: int) -> SelectionRecord | None:
        """What a round was built on, as chosen by its sampling policy (see sampling.py)."""
        rows = self._rows(
            "SELECT run_id, lane, round, parent_id, inspiration_ids, policy, island FROM selections "
            "WHERE run_id = %s AND lane = %s AND round = %s",
            (run_id, lane, round),
        )
        return SelectionRecord(**rows[0]) if rows else None

    def visit_counts(self, run_id: str) -> dict[str, int]:
        """How many times each node was chosen as a parent."""
        rows = self._rows(
            "SELECT parent_id, count(*) AS n FROM selections WHERE run_id = %s GROUP BY parent_id", (run_id,)
        )
        return {row["parent_id"]: row["n"] for row in rows}
