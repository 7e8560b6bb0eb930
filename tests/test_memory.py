"""Node memory, sampling policies and the database itself, against the embedded Postgres server."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from evoforge.config import SamplingConfig
from evoforge.memory.database import Database, EmbeddingMismatchError, async_checkpointer, get_database
from evoforge.memory.embedded import SHARED_CLUSTER_ROOT, EmbeddedPostgres, cluster_dir
from evoforge.memory.nodes import NEAREST_EF_SEARCH, NodeRecord, NodeStore, code_hash
from evoforge.memory.sampling import Selection, select_context
from evoforge.tasks.spec import Score

DIM = 384
RUN = "run-a"


def unit(*weights: float) -> list[float]:
    """A normalised 384-d vector whose first coordinates are `weights`."""
    vector = [*weights, *([0.0] * (DIM - len(weights)))]
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def node(
    round: int, score: float | None = None, *, run: str = RUN, valid: bool = True, **fields
) -> NodeRecord:
    lane = fields.pop("lane", 0)
    return NodeRecord(
        id=f"{run}-r{round}-l{lane}",
        run_id=run,
        round=round,
        lane=lane,
        score=score,
        valid=valid,
        code=fields.pop("code", f"x = {round}\n"),
        **fields,
    )


def select(
    store: NodeStore, round: int, policy: str, inspirations: int, direction: str = "maximize", lane: int = 0
) -> Selection:
    """One selection of round `round` of RUN under `policy`."""
    return select_context(
        store,
        RUN,
        lane=lane,
        round=round,
        sampling=SamplingConfig(policy=policy, inspirations=inspirations),  # type: ignore[arg-type]
        score=Score(direction=direction),  # type: ignore[arg-type]
    )


@pytest.fixture
def store(database: Database) -> NodeStore:
    nodes = NodeStore(database)
    nodes.create_run(RUN, "circle_packing", "/tasks/circle_packing", {"rounds": 10})
    return nodes


def test_node_status_is_validated() -> None:
    with pytest.raises(ValueError, match="status.*'improved'"):
        node(1, 1.0, status="improved")


def test_a_private_state_dir_is_not_opened_to_the_server_user(tmp_path: Path) -> None:
    private = tmp_path / "home"
    private.mkdir()
    private.chmod(0o700)
    data_dir = cluster_dir(private / "state")
    try:
        assert data_dir == private / "state" / "postgres"
        if os.geteuid() == 0:  # the server runs as 'pgserver': the cluster lives outside the private tree
            assert data_dir.is_symlink() and data_dir.resolve().parent == SHARED_CLUSTER_ROOT
        else:  # the server runs as this user: the cluster lives where asked
            assert not data_dir.exists()
        assert private.stat().st_mode & 0o777 == 0o700
        assert cluster_dir(private / "state") == data_dir
    finally:
        if data_dir.is_symlink():
            data_dir.resolve().rmdir()


@pytest.mark.integration
def test_node_roundtrip_keeps_arrays_json_and_vector(store: NodeStore) -> None:
    original = node(
        3,
        2.5,
        lane=1,
        parent_ids=["p1", "p2"],
        inspiration_ids=["i1"],
        name="hex lattice",
        motivation="pack tighter",
        diff="<<<<<<< SEARCH",
        status="evaluated",
        metrics={"sum_radii": 2.5, "nested": {"ok": [1, 2]}},
        stage_results=[{"stage": "quick", "score": 2.4}, {"stage": "full", "score": 2.5}],
        analysis="better",
        feedback="keep going",
        embedding=unit(1, 2, 3),
        cognition_ids=["cog-1"],
        tokens_in=1200,
        tokens_out=300,
        llm_seconds=4.5,
        eval_seconds=1.25,
        resources={"cpus": 1},
        policy="ucb1",
        island=2,
    )
    assert store.record_node(original)
    loaded = store.get_node(original.id)
    assert loaded is not None and loaded.created_at is not None
    assert loaded.embedding == pytest.approx(original.embedding, abs=1e-6)
    for name in ("embedding", "created_at"):
        setattr(loaded, name, getattr(original, name))
    assert loaded == original
    assert store.get_node("missing") is None


@pytest.mark.integration
def test_runs_are_registered_once_and_updated(store: NodeStore) -> None:
    again = store.create_run(RUN, "other_task", "/elsewhere", {"rounds": 99})
    assert (again.task, again.config) == ("circle_packing", {"rounds": 10}), "an existing run is kept"
    store.update_run_config(RUN, {"rounds": 20})
    store.update_run_status(RUN, "stopped", "interrupted by the user")
    run = store.get_run(RUN)
    assert run is not None and run.config == {"rounds": 20}
    assert (run.status, run.stop_reason) == ("stopped", "interrupted by the user")
    assert run.updated_at is not None and run.created_at is not None and run.updated_at > run.created_at
    assert [r.id for r in store.list_runs()] == [RUN] and store.list_runs("other_task") == []
    with pytest.raises(ValueError, match="status.*'paused'"):
        store.update_run_status(RUN, "paused")
    with pytest.raises(KeyError, match="no run 'nope'"):
        store.update_run_status("nope", "failed")


@pytest.mark.integration
def test_record_node_is_idempotent(store: NodeStore) -> None:
    assert store.record_node(node(0, 1.0))
    assert not store.record_node(node(0, 99.0, name="a replay after a crash"))
    assert store.count_nodes(RUN) == 1
    kept = store.get_node(f"{RUN}-r0-l0")
    assert kept is not None and kept.score == 1.0 and kept.name == ""


@pytest.mark.integration
def test_best_node_in_both_directions_ignores_invalid_and_non_finite(store: NodeStore) -> None:
    for n in (
        node(0, 5.0),
        node(1, 9.0),
        node(2, 1.0),
        node(3, 100.0, valid=False, status="invalid"),
        node(4, float("nan")),
        node(5, float("inf")),
        node(6, float("-inf")),
        node(7, None, valid=False, status="runtime_failed"),
        node(8, 9.0),
    ):
        store.record_node(n)
    best_max = store.best_node(RUN, "maximize")
    best_min = store.best_node(RUN, "minimize")
    assert best_max is not None and best_max.id == f"{RUN}-r1-l0", "the earliest of the tied best"
    assert best_min is not None and best_min.id == f"{RUN}-r2-l0"
    totals = store.run_totals(RUN, "minimize")
    assert totals["nodes"] == 9 and totals["valid_nodes"] == 7 and totals["best_score"] == 1.0
    assert totals["statuses"] == {"evaluated": 7, "invalid": 1, "runtime_failed": 1}
    with pytest.raises(ValueError, match="direction.*'up'"):
        store.best_node(RUN, "up")  # type: ignore[arg-type]


@pytest.mark.integration
def test_nearest_nodes_orders_by_cosine_similarity_within_the_run(store: NodeStore) -> None:
    store.create_run("run-b", "circle_packing", "", {})
    store.record_node(node(0, 1.0, embedding=unit(1, 0)))
    store.record_node(node(1, 1.0, embedding=unit(1, 1)))
    store.record_node(node(2, 1.0, embedding=unit(0, 1)))
    store.record_node(node(3, 1.0, embedding=None))
    store.record_node(node(0, 1.0, run="run-b", embedding=unit(1, 0.1)))
    nearest = store.nearest_nodes(RUN, unit(1, 0.1), k=5)
    assert [n.round for n, _ in nearest] == [0, 1, 2]
    similarities = [s for _, s in nearest]
    assert similarities == sorted(similarities, reverse=True)
    assert similarities[0] == pytest.approx(1 / math.sqrt(1.01), abs=1e-5)
    assert similarities[2] == pytest.approx(0.1 / math.sqrt(1.01), abs=1e-5)
    assert store.find_by_code_hash(RUN, code_hash("x = 1   \n\n")).id == f"{RUN}-r1-l0"  # type: ignore[union-attr]
    assert store.find_by_code_hash(RUN, code_hash("y = 1")) is None


@pytest.mark.integration
def test_hnsw_scan_settings_hold_for_their_transaction_only(database: Database) -> None:
    def shown(conn: psycopg.Connection) -> tuple[str, str]:
        row = conn.execute("SELECT current_setting('hnsw.ef_search') AS ef, "
                           "current_setting('hnsw.iterative_scan') AS scan").fetchone()
        return row["ef"], row["scan"]

    with database.pool.connection() as conn:
        conn.execute("LOAD 'vector'")  # the settings exist once the extension's library is loaded
        with conn.transaction():
            database.configure_hnsw_scan(conn, ef_search=NEAREST_EF_SEARCH)
            assert shown(conn) == (str(NEAREST_EF_SEARCH), "strict_order")
        assert shown(conn) == ("40", "off"), "pgvector's defaults again after the transaction"


@pytest.mark.integration
def test_a_fork_remembers_its_origin_as_it_stood_when_the_forked_step_ran(store: NodeStore,
                                                                         database: Database) -> None:
    def database_now() -> datetime:
        with database.pool.connection() as conn:
            row = conn.execute("SELECT clock_timestamp() AS now").fetchone()
        assert row is not None
        return row["now"]

    store.record_node(node(0, 1.0, embedding=unit(1, 0)))
    step_ran = database_now()
    store.record_node(node(1, 1.0, embedding=unit(0, 1)))  # recorded after the forked step ran
    store.create_run("fork", "circle_packing", "", {}, forked_from=RUN, forked_at=step_ran)
    assert store.memory_scope("fork") == [("fork", None), (RUN, step_ran)]
    assert store.find_by_code_hash("fork", code_hash("x = 0\n")).id == f"{RUN}-r0-l0"  # type: ignore[union-attr]
    assert store.find_by_code_hash("fork", code_hash("x = 1\n")) is None
    assert [n.id for n, _ in store.nearest_nodes("fork", unit(0, 1), k=5)] == [f"{RUN}-r0-l0"]
    store.record_node(node(1, 1.0, run="fork", code="y = 1\n", embedding=unit(0, 1)))

    # a fork of the fork sees its origin's nodes up to its own step, and the original's up to the earlier step
    later_step = database_now()
    store.create_run("fork2", "circle_packing", "", {}, forked_from="fork", forked_at=later_step)
    assert store.memory_scope("fork2") == [("fork2", None), ("fork", later_step), (RUN, step_ran)]
    assert store.find_by_code_hash("fork2", code_hash("y = 1\n")).id == "fork-r1-l0"  # type: ignore[union-attr]
    assert store.find_by_code_hash("fork2", code_hash("x = 1\n")) is None
    assert {n.id for n, _ in store.nearest_nodes("fork2", unit(0, 1), k=5)} == {f"{RUN}-r0-l0", "fork-r1-l0"}
    assert store.find_by_code_hash(RUN, code_hash("y = 1\n")) is None, "the original never sees a fork's nodes"
    with pytest.raises(ValueError, match="forked_at"):
        store.create_run("fork3", "circle_packing", "", {}, forked_from=RUN)


def seed_scores(store: NodeStore, scores: list[float]) -> None:
    for round, score in enumerate(scores):
        store.record_node(node(round, score, embedding=unit(1, round)))


@pytest.mark.integration
@pytest.mark.parametrize(("direction", "best_round"), [("maximize", 2), ("minimize", 1)])
def test_greedy_picks_the_best(store: NodeStore, direction: str, best_round: int) -> None:
    seed_scores(store, [0.5, 0.1, 0.9, 0.3])
    store.record_node(node(4, 50.0, valid=False, status="invalid"))
    selection = select(store, 5, "greedy", 2, direction=direction)
    assert selection.parent.round == best_round and not selection.resumed
    assert len(selection.inspirations) == 2 and selection.parent not in selection.inspirations
    assert all(n.valid for n in selection.inspirations)


@pytest.mark.integration
def test_without_valid_nodes_the_seed_is_the_parent(store: NodeStore) -> None:
    store.record_node(node(0, None, valid=False, status="runtime_failed"))
    store.record_node(node(1, None, valid=False, status="timeout"))
    selection = select(store, 2, "ucb1", 3)
    assert selection.parent.round == 0 and selection.inspirations == []


@pytest.mark.integration
def test_random_is_reproducible_per_round(store: NodeStore, database: Database) -> None:
    seed_scores(store, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])

    def choices() -> list[str]:
        picks = [select(store, r, "random", 1) for r in range(10, 22)]
        return [f"{s.parent.id}+{s.inspirations[0].id}" for s in picks]

    first = choices()
    with database.pool.connection() as conn:
        conn.execute("DELETE FROM selections")  # forget the stored choices: they must come out the same
    assert choices() == first
    assert len({pick.split("+")[0] for pick in first}) > 1, "different rounds draw different parents"


@pytest.mark.integration
def test_ucb1_tries_every_node_once_then_favours_high_scorers(store: NodeStore) -> None:
    scores = [0.2, 0.8, 0.4, 1.0, 0.6]
    seed_scores(store, scores)

    def parent(round: int) -> NodeRecord:
        return select(store, round, "ucb1", 0).parent

    first_pass = [parent(r).round for r in range(10, 15)]
    assert first_pass == [3, 1, 4, 2, 0], "each node once, best first"
    for r in range(15, 115):
        parent(r)
    visits = store.visit_counts(RUN)
    by_score = [visits[f"{RUN}-r{i}-l0"] for i in sorted(range(5), key=lambda i: scores[i])]
    assert by_score == sorted(by_score), f"visits should rise with the score: {by_score}"
    assert by_score[-1] > 2 * by_score[0]


@pytest.mark.integration
def test_ucb1_rewards_parents_whose_children_do_well(store: NodeStore) -> None:
    seed_scores(store, [1.0, 1.0])

    def parent_round(round: int) -> int:
        return select(store, round, "ucb1", 0).parent.round

    assert [parent_round(2), parent_round(3)] == [0, 1]
    store.record_node(node(2, None, valid=False, status="runtime_failed", parent_ids=[f"{RUN}-r0-l0"]))
    store.record_node(node(3, 1.0, parent_ids=[f"{RUN}-r1-l0"], embedding=unit(0, 0, 1)))
    assert parent_round(4) == 3, "the new node is tried first"
    # Equal scores and visits: only the children tell node 0 (child failed) from node 1 (child as good).
    assert parent_round(5) == 1


@pytest.mark.integration
def test_a_round_selected_again_returns_the_stored_choice(store: NodeStore) -> None:
    seed_scores(store, [0.1, 0.9, 0.5])
    first = select(store, 7, "greedy", 2)
    store.record_node(node(6, 5.0))  # a better node appears; the round's choice must not change
    again = select(store, 7, "random", 2)
    assert again.resumed and again.policy == "greedy"
    assert again.parent.id == first.parent.id
    assert [n.id for n in again.inspirations] == [n.id for n in first.inspirations]
    other_lane = select(store, 7, "greedy", 0, lane=1)
    assert other_lane.parent.round == 6 and not other_lane.resumed


@pytest.mark.integration
def test_policy_state_survives_a_new_database_object(
    store: NodeStore, database: Database, tmp_path: Path
) -> None:
    seed_scores(store, [0.3, 0.6, 0.9])
    before = [select(store, r, "ucb1", 1) for r in (3, 4)]
    restarted = Database.open(database.url, tmp_path)  # as a new process would
    try:
        fresh = NodeStore(restarted)
        replay = select(fresh, 4, "ucb1", 1)
        assert replay.resumed and replay.parent.id == before[1].parent.id
        assert fresh.visit_counts(RUN) == store.visit_counts(RUN) == {f"{RUN}-r2-l0": 1, f"{RUN}-r1-l0": 1}
        following = select(fresh, 5, "ucb1", 1)
        assert following.parent.id == f"{RUN}-r0-l0", "the one node not yet visited"
    finally:
        restarted.close()


@pytest.mark.integration
def test_inspirations_mix_top_scorers_and_the_least_similar(store: NodeStore) -> None:
    store.record_node(node(0, 1.0, embedding=unit(1, 0, 0)))  # the best: the parent under greedy
    store.record_node(node(1, 0.9, embedding=unit(1, 0.1, 0)))  # second best: a top inspiration
    store.record_node(node(2, 0.5, embedding=unit(1, 0.2, 0)))  # similar to the parent
    store.record_node(node(3, 0.4, embedding=unit(0, 0, 1)))  # orthogonal: the diverse pick
    selection = select(store, 4, "greedy", 2)
    assert selection.parent.round == 0
    assert [n.round for n in selection.inspirations] == [1, 3]


@pytest.mark.integration
def test_embedding_dimension_mismatch_is_a_clear_error(database: Database, tmp_path: Path) -> None:
    with pytest.raises(EmbeddingMismatchError, match="stores 384-d embeddings .* but 768 was configured"):
        Database.open(database.url, tmp_path, embedding_dim=768)
    with pytest.raises(ValueError, match="embedding_dim: expected 1..2000, got 3072"):
        Database.open(database.url, tmp_path, embedding_dim=3072)
    assert database.migrate() == 6, "migrating again is a no-op"
    shared = get_database(database.url, tmp_path)
    try:
        assert get_database(database.url, tmp_path / "ignored with a URL") is shared
        with pytest.raises(
            EmbeddingMismatchError, match="open with 384-d embeddings from .* in this process, got 768"
        ):
            get_database(database.url, tmp_path, embedding_dim=768)
    finally:
        shared.close()


@pytest.mark.integration
def test_another_embedding_model_is_refused_once_vectors_are_stored(database: Database, tmp_path: Path) -> None:
    switched = Database.open(database.url, tmp_path, embedding_model="other-384d-model")
    switched.close()  # nothing was stored yet: the database now records the new model
    store = NodeStore(database)
    store.create_run(RUN, "t", "", {})
    store.record_node(node(0, 1.0, embedding=unit(1)))
    with pytest.raises(
        EmbeddingMismatchError,
        match="stores embeddings from 'other-384d-model' but 'all-MiniLM-L6-v2' was configured",
    ):
        Database.open(database.url, tmp_path)


@pytest.mark.integration
def test_checkpointers_share_the_database(database: Database) -> None:
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class Count(TypedDict):
        n: int

    builder = StateGraph(Count)
    builder.add_node("step", lambda state: {"n": state["n"] + 1})
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    graph = builder.compile(checkpointer=database.checkpointer())
    config = {"configurable": {"thread_id": "t1"}}
    assert graph.invoke({"n": 1}, config) == {"n": 2}
    assert graph.get_state(config).values == {"n": 2}

    async def read_back() -> int:
        async with async_checkpointer(database.url) as saver:
            checkpoint = await saver.aget_tuple(config)
            assert checkpoint is not None
            return checkpoint.checkpoint["channel_values"]["n"]

    assert asyncio.run(read_back()) == 2


@pytest.mark.integration
def test_an_advisory_lock_holds_off_other_sessions_until_its_block_ends(database: Database) -> None:
    def free_elsewhere(name: str) -> bool:
        """Whether another session could take the lock `name` now (closing that session lets it go)."""
        with psycopg.connect(database.url, autocommit=True) as other:
            row = other.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (name,)).fetchone()
            return bool(row and row[0])

    with pytest.raises(RuntimeError, match="inside the block"), database.advisory_lock("seed:run-a"):
        assert not free_elsewhere("seed:run-a")
        assert free_elsewhere("seed:run-b"), "another name is another lock"
        raise RuntimeError("a failure inside the block")
    assert free_elsewhere("seed:run-a"), "a failure inside the block still released the lock"


@pytest.mark.integration
def test_embedded_server_is_shared_and_survives_restarts(embedded_postgres: EmbeddedPostgres) -> None:
    db = Database.open(None, embedded_postgres.state_dir)
    try:
        store = NodeStore(db)
        store.create_run("shared", "t", "", {})
        child = textwrap.dedent(
            f"""
            from evoforge.memory.database import get_database
            from evoforge.memory.nodes import NodeRecord, NodeStore
            store = NodeStore(get_database(None, {str(embedded_postgres.state_dir)!r}))
            print(store.record_node(NodeRecord(id="shared-r0-l0", run_id="shared", round=0, code="x")))
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, env=os.environ
        )
        assert out.stdout.strip() == "True", out.stderr
        assert store.count_nodes("shared") == 1, "another process wrote through the same server"

        embedded_postgres.stop()  # as if someone stopped it: the next use starts it again
        assert not embedded_postgres.is_running()
        assert store.count_nodes("shared") == 1
        assert embedded_postgres.is_running()

        with psycopg.connect(db.url, autocommit=True) as admin:  # every connection killed
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        assert store.get_node("shared-r0-l0") is not None
        started = time.monotonic()
        embedded_postgres.stop()
        embedded_postgres.ensure_running()  # restarted behind the pool's back
        assert time.monotonic() - started < 30
        assert store.count_nodes("shared") == 1

        postmaster = int((embedded_postgres.data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)  # a crash: stale pid and socket lock files stay behind
        deadline = time.monotonic() + 10
        while embedded_postgres.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.get_node("shared-r0-l0") is not None, "crash recovery kept the committed node"
    finally:
        db.close()


@pytest.mark.integration
def test_the_fingerprint_migration_rehashes_nodes_recorded_before_it(store: NodeStore, database: Database) -> None:
    code = "def f(x):\n    total = x * 2  # doubled\n    return total\n"
    store.record_node(node(1, 1.0, code=code))
    with database.pool.connection() as conn:
        # what version 2 stored: the text with trailing whitespace and blank lines removed
        conn.execute("UPDATE nodes SET code_hash = 'text-hash' WHERE run_id = %s", (RUN,))
        conn.execute("DELETE FROM schema_version WHERE version = 3")
    assert store.find_by_code_hash(RUN, code_hash(code)) is None
    assert database.migrate() == 6
    echo = "def f(x):\n    doubled = x * 2\n    return doubled\n"
    assert store.find_by_code_hash(RUN, code_hash(echo)).id == f"{RUN}-r1-l0"  # type: ignore[union-attr]
