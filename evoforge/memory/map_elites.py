"""MAP-Elites with islands: per island, a grid of feature cells each holding its best node (the elite).

- A node enters the archive of the island that produced it, in the cell of its feature values
  (evoforge/memory/features.py), replacing the elite there only if it is better by the task's order.
- Each island holds at most `archive_size` elites; beyond it the worst are dropped.
- Every `migration_interval` rounds, each island copies its `migration_size` best elites to the next
  island of the ring (0 → 1 → … → 0), where they compete for their cell like any newcomer.
- Round r of lane l samples island (r + l) mod islands: the parent is an elite drawn uniformly over
  the island's occupied cells; inspirations are the island's best other elites, then random ones.
  An empty island starts from the run's best node.

The archive lives in the `elites` table and migrations in `migrations`, so a resumed run continues
with the same grids. The first time a run is sampled this way, its earlier nodes are taken in.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from evoforge.config import SamplingConfig
from evoforge.memory.features import cell_of, feature_values
from evoforge.memory.nodes import ELIGIBLE, NodeRecord, _node_from_row
from evoforge.memory.ranking import Ranking, fetch_nodes, seed_node_id

logger = logging.getLogger(__name__)
READY_STATE = "map_elites"
"""policy_state entry written once the run's earlier nodes have been taken into the archive."""


def island_for(round_: int, lane: int, islands: int) -> int:
    return (round_ + lane) % islands


