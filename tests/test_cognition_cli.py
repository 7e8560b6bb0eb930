"""`evoforge cognition add | search | list | provenance` against the embedded Postgres and MiniLM."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cognition import PACKING_NOTES, PDF_TEXT, TRAINING_NOTES, write_pdf
from typer.testing import CliRunner, Result

from evoforge.cli import app
from evoforge.cognition import embeddings
from evoforge.cognition.embeddings import LocalEmbedder
from evoforge.cognition.store import CognitionStore
from evoforge.memory.database import Database, get_database
from evoforge.memory.nodes import NodeRecord, NodeStore

pytestmark = pytest.mark.integration
TASK = "circle_packing"
Invoke = Callable[..., Result]


@pytest.fixture
def cli(
    database: Database, embedder: LocalEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Invoke]:
    """Runs `evoforge ARGS...` on the test's database with the session's MiniLM model."""
    monkeypatch.setenv("EVOFORGE_DATABASE_URL", database.url)
    monkeypatch.setenv("EVOFORGE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "250")  # rich tables and messages unwrapped
    monkeypatch.setitem(embeddings._embedders, ("all-MiniLM-L6-v2", None, "OPENAI_API_KEY"), embedder)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, list(args))

    yield invoke
    get_database(database.url, tmp_path).close()


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    (folder / "training").mkdir(parents=True)
    (folder / "packing.md").write_text(PACKING_NOTES)
    (folder / "training" / "schedules.md").write_text(TRAINING_NOTES)
    (folder / "symmetry.txt").write_text(
        "Mirror symmetry halves the search: optimise one half of the square and reflect the circles.\n"
    )
    write_pdf(folder / "penalties.pdf", PDF_TEXT)
    return folder


def flat(result: Result) -> str:
    """The command's whole output with runs of whitespace (and any line wrapping) made single spaces."""
    return " ".join(result.output.split())


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ingest_search_and_list_through_the_command_line(
    cli: Invoke, notes: Path, database: Database
) -> None:
    added = cli("cognition", "add", str(notes), "--task", TASK)
    assert added.exit_code == 0, added.output
    assert "added 5 new items" in flat(added)
    expectations = {
        "penalise how much circles overlap instead of forbidding it": "penalties p.1",
        "reflect half of the layout across the middle": "symmetry",
        "constraints between every pair of circles for scipy's optimiser": "Constrained optimisation with SLSQP",
    }
    for query, title in expectations.items():
        results = as_json(cli("cognition", "search", query, "--task", TASK, "-k", "3", "--json"))
        assert len(results) == 3 and title in results[0]["title"], (query, [r["title"] for r in results])
        assert results[0]["similarity"] >= results[1]["similarity"] >= results[2]["similarity"]

    again = cli("cognition", "add", str(notes / "packing.md"), str(notes), "--task", TASK)
    assert again.exit_code == 0 and "added 0 new items; 5 items now held" in flat(again)
    listed = as_json(cli("cognition", "list", "--task", TASK, "--json"))
    assert len(listed) == 5 and {item["kind"] for item in listed} == {"prior"}
    assert as_json(cli("cognition", "list", "--kind", "insight", "--json")) == []
    table = cli("cognition", "search", "circle overlap penalty", "-k", "2")
    assert table.exit_code == 0 and "penalties p.1" in table.stdout

    wrong = cli("cognition", "list", "--kind", "rumour")
    assert wrong.exit_code == 2 and "kind: expected one of" in flat(wrong)
    missing = cli("cognition", "add", str(notes / "nope.md"))
    assert missing.exit_code == 2 and "no such file" in flat(missing)

    with database.pool.connection() as conn, conn.transaction():
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'cognition_embedding_idx'"
        ).fetchall()
        assert "USING hnsw (embedding vector_cosine_ops)" in indexes[0]["indexdef"]
        conn.execute("SET LOCAL enable_seqscan = off")  # a 5-row table would be scanned, not searched
        plan = conn.execute(
            "EXPLAIN SELECT id FROM cognition ORDER BY embedding <=> (SELECT embedding FROM cognition LIMIT 1) LIMIT 3"
        ).fetchall()
        assert any("cognition_embedding_idx" in row["QUERY PLAN"] for row in plan)


def test_provenance_names_the_items_a_node_saw_and_where_lessons_came_from(
    cli: Invoke, database: Database, embedder: LocalEmbedder
) -> None:
    nodes, cognition = NodeStore(database), CognitionStore(database, embedder)
    nodes.create_run("prov", TASK, "", {})
    prior = cognition.add(
        TASK, "Hexagonal lattices pack circles densely.", title="lattice", source="notes.md"
    )
    teacher = NodeRecord(
        id="prov-r1-l0",
        run_id="prov",
        round=1,
        name="square_grid",
        score=2.4,
        valid=True,
        cognition_ids=[prior or ""],
    )
    nodes.record_node(teacher)
    lesson = cognition.add(
        TASK,
        "Covering the whole square beats one ring by a wide margin.",
        title="lesson",
        source="node:prov-r1-l0",
        kind="insight",
        node_id=teacher.id,
    )
    assert prior and lesson
    learner = NodeRecord(
        id="prov-r2-l0",
        run_id="prov",
        round=2,
        name="corner_gap",
        parent_ids=[teacher.id],
        cognition_ids=[lesson, prior],
        code="y = 2\n",
    )
    nodes.record_node(learner)

    answer = as_json(cli("cognition", "provenance", learner.id, "--json"))
    assert [entry["item"]["id"] for entry in answer["seen"]] == [lesson, prior]
    assert [entry["item"]["kind"] for entry in answer["seen"]] == ["insight", "prior"]
    assert answer["seen"][0]["origin"]["id"] == teacher.id and answer["seen"][1]["origin"] is None
    assert answer["taught"] == []
    taught = as_json(cli("cognition", "provenance", teacher.id, "--json"))
    assert [item["id"] for item in taught["taught"]] == [lesson]
    assert [ref["id"] for ref in taught["reused_by"][lesson]] == [learner.id]

    table = cli("cognition", "provenance", teacher.id)
    assert table.exit_code == 0 and "read by prov-r2-l0" in table.stdout and "lattice" in table.stdout
    unknown = cli("cognition", "provenance", "prov-r9-l0")
    assert unknown.exit_code == 2 and "no node 'prov-r9-l0'" in flat(unknown)


def test_a_configured_embedding_model_unlike_the_stored_vectors_is_refused(
    cli: Invoke, notes: Path, database: Database, tmp_path: Path
) -> None:
    assert cli("cognition", "add", str(notes / "packing.md"), "--task", TASK).exit_code == 0
    get_database(database.url, tmp_path).close()  # as a new process would, see only what is stored
    other_model = tmp_path / "other_model.yaml"
    other_model.write_text(
        "cognition: {embedding_model: other-embedder, embedding_base_url: 'http://127.0.0.1:9/v1', embedding_dim: 384}\n"
    )
    refused = cli("cognition", "list", "--config", str(other_model))
    assert refused.exit_code == 2
    assert "stores embeddings from 'all-MiniLM-L6-v2' but 'other-embedder' was configured" in flat(refused)
    other_dim = tmp_path / "other_dim.yaml"
    other_dim.write_text("cognition: {embedding_model: text-embedding-3-small, embedding_dim: 1536}\n")
    refused = cli("cognition", "search", "anything", "--config", str(other_dim))
    assert refused.exit_code == 2 and "stores 384-d embeddings" in flat(refused)
