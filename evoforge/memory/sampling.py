"""Sampling policies: which node a round builds on (the parent) and which others it shows the
Researcher (inspirations).

All policy state lives in Postgres: the choice of every (run, lane, round) is stored in `selections`
and read back when the round is sampled again, so a resumed round builds on the same parent, and
UCB1's visit counts are counted from that table. Nothing is kept in process memory.

- eligible parents: valid nodes with a finite score; when there are none, the seed (the run's
  round-0 node) is the parent, valid or not.
- greedy: the best eligible node (earliest on a tie).
- random: uniform over eligible nodes, seeded by (seed, run_id, lane, round).
- ucb1: every eligible node is tried once (best first); then the node maximising
  mean_reward + c·sqrt(ln N / n), with n its visits and N all visits. Rewards are scores normalised
  to [0, 1] over the run's eligible range (1 = best, direction-aware); a node's mean reward averages
  its own reward with those of the children it produced (a failed child earns 0), so a parent whose
  children disappoint loses ground to one whose children improve.
- inspirations: half (rounded up) are the best-scoring other eligible nodes; the rest are the
  eligible nodes least similar to the parent by code/motivation embedding (different ideas rather
  than near-copies of the parent), or a seeded random pick where embeddings are missing.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from evoforge.memory.nodes import (
    Direction,
    NodeRecord,
    NodeStore,
    SelectionRecord,
    check_direction,
    is_finite_score,
)

Policy = Literal["greedy", "random", "ucb1"]
POLICIES: tuple[str, ...] = ("greedy", "random", "ucb1")


@dataclass
class Selection:
    """What one round builds on."""

    parent: NodeRecord
    inspirations: list[NodeRecord]
    policy: str
    resumed: bool = False
    """True when this round's choice was already stored and has been read back."""


def select_context(
    store: NodeStore,
    run_id: str,
    *,
    lane: int,
    round: int,
    policy: Policy,
    n_inspirations: int,
    direction: Direction,
    ucb_c: float = 1.4,
    seed: int = 0,
) -> Selection:
    """Choose (or read back) the parent and inspirations of one round and record the choice."""
    if policy not in POLICIES:
        raise ValueError(f"policy: expected one of {POLICIES}, got {policy!r}")
    check_direction(direction)
    if n_inspirations < 0:
        raise ValueError(f"n_inspirations: expected >= 0, got {n_inspirations!r}")

    stored = store.get_selection(run_id, lane, round)
    if stored is not None:
        return _read_back(store, stored)

    nodes = store.list_nodes(run_id)
    if not nodes:
        raise LookupError(f"run_id: run {run_id!r} has no nodes; record its seed (round 0) first")
    eligible = [node for node in nodes if node.valid and is_finite_score(node.score)]
    rng = random.Random(f"{seed}:{run_id}:{lane}:{round}")
    if not eligible:
        parent = min(nodes, key=lambda node: (node.round, node.lane, node.id))
    elif policy == "greedy":
        parent = min(eligible, key=_ranking(direction))
    elif policy == "random":
        parent = rng.choice(sorted(eligible, key=lambda node: node.id))
    else:
        parent = _ucb1_choice(store.visit_counts(run_id), nodes, eligible, direction, ucb_c)
    inspirations = _inspirations(parent, eligible, n_inspirations, direction, rng)

    recorded = store.record_selection(
        run_id, lane, round, parent.id, [node.id for node in inspirations], policy
    )
    if recorded.parent_id != parent.id or recorded.inspiration_ids != [node.id for node in inspirations]:
        return _read_back(store, recorded)  # another process chose this round first
    return Selection(parent=parent, inspirations=inspirations, policy=policy)


def _read_back(store: NodeStore, stored: SelectionRecord) -> Selection:
    parent = store.get_node(stored.parent_id)
    if parent is None:
        raise LookupError(
            f"parent_id: the selection of run {stored.run_id!r} round {stored.round} lane {stored.lane} "
            f"names node {stored.parent_id!r}, which is not in node memory"
        )
    return Selection(
        parent=parent,
        inspirations=store.get_nodes(stored.inspiration_ids),
        policy=stored.policy,
        resumed=True,
    )


def _ranking(direction: Direction) -> Callable[[NodeRecord], tuple[float, int, int, str]]:
    """Sort key putting the best score first, then the earliest node."""
    sign = -1.0 if direction == "maximize" else 1.0
    return lambda node: (sign * (node.score or 0.0), node.round, node.lane, node.id)


def _reward_scale(eligible: list[NodeRecord], direction: Direction) -> Callable[[NodeRecord], float]:
    scores = [float(node.score) for node in eligible if node.score is not None]
    low, high = min(scores), max(scores)

    def reward(node: NodeRecord) -> float:
        score = node.score
        if not node.valid or score is None or not math.isfinite(score):
            return 0.0
        if high == low:
            return 1.0
        fraction = (score - low) / (high - low)
        return min(1.0, max(0.0, fraction if direction == "maximize" else 1.0 - fraction))

    return reward


def _ucb1_choice(
    visits: dict[str, int],
    nodes: list[NodeRecord],
    eligible: list[NodeRecord],
    direction: Direction,
    c: float,
) -> NodeRecord:
    ranking = _ranking(direction)
    unvisited = [node for node in eligible if visits.get(node.id, 0) == 0]
    if unvisited:
        return min(unvisited, key=ranking)
    reward = _reward_scale(eligible, direction)
    child_rewards: dict[str, list[float]] = defaultdict(list)
    for node in nodes:
        if node.parent_ids:
            child_rewards[node.parent_ids[0]].append(reward(node))
    total_visits = sum(visits[node.id] for node in eligible)

    def upper_bound(node: NodeRecord) -> float:
        rewards = [reward(node), *child_rewards[node.id]]
        return sum(rewards) / len(rewards) + c * math.sqrt(math.log(total_visits) / visits[node.id])

    return max(eligible, key=lambda node: (upper_bound(node), -ranking(node)[0], -node.round))


def _least_similar(parent: NodeRecord, candidates: list[NodeRecord], wanted: int) -> list[NodeRecord]:
    """Up to `wanted` candidates with the lowest cosine similarity to the parent (embedded ones only)."""
    embedded = [node for node in candidates if node.embedding is not None]
    if parent.embedding is None or not embedded or wanted <= 0:
        return []
    matrix = np.asarray([node.embedding for node in embedded], dtype=np.float64)
    anchor = np.asarray(parent.embedding, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(anchor)
    similarity = (matrix @ anchor) / np.where(norms > 0, norms, 1.0)
    order = sorted(range(len(embedded)), key=lambda i: (float(similarity[i]), embedded[i].id))
    return [embedded[i] for i in order[:wanted]]


def _inspirations(
    parent: NodeRecord, eligible: list[NodeRecord], count: int, direction: Direction, rng: random.Random
) -> list[NodeRecord]:
    others = sorted((node for node in eligible if node.id != parent.id), key=_ranking(direction))
    n_top = math.ceil(count / 2)
    top, rest = others[:n_top], others[n_top:]
    wanted = min(count - len(top), len(rest))
    diverse = _least_similar(parent, rest, wanted)
    chosen = {node.id for node in diverse}
    remaining = sorted((node for node in rest if node.id not in chosen), key=lambda node: node.id)
    diverse += rng.sample(remaining, wanted - len(diverse))
    return top + diverse
