"""UCB1 over a run's eligible nodes, in SQL, without scanning them all (see node_stats in schema 002).

A node's upper bound is mean_reward + c·sqrt(ln N / n): n its visits, N the visits of all eligible
nodes; rewards are scores scaled to [0, 1] over the run's range [lo, hi] (1 = best), a node's mean
averaging its own reward with its children's (a failed child earns 0). Nodes with equal visits share
the exploration bonus, so the winner is the best-keyed node of some visit group: one query reads the
top few of every group through the (visits, key) index, and a group is read further only when its
unread nodes could still win. Keys are exact for the reference score they were computed with; the
run's range only widens, and by at most `REKEY_TOLERANCE` of its span before the keys are recomputed,
which bounds how far off a key can be.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg

from evoforge.memory.nodes import ELIGIBLE

REKEY_TOLERANCE = 0.02
CANDIDATES_PER_GROUP = 3
_COLUMNS = (
    "node_id, score, round, lane, visits, children, eligible_children, child_score_sum, key_max, key_min"
)
_GROUP_TOPS = """
WITH RECURSIVE groups (visits) AS (
    SELECT min(visits) FROM node_stats WHERE run_id = %(run)s AND eligible
    UNION ALL
    SELECT (SELECT min(s.visits) FROM node_stats s WHERE s.run_id = %(run)s AND s.eligible AND s.visits > g.visits)
    FROM groups g WHERE g.visits IS NOT NULL
)
SELECT top.* FROM groups g CROSS JOIN LATERAL (
    SELECT {columns} FROM node_stats s WHERE s.run_id = %(run)s AND s.eligible AND s.visits = g.visits
    ORDER BY s.{key} DESC LIMIT %(k)s
) top WHERE g.visits IS NOT NULL
"""
_EQUAL_SCORES = f"""
SELECT {_COLUMNS} FROM node_stats WHERE run_id = %(run)s AND eligible
ORDER BY (1.0 + eligible_children) / (1 + children) + %(c)s * sqrt(%(log_n)s / visits) DESC, round, lane, node_id
LIMIT 1
"""
"""All eligible scores equal: an eligible node earns 1, so the mean is the share of eligible children."""


def ucb1_choice(conn: psycopg.Connection[Any], run_id: str, *, maximize: bool, c: float) -> str | None:
    """The UCB1 parent: the best eligible node never chosen, else the highest upper bound."""
    order = "DESC" if maximize else "ASC"
    row = conn.execute(
        f"SELECT node_id FROM node_stats WHERE run_id = %s AND eligible AND visits = 0 "
        f"ORDER BY score {order}, round, lane, node_id LIMIT 1",
        (run_id,),
    ).fetchone()
    if row is not None:
        return str(row["node_id"])
    bounds = conn.execute(
        f"SELECT min(score) AS lo, max(score) AS hi FROM nodes WHERE run_id = %s AND {ELIGIBLE}", (run_id,)
    ).fetchone()
    stats = conn.execute(
        "SELECT eligible_visits, low_ref, high_ref FROM run_stats WHERE run_id = %s", (run_id,)
    ).fetchone()
    if bounds is None or bounds["lo"] is None or stats is None:
        return None
    lo, hi = float(bounds["lo"]), float(bounds["hi"])
    log_n = math.log(max(int(stats["eligible_visits"]), 1))
    if hi == lo:
        best = conn.execute(_EQUAL_SCORES, {"run": run_id, "c": c, "log_n": log_n}).fetchone()
        return str(best["node_id"]) if best else None
    span = hi - lo
    key = "key_max" if maximize else "key_min"
    # the range only widens while nodes are only added, so the drift is positive; deleted nodes could
    # make it negative, which leaves keys upper bounds still
    drift = float(stats["low_ref"]) - lo if maximize else hi - float(stats["high_ref"])
    if abs(drift) > REKEY_TOLERANCE * span:
        rekey(conn, run_id, maximize=maximize, reference=lo if maximize else hi)
        drift = 0.0

    def upper_bound(row: dict[str, Any]) -> float:
        own_and_children = row["score"] + row["child_score_sum"]
        eligible = 1 + row["eligible_children"]
        reward_sum = own_and_children - lo * eligible if maximize else hi * eligible - own_and_children
        bound: float = reward_sum / span / (1 + row["children"]) + c * math.sqrt(log_n / row["visits"])
        return bound

    def rank(row: dict[str, Any]) -> tuple[float, float, int, int, str]:
        signed = row["score"] if maximize else -row["score"]
        return (-upper_bound(row), -signed, row["round"], row["lane"], row["node_id"])

    rows = conn.execute(
        _GROUP_TOPS.format(columns=_COLUMNS, key=key), {"run": run_id, "k": CANDIDATES_PER_GROUP}
    ).fetchall()
    best = min(rows, key=rank)
    best_bound = upper_bound(best)
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(int(row["visits"]), []).append(row)
    for visits, members in groups.items():
        if len(members) < CANDIDATES_PER_GROUP:
            continue  # the whole group was read
        # an unread node's reward sum is at most its key + drift: read on only where that could win
        threshold = (best_bound - c * math.sqrt(log_n / visits)) * span - max(drift, 0.0)
        if members[-1][key] < threshold:
            continue
        more = conn.execute(
            f"SELECT {_COLUMNS} FROM node_stats WHERE run_id = %s AND eligible AND visits = %s AND {key} >= %s",
            (run_id, visits, threshold),
        ).fetchall()
        rows += more
    return str(min(rows, key=rank)["node_id"])


def rekey(conn: psycopg.Connection[Any], run_id: str, *, maximize: bool, reference: float) -> None:
    """Recompute one direction's keys against the run's current extreme score."""
    column, ref = ("key_max", "low_ref") if maximize else ("key_min", "high_ref")
    reward_sum = (
        "score + child_score_sum - %(ref)s * (1 + eligible_children)"
        if maximize
        else "%(ref)s * (1 + eligible_children) - score - child_score_sum"
    )
    # run_stats first: its row lock makes concurrent inserts wait and then key against the new reference
    conn.execute(
        f"UPDATE run_stats SET {ref} = %(ref)s WHERE run_id = %(run)s", {"ref": reference, "run": run_id}
    )
    conn.execute(
        f"UPDATE node_stats SET {column} = ({reward_sum}) / (1 + children) WHERE run_id = %(run)s AND eligible",
        {"ref": reference, "run": run_id},
    )
