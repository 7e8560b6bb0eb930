"""Sampling policies: which node a round builds on (the parent) and which others it shows the
Researcher (inspirations).

All policy state lives in Postgres: the choice of every (run, lane, round) is stored in `selections`
and read back when the round is sampled again, so a resumed round builds on the same parent; UCB1's
visit counts and child rewards live in `node_stats`, top-k pools in `policy_state`, MAP-Elites grids
in `elites` and `migrations`. A selection runs in one transaction under a per-run lock, so concurrent
lanes see each other's choices and a crash leaves either the whole choice or none of it.

- eligible parents: valid nodes with a finite score (and every objective, for a multi-objective
  task, which orders them by Pareto front or its declared lexicographic order — see ranking.py);
  when there are none, the seed (the run's first node) is the parent, valid or not.
- greedy: the best eligible node (earliest on a tie).
- random: uniform over eligible nodes, seeded by (seed, run_id, lane, round).
- ucb1: every eligible node is tried once (best first); then the node maximising
  mean_reward + c·sqrt(ln N / n), n its visits and N all visits. Rewards are scores scaled to [0, 1]
  over the run's range (1 = best; rank-based for several objectives); a node's mean reward averages
  its own with those of its children (a failed child earns 0), so a parent whose children disappoint
  loses ground to one whose children improve.
- top_k: the parent is drawn from the best `parent_pool` nodes, inspirations from the best
  `context_pool`; both pools are refreshed every `pool_refresh` selections (every selection while
  the run has fewer eligible nodes than `parent_pool`).
- map_elites: see map_elites.py (islands of feature grids, bounded archives, ring migration).
- inspirations of greedy / random / ucb1: half (rounded up) are the best other eligible nodes; the rest
  are those of the next best 100 least similar to the parent by code/motivation embedding (different
  ideas rather than near-copies), or seeded random picks where embeddings are missing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from evoforge.config import SamplingConfig
from evoforge.memory.map_elites import Archive, island_for
from evoforge.memory.nodes import NodeRecord, NodeStore, SelectionRecord
from evoforge.memory.ranking import Ranking, fetch_nodes, seed_node_id
from evoforge.tasks.spec import Score

POLICIES: tuple[str, ...] = ("greedy", "random", "ucb1", "top_k", "map_elites")
POOL_STATE = "top_k_pools"
_SAMPLING_LOCK = 0x45766F48
"""First key of the per-run advisory lock (the second is a hash of the run id)."""


@dataclass
class Selection:
    """What one round builds on."""

    parent: NodeRecord
    inspirations: list[NodeRecord]
    policy: str
    island: int = 0
    """The MAP-Elites island the parent came from (0 for policies without islands)."""
    resumed: bool = False
    """True when this round's choice was already stored and has been read back."""


def lock_run(conn: psycopg.Connection[Any], run_id: str) -> None:
    """Serialise policy-state changes of one run until the end of the current transaction.

    The transaction also commits without waiting for its WAL flush: the graph's next checkpoint is
    written synchronously and flushes this commit with it, and a choice lost with the server in
    between is made again the same way (it is a function of the stored state and the seed).
    """
    conn.execute(
        "SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock(%s, hashtext(%s))",
        (_SAMPLING_LOCK, run_id),
    )


def select_context(
    store: NodeStore,
    run_id: str,
    *,
    lane: int,
    round: int,
    sampling: SamplingConfig,
    score: Score | None = None,
) -> Selection:
    """Choose (or read back) the parent and inspirations of one round and record the choice."""
    if sampling.policy not in POLICIES:
        raise ValueError(f"policy: expected one of {POLICIES}, got {sampling.policy!r}")
    score = score or Score()
    with store.database.pool.connection() as conn, conn.transaction():
        lock_run(conn, run_id)
        row = conn.execute(
            "SELECT run_id, lane, round, parent_id, inspiration_ids, policy, island FROM selections "
            "WHERE run_id = %s AND lane = %s AND round = %s",
            (run_id, lane, round),
        ).fetchone()
        if row is not None:
            return _read_back(conn, SelectionRecord(**row))
        ranking = Ranking(conn, run_id, score)
        rng = random.Random(f"{sampling.seed}:{run_id}:{lane}:{round}")
        parent_id, inspiration_ids, island = _choose(conn, ranking, sampling, rng, lane=lane, round_=round)
        conn.execute(
            "INSERT INTO selections (run_id, lane, round, parent_id, inspiration_ids, policy, island) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (run_id, lane, round, parent_id, inspiration_ids, sampling.policy, island),
        )
        parent, *inspirations = fetch_nodes(conn, [parent_id, *inspiration_ids])
        return Selection(parent, inspirations, sampling.policy, island)


