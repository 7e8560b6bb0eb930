"""Multi-objective order: Pareto fronts with crowding distance, or a declared lexicographic order.

Points are tuples of objective values already signed so that larger is better on every axis
(`signed_objectives` does that from a task's declared directions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evoforge.tasks.spec import Score

Point = tuple[float, ...]


def signed_objectives(score: Score, node_score: float | None, metrics: dict[str, Any]) -> Point | None:
    """The node's objective values, larger-is-better; None when one is missing or not a finite number.

    An objective named "score" reads the node's scalar score; any other name reads the metric.
    """
    values: list[float] = []
    for objective in score.objectives:
        raw = node_score if objective.metric == "score" else metrics.get(objective.metric)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            return None
        values.append(float(raw) if objective.direction == "maximize" else -float(raw))
    return tuple(values)


def dominates(a: Point, b: Point) -> bool:
    """`a` is at least as good as `b` on every objective and better on one."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def pareto_fronts(points: Sequence[Point]) -> list[list[int]]:
    """Indices of `points` grouped into successive non-dominated fronts (front 0 is the Pareto front).

    Points are visited best-first lexicographically, so none can be dominated by a later one: each
    point is compared only with the members of the fronts built so far, O(n · front size) per front.
    """
    order = sorted(range(len(points)), key=lambda i: points[i], reverse=True)
    fronts: list[list[int]] = []
    for index in order:
        point = points[index]
        for front in fronts:
            if not any(dominates(points[member], point) for member in front):
                front.append(index)
                break
        else:
            fronts.append([index])
    return fronts


def crowding_distances(points: Sequence[Point], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II crowding distance of each front member: its extremes are infinitely far from the rest."""
    distance = dict.fromkeys(front, 0.0)
    if len(front) <= 2:
        return dict.fromkeys(front, math.inf)
    for axis in range(len(points[front[0]])):
        ranked = sorted(front, key=lambda i: points[i][axis])
        low, high = points[ranked[0]][axis], points[ranked[-1]][axis]
        distance[ranked[0]] = distance[ranked[-1]] = math.inf
        if high == low:
            continue
        for before, here, after in zip(ranked, ranked[1:], ranked[2:], strict=False):
            distance[here] += (points[after][axis] - points[before][axis]) / (high - low)
    return distance


def objective_order(points: Sequence[Point], lexicographic: bool) -> list[int]:
    """Indices of `points`, best first: by the declared order of objectives when `lexicographic`, else
    by Pareto front, then crowding distance (spread-out points first), then position (earliest first)."""
    if lexicographic:
        return sorted(range(len(points)), key=lambda i: (tuple(-x for x in points[i]), i))
    ranked: list[int] = []
    for front in pareto_fronts(points):
        crowding = crowding_distances(points, front)
        ranked += sorted(front, key=lambda i: (-crowding[i], i))
    return ranked


def better(a: Point, b: Point, lexicographic: bool) -> bool:
    """Whether `a` should replace `b` (as an elite): lexicographically greater, or Pareto-dominating."""
    return a > b if lexicographic else dominates(a, b)
