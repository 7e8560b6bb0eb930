"""Which retrieved cognition item the Researcher focuses on (evoforge.agents.sampler._focus_first), and the count of
earlier focuses it is chosen by (cognition/provenance.py:focus_counts, kept in `focus_uses` by triggers)."""

from __future__ import annotations

import pytest

from evoforge.agents.sampler import _focus_first
from evoforge.cognition.provenance import focus_counts
from evoforge.cognition.store import CognitionItem
from evoforge.memory.database import Database
from evoforge.memory.embedded import EmbeddedPostgres
from evoforge.memory.nodes import NodeRecord, NodeStore


def item(item_id: str, kind: str = "prior") -> CognitionItem:
    return CognitionItem(id=item_id, task="t", kind=kind, title=item_id, content=item_id, source="s")


def test_the_focus_is_the_prior_used_least_even_when_a_lesson_is_newer() -> None:
    items = [item("near", "prior"), item("lesson", "insight"), item("far", "prior")]
    ordered = _focus_first(items, {"near": 2, "far": 1})
    assert [i.id for i in ordered] == ["far", "near", "lesson"]
    assert [i.id for i in _focus_first(items, {})] == ["near", "lesson", "far"], "ties go to the most similar"


def test_with_only_lessons_retrieved_the_least_used_lesson_is_the_focus() -> None:
    items = [item("a", "insight"), item("b", "insight")]
    assert [i.id for i in _focus_first(items, {"a": 1})] == ["b", "a"]


SCANNED_FOCUS = ("SELECT cognition_ids[1] AS item_id, count(*) AS uses FROM nodes "
                 "WHERE run_id = %s AND cardinality(cognition_ids) > 0 GROUP BY 1")
"""What focus_counts read before schema version 6: a scan of the run's nodes, the reference for the count table."""


def scanned_focus(database: Database, run_id: str) -> dict[str, int]:
    with database.pool.connection() as conn:
        return {row["item_id"]: int(row["uses"]) for row in conn.execute(SCANNED_FOCUS, (run_id,))}


def focused(run_id: str, round_: int, *items: str, lane: int = 0) -> NodeRecord:
    return NodeRecord(id=f"{run_id}-r{round_}-l{lane}", run_id=run_id, round=round_, lane=lane, code=f"x = {round_}\n",
                      cognition_ids=list(items))


@pytest.mark.integration
def test_focus_counts_follow_every_insert_path_and_survive_a_restart(
    database: Database, embedded_postgres: EmbeddedPostgres
) -> None:
    store = NodeStore(database)
    for run_id in ("run-a", "run-b"):
        store.create_run(run_id, "t", "", {})
    store.record_node(focused("run-a", 0))  # the seed: shown nothing
    store.record_node(focused("run-a", 1, "near", "far"))
    assert not store.record_node(focused("run-a", 1, "near", "far")), "the same node again is not recorded"
    store.record_node(focused("run-a", 1, "far", "near", lane=1))
    store.record_node(focused("run-b", 1, "near"))
    columns = "id, run_id, round, lane, status, code_hash, cognition_ids"
    with (database.pool.connection() as conn, conn.cursor() as cursor,
          cursor.copy(f"COPY nodes ({columns}) FROM STDIN") as copy):
        for round_ in range(2, 6):  # a bulk load: one statement, several nodes
            copy.write_row((f"run-a-r{round_}-l0", "run-a", round_, 0, "evaluated", f"h{round_}",
                            ["near" if round_ % 2 else "other"]))
    expected = {"near": 3, "far": 1, "other": 2}
    assert focus_counts(database, "run-a") == scanned_focus(database, "run-a") == expected
    assert focus_counts(database, "run-b") == {"near": 1}

    embedded_postgres.stop()
    embedded_postgres.ensure_running()
    reopened = Database.open(database.url, embedded_postgres.state_dir)
    try:
        assert focus_counts(reopened, "run-a") == expected, "the counts are stored, not kept in this process"
        NodeStore(reopened).record_node(focused("run-a", 6, "far"))
        assert focus_counts(reopened, "run-a") == scanned_focus(reopened, "run-a") == {**expected, "far": 2}
        with reopened.pool.connection() as conn:
            conn.execute("DELETE FROM nodes WHERE id = ANY(%s)", (["run-a-r2-l0", "run-a-r4-l0", "run-a-r3-l0"],))
            assert focus_counts(reopened, "run-a") == scanned_focus(reopened, "run-a") == {"near": 2, "far": 2}
            conn.execute("DELETE FROM runs WHERE id = 'run-a'")
            assert focus_counts(reopened, "run-a") == {}
            assert conn.execute("SELECT count(*) AS n FROM focus_uses WHERE run_id = 'run-a'").fetchone()["n"] == 0
        assert focus_counts(reopened, "run-b") == {"near": 1}
    finally:
        reopened.close()


@pytest.mark.integration
def test_the_focus_count_migration_counts_the_nodes_recorded_before_it(database: Database) -> None:
    store = NodeStore(database)
    store.create_run("run-a", "t", "", {})
    with database.pool.connection() as conn:  # the database as version 5 left it
        conn.execute("DROP TABLE focus_uses")
        conn.execute("DROP FUNCTION evoforge_focus_uses_change CASCADE")
        conn.execute("DELETE FROM schema_version WHERE version = 6")
    for round_, items in enumerate([[], ["near"], ["far", "near"], ["near"]]):
        store.record_node(focused("run-a", round_, *items))
    assert database.migrate() == 6
    assert focus_counts(database, "run-a") == scanned_focus(database, "run-a") == {"near": 2, "far": 1}
    store.record_node(focused("run-a", 4, "far"))
    assert focus_counts(database, "run-a") == {"near": 2, "far": 2}, "the triggers keep it from then on"