class Archive:
    """The MAP-Elites archive of one run, read and changed through one connection (one transaction)."""

    def __init__(
        self, conn: psycopg.Connection[Any], run_id: str, settings: SamplingConfig, ranking: Ranking
    ) -> None:
        self.conn = conn
        self.run_id = run_id
        self.settings = settings
        self.ranking = ranking
        self._reference: list[float] | None = None
        self._reference_read = False

    def _seed_embedding(self) -> list[float] | None:
        """The seed's embedding, the reference point of the `diversity` feature."""
        if not self._reference_read:
            seed_id = seed_node_id(self.conn, self.run_id)
            row = self.conn.execute(
                "SELECT embedding FROM nodes WHERE id = %s", (seed_id,), binary=True
            ).fetchone()
            embedding = row["embedding"] if row else None
            self._reference = embedding.to_list() if embedding is not None else None
            self._reference_read = True
        return self._reference

    def ensure_ready(self, round_: int) -> None:
        """Take the run's earlier nodes in, once (they were recorded before this policy sampled)."""
        done = self.conn.execute(
            "SELECT 1 FROM policy_state WHERE run_id = %s AND name = %s", (self.run_id, READY_STATE)
        ).fetchone()
        if done:
            return
        best: dict[tuple[int, tuple[int, ...]], tuple[NodeRecord, list[float]]] = {}
        rows = self.conn.execute(
            f"SELECT * FROM nodes WHERE run_id = %s AND {ELIGIBLE} ORDER BY round, lane, id",
            (self.run_id,),
            binary=True,
        )
        for row in rows:
            node = _node_from_row(row)
            placed = self._place(node)
            if placed is None:
                continue
            island, cell, features = placed
            held = best.get((island, tuple(cell)))
            if held is None or self.ranking.better(node, held[0]):
                best[(island, tuple(cell))] = (node, features)
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO elites (run_id, island, cell, node_id, features, origin_island, added_round) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [
                    (self.run_id, island, list(cell), node.id, features, island, round_)
                    for (island, cell), (node, features) in best.items()
                ],
            )
        for island in {island for island, _ in best}:
            self._bound(island)
        self.conn.execute(
            "INSERT INTO policy_state (run_id, name, value) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (self.run_id, READY_STATE, Jsonb({"round": round_, "nodes": len(best)})),
        )

    def _place(self, node: NodeRecord) -> tuple[int, list[int], list[float]] | None:
        features = feature_values(node, self.settings.features, self._seed_embedding())
        if features is None:
            logger.debug("node %s has no value for some feature of %s", node.id, self.settings.features)
            return None
        return node.island % self.settings.islands, cell_of(features, self.settings.features), features

    def add(self, node: NodeRecord, round_: int, island: int | None = None) -> bool:
        """Offer `node` to an island's archive (its own island by default); returns whether it is now an
        elite there. Ineligible nodes and nodes without feature values are refused."""
        if not (node.valid and node.score is not None and math.isfinite(node.score)):
            return False
        placed = self._place(node)
        if placed is None:
            return False
        own_island, cell, features = placed
        target = own_island if island is None else island
        row = self.conn.execute(
            "SELECT node_id FROM elites WHERE run_id = %s AND island = %s AND cell = %s::integer[] FOR UPDATE",
            (self.run_id, target, cell),
        ).fetchone()
        if row is not None:
            if row["node_id"] == node.id:
                return True
            incumbent = fetch_nodes(self.conn, [row["node_id"]])
            if incumbent and not self.ranking.better(node, incumbent[0]):
                return False
        self.conn.execute(
            "INSERT INTO elites (run_id, island, cell, node_id, features, origin_island, added_round) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id, island, cell) DO UPDATE SET "
            "node_id = excluded.node_id, features = excluded.features, origin_island = excluded.origin_island, "
            "added_round = excluded.added_round",
            (self.run_id, target, cell, node.id, features, own_island, round_),
        )
        return node.id in self._bound(target)

    def _bound(self, island: int) -> list[str]:
        """Drop the island's worst elites beyond `archive_size`; returns the ids kept."""
        row = self.conn.execute(
            "SELECT array_agg(node_id) AS ids FROM elites WHERE run_id = %s AND island = %s",
            (self.run_id, island),
        ).fetchone()
        ids: list[str] = (row["ids"] if row else None) or []
        if len(ids) <= self.settings.archive_size:
            return ids
        elites = self.elites(island)
        kept = elites[: self.settings.archive_size]
        dropped = [node.id for node in elites[self.settings.archive_size :]]
        if dropped:
            self.conn.execute(
                "DELETE FROM elites WHERE run_id = %s AND island = %s AND node_id = ANY(%s)",
                (self.run_id, island, dropped),
            )
        return [node.id for node in kept]

    def elites(self, island: int) -> list[NodeRecord]:
        """The island's elites, best first."""
        rows = self.conn.execute(
            "SELECT node_id FROM elites WHERE run_id = %s AND island = %s ORDER BY cell",
            (self.run_id, island),
        ).fetchall()
        return self.ranking.sort(fetch_nodes(self.conn, [row["node_id"] for row in rows]))

    def migrate(self, round_: int) -> list[dict[str, Any]]:
        """At a migration round, copy each island's best elites to the next island (once per round);
        returns what moved: node, from, to, and whether it took a cell there."""
        settings = self.settings
        if settings.islands < 2 or settings.migration_size == 0 or round_ % settings.migration_interval:
            return []
        claimed = self.conn.execute(
            "INSERT INTO migrations (run_id, round) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING round",
            (self.run_id, round_),
        ).fetchone()
        if claimed is None:
            return []
        # Every island's emigrants are chosen before any arrive, so a node moves one step per migration.
        emigrants = {
            island: self.elites(island)[: settings.migration_size] for island in range(settings.islands)
        }
        moved: list[dict[str, Any]] = []
        for source, nodes in emigrants.items():
            target = (source + 1) % settings.islands
            for node in nodes:
                settled = self.add(node, round_, island=target)
                moved.append({"node_id": node.id, "from": source, "to": target, "settled": settled})
        self.conn.execute(
            "UPDATE migrations SET moved = %s WHERE run_id = %s AND round = %s",
            (Jsonb(moved), self.run_id, round_),
        )
        logger.info("run %s round %d: migration moved %s", self.run_id, round_, moved)
        return moved

    def choose(
        self, island: int, rng: random.Random, n_inspirations: int, round_: int
    ) -> tuple[str, list[str]]:
        """Parent and inspiration ids drawn from the island's grid (the run has an eligible node)."""
        elites = self.elites(island)
        if not elites:
            [start] = fetch_nodes(self.conn, self.ranking.top(1))
            self.add(start, round_, island=island)
            return start.id, []
        # one elite per occupied cell: a uniform draw over elites is a uniform draw over cells
        parent = rng.choice(sorted(elites, key=lambda node: node.id))
        others = [node for node in elites if node.id != parent.id]
        n_top = math.ceil(n_inspirations / 2)
        top = others[:n_top]
        rest = sorted(others[n_top:], key=lambda node: node.id)
        picked = rng.sample(rest, min(n_inspirations - len(top), len(rest)))
        return parent.id, [node.id for node in [*top, *picked]]
