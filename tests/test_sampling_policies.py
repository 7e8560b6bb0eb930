"""Sampling policies against the embedded Postgres: UCB1, top-k pools, MAP-Elites with islands, Pareto and
lexicographic orders, and policy state that survives a process restart."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from evoforge.config import FeatureDimension, SamplingConfig
from evoforge.memory import ucb as ucb_module
from evoforge.memory.database import Database
from evoforge.memory.embedded import EmbeddedPostgres
from evoforge.memory.nodes import NodeRecord, NodeStore
from evoforge.memory.pareto import crowding_distances, dominates, objective_order, pareto_fronts
from evoforge.memory.sampling import Selection, archive_node, select_context
from evoforge.tasks.spec import Objective, Score

RUN = "pol"
GRID = [FeatureDimension(name="x", low=0, high=1, bins=4), FeatureDimension(name="y", low=0, high=1, bins=4)]
TWO_OBJECTIVES = Score(
    objectives=[Objective(metric="quality"), Objective(metric="cost", direction="minimize")]
)


def node(round: int, score: float | None, *, run: str = RUN, island: int = 0, **fields: Any) -> NodeRecord:
    return NodeRecord(
        id=f"{run}-r{round}-l0",
        run_id=run,
        round=round,
        score=score,
        valid=score is not None,
        status="evaluated" if score is not None else "runtime_failed",
        code=f"x = {round}\n",
        island=island,
        **fields,
    )


@pytest.fixture
def store(database: Database) -> NodeStore:
    nodes = NodeStore(database)
    nodes.create_run(RUN, "circle_packing", "", {})
    return nodes


def select(store: NodeStore, round: int, sampling: SamplingConfig, score: Score | None = None) -> Selection:
    return select_context(store, RUN, lane=0, round=round, sampling=sampling, score=score)


def stats_match_a_recount(database: Database) -> bool:
    """node_stats, kept by triggers, equals what nodes and selections say from scratch."""
    with database.pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM node_stats s LEFT JOIN LATERAL ("
            " SELECT (SELECT count(*) FROM selections WHERE run_id = s.run_id AND parent_id = s.node_id) AS visits,"
            " (SELECT count(*) FROM nodes WHERE run_id = s.run_id AND parent_ids[1] = s.node_id) AS children) r"
            " ON true WHERE s.visits <> r.visits OR s.children <> r.children"
        ).fetchone()
    return row is not None and row["n"] == 0


@pytest.mark.integration
def test_ucb1_visits_every_node_before_repeating_then_favours_high_scorers(
    store: NodeStore, database: Database
) -> None:
    scores = [0.3, 0.9, 0.1, 0.7, 0.5, 0.2]
    for round_, score in enumerate(scores):
        store.record_node(node(round_, score))
    store.record_node(node(6, None))  # a failed node is never a parent
    ucb = SamplingConfig(policy="ucb1", inspirations=0, ucb_c=0.5)
    first_pass = [select(store, r, ucb).parent.round for r in range(10, 16)]
    assert first_pass == [1, 3, 4, 0, 5, 2], "each eligible node exactly once, best first"
    later = [select(store, r, ucb).parent.round for r in range(16, 76)]
    assert 6 not in later
    counts = [later.count(i) for i in sorted(range(6), key=lambda i: scores[i])]
    assert counts == sorted(counts) and counts[-1] > 3 * max(counts[0], 1), counts
    assert stats_match_a_recount(database)


def brute_force_ucb1(nodes: list[NodeRecord], visits: dict[str, int], c: float, maximize: bool) -> str:
    """UCB1 as written in the docstring of evoforge/memory/ucb.py, over every node in Python."""
    eligible = [n for n in nodes if n.valid and n.score is not None and math.isfinite(n.score)]
    scores = [n.score for n in eligible]
    lo, hi = min(scores), max(scores)  # type: ignore[type-var]

    def reward(n: NodeRecord) -> float:
        if n not in eligible:
            return 0.0
        if hi == lo:
            return 1.0
        return (n.score - lo) / (hi - lo) if maximize else (hi - n.score) / (hi - lo)  # type: ignore[operator]

    children: dict[str, list[NodeRecord]] = {}
    for n in nodes:
        if n.parent_ids:
            children.setdefault(n.parent_ids[0], []).append(n)
    total = sum(visits.get(n.id, 0) for n in eligible)

    def bound(n: NodeRecord) -> float:
        rewards = [reward(n), *(reward(child) for child in children.get(n.id, []))]
        return sum(rewards) / len(rewards) + c * math.sqrt(math.log(total) / visits[n.id])

    return max(eligible, key=bound).id


@pytest.mark.integration
@pytest.mark.parametrize(("direction", "c", "per_group"), [("maximize", 1.4, 3), ("minimize", 0.3, 1)])
def test_ucb1_in_sql_matches_a_brute_force_computation(
    store: NodeStore,
    database: Database,
    direction: str,
    c: float,
    per_group: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        ucb_module, "CANDIDATES_PER_GROUP", per_group
    )  # 1: visit groups are often read further
    rng = random.Random(3)
    nodes: list[NodeRecord] = []
    for round_ in range(120):
        score = rng.uniform(1.0, 2.0) if round_ == 0 or rng.random() > 0.25 else None
        parent = [nodes[rng.randrange(len(nodes))].id] if nodes else []
        nodes.append(node(round_, score, parent_ids=parent))
        store.record_node(nodes[-1])
    ucb = SamplingConfig(policy="ucb1", inspirations=0, ucb_c=c)
    score = Score(direction=direction)  # type: ignore[arg-type]
    maximize = direction == "maximize"
    for round_ in range(1000, 1250):
        if round_ in (
            1100,
            1200,
        ):  # a new extreme widens the range: a little (keys kept), then a lot (re-keyed)
            extreme = (0.99 if round_ == 1100 else 0.2) if maximize else (2.01 if round_ == 1100 else 2.8)
            nodes.append(node(round_, extreme, parent_ids=[nodes[rng.randrange(len(nodes))].id]))
            store.record_node(nodes[-1])
        visits = store.visit_counts(RUN)
        expected = None
        if all(visits.get(n.id, 0) > 0 for n in nodes if n.valid):
            expected = brute_force_ucb1(nodes, visits, c, maximize)
        chosen = select(store, round_, ucb, score).parent.id
        if expected is not None:
            assert chosen == expected, f"round {round_}"
    with database.pool.connection() as conn:
        refs = conn.execute("SELECT low_ref, high_ref FROM run_stats WHERE run_id = %s", (RUN,)).fetchone()
    assert refs is not None
    assert (refs["low_ref"] if maximize else refs["high_ref"]) == (0.2 if maximize else 2.8), "re-keyed"
    assert stats_match_a_recount(database)


@pytest.mark.integration
def test_top_k_draws_from_pools_refreshed_every_few_selections(store: NodeStore, database: Database) -> None:
    for round_ in range(20):
        store.record_node(node(round_, float(round_)))
    top_k = SamplingConfig(policy="top_k", inspirations=3, parent_pool=3, context_pool=6, pool_refresh=4)
    best3, best6 = {f"{RUN}-r{r}-l0" for r in (19, 18, 17)}, {f"{RUN}-r{r}-l0" for r in range(14, 20)}
    picks = [select(store, r, top_k) for r in range(21, 23)]
    store.record_node(node(20, 100.0))  # the new best waits for the next refresh
    picks += [select(store, r, top_k) for r in range(23, 25)]
    for pick in picks:
        assert pick.parent.id in best3 and len(pick.inspirations) == 3
        assert {n.id for n in pick.inspirations} <= best6 - {pick.parent.id}
    refreshed = [select(store, r, top_k) for r in range(25, 41)]
    assert f"{RUN}-r20-l0" in {pick.parent.id for pick in refreshed}, "in the parent pool after the refresh"
    assert {pick.parent.round for pick in refreshed} <= {20, 19, 18}
    with database.pool.connection() as conn:
        pools = conn.execute(
            "SELECT value FROM policy_state WHERE run_id = %s AND name = 'top_k_pools'", (RUN,)
        )
        state = pools.fetchone()["value"]  # type: ignore[index]
    assert state["parents"] == [f"{RUN}-r{r}-l0" for r in (20, 19, 18)] and state["refreshes"] == 5


def elite_ids(database: Database, island: int) -> dict[tuple[int, ...], str]:
    with database.pool.connection() as conn:
        rows = conn.execute(
            "SELECT cell, node_id FROM elites WHERE run_id = %s AND island = %s", (RUN, island)
        ).fetchall()
    return {tuple(row["cell"]): row["node_id"] for row in rows}


@pytest.mark.integration
def test_map_elites_keeps_the_best_per_cell_selects_from_the_grid_and_migrates_in_a_ring(
    store: NodeStore, database: Database
) -> None:
    settings = SamplingConfig(
        policy="map_elites",
        inspirations=2,
        islands=3,
        migration_interval=3,
        migration_size=1,
        archive_size=4,
        features=GRID,
    )

    def offer(round_: int, score: float, island: int, x: float, y: float) -> bool:
        record = node(round_, score, island=island, metrics={"x": x, "y": y})
        store.record_node(record)
        return archive_node(store, record, settings)

    store.record_node(node(0, 0.5, metrics={"x": 0.0, "y": 0.0}))  # the seed, island 0
    assert offer(1, 1.0, 0, 0.1, 0.1) and offer(2, 2.0, 0, 0.2, 0.2), "a better node takes the cell"
    assert not offer(3, 1.5, 0, 0.15, 0.15), "a worse node leaves the elite in place"
    assert elite_ids(database, 0) == {(0, 0): f"{RUN}-r2-l0"}
    for i, (x, y) in enumerate([(0.3, 0.9), (0.6, 0.6), (0.9, 0.1), (0.9, 0.9), (0.6, 0.1)]):
        offer(4 + i, 3.0 + i, 0, x, y)
    island0 = elite_ids(database, 0)
    assert len(island0) == 4, "the archive stays bounded"
    assert sorted(island0.values()) == [f"{RUN}-r{r}-l0" for r in (5, 6, 7, 8)], "the worst were dropped"
    offer(9, 0.7, 1, 0.5, 0.5)
    offer(10, 0.8, 2, 0.1, 0.9)

    # island_for(round, lane 0, 3 islands) = round % 3: rounds 12 and 15 sample island 0, 13 island 1
    picks = {r: select(store, r, settings) for r in (12, 13, 14)}
    assert picks[12].island == 0 and picks[12].parent.id in island0.values()
    assert {n.id for n in picks[12].inspirations} <= set(island0.values()) - {picks[12].parent.id}
    # after round 12's migration island 1 holds r9 and r8 (from island 0), island 2 r10 and r9
    assert picks[13].island == 1 and {picks[13].parent.id, *(n.id for n in picks[13].inspirations)} == {
        f"{RUN}-r9-l0",
        f"{RUN}-r8-l0",
    }
    assert picks[14].island == 2 and {picks[14].parent.id, *(n.id for n in picks[14].inspirations)} == {
        f"{RUN}-r10-l0",
        f"{RUN}-r9-l0",
    }
    with database.pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM migrations").fetchone()["n"] == 1  # type: ignore[index]
        moved = conn.execute("SELECT moved FROM migrations WHERE round = 12").fetchone()["moved"]  # type: ignore[index]
    assert [(m["node_id"], m["from"], m["to"]) for m in moved] == [
        (f"{RUN}-r8-l0", 0, 1),
        (f"{RUN}-r9-l0", 1, 2),
        (f"{RUN}-r10-l0", 2, 0),
    ], "each island's best goes to the next island of the ring"
    assert (
        f"{RUN}-r8-l0" in elite_ids(database, 1).values()
        and f"{RUN}-r9-l0" in elite_ids(database, 2).values()
    )
    assert len(elite_ids(database, 0)) == 4 and f"{RUN}-r10-l0" not in elite_ids(database, 0).values()

    parents = {select(store, r, settings).parent.id for r in range(15, 45, 3)}  # island 0 every time
    assert parents <= set(elite_ids(database, 0).values()) and len(parents) > 1, "draws spread over the grid"
    again = select(store, 12, settings)
    assert again.resumed and again.parent.id == picks[12].parent.id and again.island == 0
    with database.pool.connection() as conn:
        rounds = [row["round"] for row in conn.execute("SELECT round FROM migrations ORDER BY round")]
    assert rounds == [12, *range(15, 43, 3)], "once per migration round, never again on a resumed round"


def test_pareto_fronts_and_crowding_match_brute_force() -> None:
    rng = random.Random(7)
    points = [
        (float(rng.randint(0, 6)), float(rng.randint(0, 6)), float(rng.randint(0, 3))) for _ in range(60)
    ]
    fronts = pareto_fronts(points)
    assert sorted(i for front in fronts for i in front) == list(range(60))
    remaining = set(range(60))
    for front in fronts:  # each front is exactly the non-dominated part of what the earlier fronts left
        expected = {i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining)}
        assert set(front) == expected
        remaining -= expected
    distances = crowding_distances([(0.0, 4.0), (1.0, 2.0), (3.0, 1.0), (4.0, 0.0)], [0, 1, 2, 3])
    assert distances[0] == distances[3] == float("inf")
    assert distances[1] == pytest.approx(3 / 4 + 3 / 4) and distances[2] == pytest.approx(3 / 4 + 2 / 4)
    assert objective_order([(1.0, 5.0), (2.0, 1.0), (2.0, 0.0)], lexicographic=True) == [1, 2, 0]


@pytest.mark.integration
def test_pareto_selection_keeps_the_non_dominated_nodes(store: NodeStore, database: Database) -> None:
    objectives = {1: (1.0, 1.0), 2: (2.0, 2.0), 3: (3.0, 5.0), 4: (1.5, 3.0), 5: (0.5, 4.0), 6: (2.5, 4.0)}
    for round_, (quality, cost) in objectives.items():
        store.record_node(node(round_, quality, metrics={"quality": quality, "cost": cost}))
    store.record_node(node(7, 9.0, metrics={"quality": 9.0}))  # no cost reported: not eligible
    front = {f"{RUN}-r{r}-l0" for r in (1, 2, 3, 6)}
    ucb = SamplingConfig(policy="ucb1", inspirations=0)
    first_pass = [select(store, r, ucb, TWO_OBJECTIVES).parent.round for r in range(100, 106)]
    assert first_pass[:2] == [1, 3] and set(first_pass[:4]) == {1, 2, 3, 6} and first_pass[4:] == [4, 5]
    later = [select(store, r, ucb, TWO_OBJECTIVES).parent.round for r in range(106, 140)]
    assert later.count(5) < later.count(1), "the front is favoured once every node was tried"
    greedy = select(store, 10, SamplingConfig(policy="greedy", inspirations=3), TWO_OBJECTIVES)
    assert greedy.parent.id == f"{RUN}-r1-l0", "the front's extremes first, the earliest of them on a tie"
    assert {n.id for n in greedy.inspirations[:2]} <= front
    top_k = SamplingConfig(policy="top_k", inspirations=2, parent_pool=4, context_pool=4)
    parents = {select(store, r, top_k, TWO_OBJECTIVES).parent.id for r in range(11, 31)}
    assert parents == front, "the parent pool is the Pareto front"
    lexicographic = Score(
        objectives=[Objective(metric="cost", direction="minimize"), Objective(metric="quality")],
        order="lexicographic",
    )
    cheapest = select(store, 40, SamplingConfig(policy="greedy", inspirations=2), lexicographic)
    assert cheapest.parent.round == 1 and cheapest.inspirations[0].round == 2, "by cost, then by quality"
    assert len(cheapest.inspirations) == 2

    grid = SamplingConfig(
        policy="map_elites", islands=1, features=[FeatureDimension(name="cost", high=10, bins=1)]
    )
    assert archive_node(store, store.get_node(f"{RUN}-r1-l0"), grid, TWO_OBJECTIVES)  # type: ignore[arg-type]
    store.record_node(node(8, 0.9, metrics={"quality": 0.9, "cost": 0.5}))  # neither dominates node 1
    assert not archive_node(store, store.get_node(f"{RUN}-r8-l0"), grid, TWO_OBJECTIVES)  # type: ignore[arg-type]
    store.record_node(node(9, 1.1, metrics={"quality": 1.1, "cost": 0.5}))  # dominates node 1
    assert archive_node(store, store.get_node(f"{RUN}-r9-l0"), grid, TWO_OBJECTIVES)  # type: ignore[arg-type]
    assert list(elite_ids(database, 0).values()) == [f"{RUN}-r9-l0"]


RESTART_POLICIES = {
    "ucb": SamplingConfig(policy="ucb1", inspirations=2),
    "topk": SamplingConfig(policy="top_k", inspirations=2, parent_pool=2, context_pool=4, pool_refresh=3),
    "grid": SamplingConfig(
        policy="map_elites",
        inspirations=2,
        islands=2,
        migration_interval=2,
        migration_size=1,
        archive_size=3,
        features=GRID,
    ),
}


def drive(database_url: str, state_dir: str, rounds: list[int]) -> list[list[Any]]:
    """Sample `rounds` of one run per policy, recording a child of each parent as a round would;
    returns (run, round, parent, inspirations, island) per selection. Also run in a child process."""
    database = Database.open(database_url, Path(state_dir))
    try:
        store = NodeStore(database)
        choices: list[list[Any]] = []
        for round_ in rounds:
            for run, settings in RESTART_POLICIES.items():
                pick = select_context(store, run, lane=0, round=round_, sampling=settings)
                choices.append([run, round_, pick.parent.id, [n.id for n in pick.inspirations], pick.island])
                score = (round_ * 37 + len(pick.parent.id) * 11) % 17 / 4
                child = node(
                    round_,
                    score if round_ % 5 else None,
                    run=run,
                    island=pick.island,
                    parent_ids=[pick.parent.id],
                    metrics={"x": score % 1, "y": (score / 4) % 1},
                )
                store.record_node(child)
                archive_node(store, child, settings)
        return choices
    finally:
        database.close()


@pytest.fixture
def second_database(
    embedded_postgres: EmbeddedPostgres, database_template: str, tmp_path: Path
) -> Iterator[str]:
    """The URL of another fresh database (the `database` fixture gives one per test)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(embedded_postgres.url(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(database_template)
            )
        )
    yield embedded_postgres.url(name)
    with psycopg.connect(embedded_postgres.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.integration
def test_policy_state_survives_a_process_restart(
    database: Database, second_database: str, tmp_path: Path
) -> None:
    for url in (database.url, second_database):
        setup = Database.open(url, tmp_path)
        store = NodeStore(setup)
        for run in RESTART_POLICIES:
            store.create_run(run, "circle_packing", "", {})
            for round_, score in enumerate([0.5, 1.5, 1.0]):
                store.record_node(node(-3 + round_, score, run=run, metrics={"x": score / 2, "y": 0.3}))
        setup.close()
    uninterrupted = drive(database.url, str(tmp_path), list(range(1, 13)))

    child = (
        "import json, sys; from test_sampling_policies import drive; "
        f"print(json.dumps(drive({second_database!r}, {str(tmp_path)!r}, list(range(1, 7)))))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    first_half = json.loads(out.stdout.strip().splitlines()[-1])
    replayed = drive(second_database, str(tmp_path), [6])  # a round sampled again after the restart
    resumed = first_half + drive(second_database, str(tmp_path), list(range(7, 13)))
    assert resumed == uninterrupted, "the restarted process continues exactly where the first one stopped"
    assert replayed == first_half[-3:], "a round sampled again reads back its recorded choice"
    assert {choice[4] for choice in uninterrupted if choice[0] == "grid"} == {0, 1}
    with psycopg.connect(second_database) as conn:
        migrations = conn.execute("SELECT count(*) FROM migrations").fetchone()
    assert migrations == (6,), "rounds 2, 4, ..., 12 migrated once each"


@pytest.mark.integration
def test_a_run_records_the_policy_and_island_of_every_node(database: Database, tmp_path: Path) -> None:
    from evoforge.config import RunConfig
    from evoforge.graph.runner import start_run
    from evoforge.runtime import services

    fixtures = Path(__file__).parent / "fixtures"
    config = RunConfig(
        task=str(fixtures / "tasks" / "toy"),
        rounds=4,
        database_url=database.url,
        state_dir=tmp_path / "state",
        llm={"provider": "scripted", "script": str(fixtures / "scripts" / "toy_islands.yaml")},
        novelty={"duplicate_similarity": 0.9999, "judge_similarity": 0.9999},
        sampling={
            "policy": "map_elites",
            "islands": 2,
            "migration_interval": 2,
            "migration_size": 1,
            "features": [
                {"name": "value", "low": 0, "high": 8, "bins": 8},
                {"name": "complexity", "low": 0, "high": 8, "bins": 4},
            ],
        },
    )
    try:
        start_run(config, "isl")
        store = services.get_services(config).nodes
        nodes = {n.round: n for n in store.list_nodes("isl")}
        assert [nodes[r].status for r in range(5)] == ["evaluated"] * 5
        assert nodes[0].policy == "seed" and {nodes[r].policy for r in range(1, 5)} == {"map_elites"}
        for r in range(1, 5):
            selection = store.get_selection("isl", 0, r)
            assert selection is not None and nodes[r].island == selection.island == r % 2
            assert nodes[r].parent_ids == [selection.parent_id]
        with database.pool.connection() as conn:
            elites = conn.execute(
                "SELECT island, node_id, origin_island FROM elites WHERE run_id = 'isl'"
            ).fetchall()
            migrated = [
                row["round"] for row in conn.execute("SELECT round FROM migrations WHERE run_id = 'isl'")
            ]
        assert migrated == [2, 4]
        for elite in elites:  # a node joins its own island's grid, or another one by migration
            own = nodes[int(elite["node_id"].split("-r")[1][:4])].island
            assert elite["origin_island"] == own
        assert {(e["island"], e["node_id"]) for e in elites} >= {(r % 2, nodes[r].id) for r in range(1, 5)}
    finally:
        services.clear_services()