def archive_node(
    store: NodeStore, node: NodeRecord, sampling: SamplingConfig, score: Score | None = None
) -> bool:
    """Offer a freshly recorded node to its island's MAP-Elites archive (only under that policy);
    returns whether it became an elite. Safe to repeat: a node already holding its cell is kept."""
    if sampling.policy != "map_elites":
        return False
    with store.database.pool.connection() as conn, conn.transaction():
        lock_run(conn, node.run_id)
        ranking = Ranking(conn, node.run_id, score or Score())
        archive = Archive(conn, node.run_id, sampling, ranking)
        archive.ensure_ready(node.round)
        return archive.add(node, node.round)


def _read_back(conn: psycopg.Connection[Any], stored: SelectionRecord) -> Selection:
    parent = fetch_nodes(conn, [stored.parent_id])
    if not parent:
        raise LookupError(
            f"parent_id: the selection of run {stored.run_id!r} round {stored.round} lane {stored.lane} "
            f"names node {stored.parent_id!r}, which is not in node memory"
        )
    return Selection(
        parent=parent[0],
        inspirations=fetch_nodes(conn, stored.inspiration_ids),
        policy=stored.policy,
        island=stored.island,
        resumed=True,
    )


def _choose(
    conn: psycopg.Connection[Any],
    ranking: Ranking,
    sampling: SamplingConfig,
    rng: random.Random,
    *,
    lane: int,
    round_: int,
) -> tuple[str, list[str], int]:
    """(parent id, inspiration ids, island) by the configured policy."""
    run_id, policy = ranking.run_id, sampling.policy
    island = island_for(round_, lane, sampling.islands) if policy == "map_elites" else 0
    if ranking.count() == 0:
        seed = seed_node_id(conn, run_id)
        if seed is None:
            raise LookupError(f"run_id: run {run_id!r} has no nodes; record its seed (round 0) first")
        return seed, [], island
    if policy == "map_elites":
        archive = Archive(conn, run_id, sampling, ranking)
        archive.ensure_ready(round_)
        archive.migrate(round_)
        parent, inspirations = archive.choose(island, rng, sampling.inspirations, round_)
        return parent, inspirations, island
    if policy == "top_k":
        parents, context = _top_k_pools(conn, ranking, sampling)
        parent = rng.choice(parents)
        others = [node_id for node_id in context if node_id != parent]
        return parent, rng.sample(others, min(sampling.inspirations, len(others))), island
    if policy == "greedy":
        [parent] = ranking.top(1)
    elif policy == "random":
        [parent] = ranking.sample(rng, 1)
    else:
        chosen = ranking.ucb1(sampling.ucb_c)
        assert chosen is not None, "an eligible node exists, so UCB1 has a choice"
        parent = chosen
    return parent, _mixed_inspirations(ranking, parent, sampling.inspirations, rng), island


def _mixed_inspirations(ranking: Ranking, parent_id: str, count: int, rng: random.Random) -> list[str]:
    if count <= 0:
        return []
    top = ranking.top(math.ceil(count / 2), exclude={parent_id})
    wanted = min(count - len(top), ranking.count() - len(top) - 1)
    diverse = ranking.least_similar(parent_id, wanted, exclude=top)
    diverse += ranking.sample(rng, wanted - len(diverse), exclude={parent_id, *top, *diverse})
    return [*top, *diverse]


def _top_k_pools(
    conn: psycopg.Connection[Any], ranking: Ranking, sampling: SamplingConfig
) -> tuple[list[str], list[str]]:
    """The run's (parent pool, context pool), refreshed when due; the use is counted in Postgres."""
    row = conn.execute(
        "SELECT value FROM policy_state WHERE run_id = %s AND name = %s", (ranking.run_id, POOL_STATE)
    ).fetchone()
    pools: dict[str, Any] = row["value"] if row else {}
    due = (
        not pools
        or pools["uses"] >= sampling.pool_refresh
        or len(pools["parents"]) < sampling.parent_pool
        or pools["sizes"] != [sampling.parent_pool, sampling.context_pool]
    )
    if due:
        context = ranking.top(max(sampling.parent_pool, sampling.context_pool))
        pools = {
            "parents": context[: sampling.parent_pool],
            "context": context[: sampling.context_pool],
            "sizes": [sampling.parent_pool, sampling.context_pool],
            "uses": 0,
            "refreshes": pools.get("refreshes", 0) + 1,
        }
    pools["uses"] += 1
    conn.execute(
        "INSERT INTO policy_state (run_id, name, value) VALUES (%s, %s, %s) "
        "ON CONFLICT (run_id, name) DO UPDATE SET value = excluded.value, updated_at = now()",
        (ranking.run_id, POOL_STATE, Jsonb(pools)),
    )
    return pools["parents"], pools["context"]
