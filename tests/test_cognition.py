"""Cognition: splitting notes, ingesting them, searching them with MiniLM + pgvector, write-back."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from evoforge.cognition.documents import MAX_WORDS, split_markdown
from evoforge.cognition.embeddings import (
    CachedEmbedder,
    LocalEmbedder,
    OpenAIEmbedder,
    embedding_identity,
    get_embedder,
)
from evoforge.cognition.store import CognitionStore, novel_lessons
from evoforge.config import CognitionConfig
from evoforge.memory.database import Database, EmbeddingMismatchError

TASK = "circle_packing"

PACKING_NOTES = """# Circle packing notes
Source: Packomania tables, E. Specht

## Hexagonal lattices
Start from a hexagonal lattice of equal circles and shrink the rows that touch the walls; it beats
a square grid because every interior circle touches six neighbours.

## Constrained optimisation with SLSQP
Optimise all centres and radii at once with scipy.optimize.minimize(method="SLSQP"): one inequality
constraint per pair of circles (distance minus the sum of radii) and four per circle for the walls.
Source: Nocedal & Wright, Numerical Optimization, chapter 18

```python
# a comment, not a heading
```
"""

TRAINING_NOTES = """# Learning rate schedules
Warm up the learning rate linearly for the first steps, then decay it with a cosine to a tenth of
the peak; a transformer trained without warm-up often diverges in its first hundred steps.
"""

PDF_TEXT = [
    "Penalty methods for packing problems.",
    "Replace the hard non-overlap constraints by a penalty on the squared overlap",
    "of every pair of circles and anneal its weight upwards while descending the gradient.",
]


def write_pdf(path: Path, lines: list[str]) -> None:
    """A one-page PDF with Helvetica text, written by hand (no PDF library needed)."""
    text = " ".join(f"({line}) '" for line in lines)
    content = f"BT /F1 11 Tf 72 720 Td 14 TL {text} ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> "
        "/Contents 5 0 R >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)


@pytest.fixture
def notes_dir(tmp_path: Path) -> Path:
    notes = tmp_path / "cognition"
    (notes / "deep").mkdir(parents=True)
    (notes / "packing.md").write_text(PACKING_NOTES)
    (notes / "deep" / "training.md").write_text(TRAINING_NOTES)
    (notes / "image.png").write_bytes(b"\x89PNG not a note")
    write_pdf(notes / "penalties.pdf", PDF_TEXT)
    return notes


def test_code_in_a_note_keeps_its_blank_lines_and_indentation() -> None:
    code = ("def optimise(start):\n    n = len(start)\n\n    def gaps(v):\n        return v[:n]\n\n"
            "    return gaps(start)\n")
    text = f"# Notes\n\n## An optimiser\n\n- Paste this function:\n```python\n{code}```\n\n- Sources: a book.\n"
    [passage] = split_markdown(text, "notes.md")
    assert f"```python\n{code}```" in passage.content


@pytest.fixture
def cognition(database: Database, embedder: LocalEmbedder) -> CognitionStore:
    return CognitionStore(database, embedder)


def test_markdown_is_split_at_headings_with_titles_sources_and_parts() -> None:
    long_section = "\n\n".join(" ".join(f"w{p}_{i}" for i in range(100)) for p in range(7))
    text = PACKING_NOTES + "\n## Long\n" + long_section + "\n"
    passages = split_markdown(text, "notes/packing.md")
    titles = [p.title for p in passages]
    assert titles[:2] == [
        "Circle packing notes / Hexagonal lattices",
        "Circle packing notes / Constrained optimisation with SLSQP",
    ]
    assert titles[2:] == [f"Circle packing notes / Long (part {i}/3)" for i in (1, 2, 3)]
    assert all(len(p.content.split()) <= MAX_WORDS for p in passages)
    assert "w6_99" in passages[-1].content, "no text is lost when a section is cut into parts"
    assert passages[0].source == "notes/packing.md — Source: Packomania tables, E. Specht"
    assert (
        passages[1].source
        == "notes/packing.md — Source: Nocedal & Wright, Numerical Optimization, chapter 18"
    )
    assert "# a comment, not a heading" in passages[1].content


@pytest.mark.integration
def test_ingested_notes_are_found_by_meaning_and_ingested_once(
    cognition: CognitionStore, notes_dir: Path
) -> None:
    added = cognition.ingest_files([notes_dir], TASK)
    assert added == 4, [item.title for item in cognition.list(TASK)]
    expectations = {
        "constraints between every pair of circles for scipy's optimiser": "Constrained optimisation with SLSQP",
        "penalise how much circles overlap instead of forbidding it": "Penalty methods",
        "six neighbours per circle in a regular grid": "Hexagonal lattices",
    }
    for query, title in expectations.items():
        results = cognition.search([query], task=TASK, k=3, min_similarity=0.0)
        assert title in results[0].content + results[0].title, (query, [r.title for r in results])
    pdf_item = next(item for item in cognition.list(TASK) if item.source.endswith("penalties.pdf"))
    assert pdf_item.title == "penalties p.1" and "squared overlap" in pdf_item.content
    assert cognition.ingest_files([notes_dir], TASK) == 0
    assert cognition.ingest_files([notes_dir], "another_task") == 4, "dedupe is per task"


@pytest.mark.integration
def test_search_merges_queries_and_filters_by_similarity_and_task(cognition: CognitionStore) -> None:
    lattice = cognition.add(TASK, "Hexagonal lattices pack circles densely.", title="lattice", source="a.md")
    warmup = cognition.add(
        None, "Warm up the learning rate before decaying it.", title="warm-up", source="b.md"
    )
    cognition.add(
        "other", "Hexagonal lattices pack circles densely, says the other task.", title="x", source="c"
    )
    results = cognition.search(
        ["hexagonal circle lattice", "learning rate warm-up", "hexagonal lattices pack circles"],
        task=TASK,
        k=5,
        min_similarity=0.3,
    )
    assert [r.id for r in results] == [lattice, warmup], "each item once, the other task's item left out"
    assert results[0].similarity is not None and results[0].similarity > 0.9
    assert cognition.search(["learning rate warm-up"], task=TASK, k=5, min_similarity=0.99) == []
    assert cognition.search([" "], task=TASK, k=5) == []
    assert len(cognition.search(["circles"], task=None, k=5, min_similarity=-1)) == 3


@pytest.mark.integration
def test_insights_are_written_back_with_their_node(cognition: CognitionStore) -> None:
    content = "Jittering the centres before SLSQP escapes the symmetric local optimum."
    item_id = cognition.add(
        TASK, content, title="jitter", source="analysis of run-a-r4-l0", kind="insight", node_id="run-a-r4-l0"
    )
    assert item_id is not None
    assert cognition.add(TASK, "  " + content + "\n", title="again", source="s", kind="insight") is None
    [found] = cognition.search(["random perturbation of circle centres"], task=TASK, k=1)
    assert (found.id, found.kind, found.node_id) == (item_id, "insight", "run-a-r4-l0")
    assert [item.id for item in cognition.get(["missing", item_id])] == [item_id]
    with pytest.raises(ValueError, match="kind.*'rumour'"):
        cognition.add(TASK, "x", title="t", source="s", kind="rumour")


def test_local_embedder_gives_normalised_vectors(embedder: LocalEmbedder) -> None:
    vectors = embedder.embed(["circle packing", "learning rate"])
    assert [len(v) for v in vectors] == [384, 384]
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)
    assert get_embedder() is get_embedder("all-MiniLM-L6-v2")
    assert isinstance(get_embedder(), CachedEmbedder) and isinstance(get_embedder().inner, LocalEmbedder)
    # one torch thread once the model is loaded: the model shares the cores with the model server and the sandboxes
    assert torch.get_num_threads() == 1



def test_a_lesson_that_restates_one_the_task_holds_is_not_kept(embedder: LocalEmbedder) -> None:
    # three lessons one run of the 1.5B model wrote (2026-12-08), and one of another kind
    lesson = ("The improved packing method{} demonstrates the importance of carefully selecting the parameters and "
              "constraints to achieve the desired packing quality.")
    other = "Optimising the radii for fixed centres with a linear program is faster than a penalty method."
    held = [lesson.format("")]
    assert novel_lessons(embedder, held, [lesson.format("_v2"), other, lesson.format("_v3")], 0.9) == [other]
    assert novel_lessons(embedder, [], [lesson.format("_v2"), lesson.format("_v3")], 0.9) == [lesson.format("_v2")]
    assert novel_lessons(embedder, held, [lesson.format("_v2")], 1.01) == [lesson.format("_v2")]  # threshold off
    assert novel_lessons(embedder, held, [], 0.9) == []

class _CountingEmbedder:
    """A stand-in model that records every batch it is sent."""

    name = "counting"
    dim = 2

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        return [[float(len(text)), 1.0] for text in texts]


def test_the_cached_embedder_sends_only_texts_it_does_not_hold_in_one_call() -> None:
    model = _CountingEmbedder()
    cached = CachedEmbedder(model, size=3)
    assert cached.embed(["a", "bb", "a"]) == [[1.0, 1.0], [2.0, 1.0], [1.0, 1.0]]
    assert cached.embed(["bb", "ccc", "a"]) == [[2.0, 1.0], [3.0, 1.0], [1.0, 1.0]]
    assert model.batches == [["a", "bb"], ["ccc"]], "each text once, the held ones never again"
    cached.embed(["dddd"])  # holds 3: "bb", the least recently used, goes
    cached.embed(["a", "bb"])
    assert model.batches[-1] == ["bb"]
    assert cached.embed([]) == [] and model.batches[-1] == ["bb"]
    assert (cached.name, cached.dim) == ("counting", 2)
    with pytest.raises(ValueError, match="size: expected at least 1, got 0"):
        CachedEmbedder(model, size=0)


@pytest.mark.integration
def test_a_search_through_the_cached_embedder_finds_what_the_model_alone_finds(
    database: Database, embedder: LocalEmbedder, notes_dir: Path
) -> None:
    plain = CognitionStore(database, embedder)
    plain.ingest_files([notes_dir], TASK)
    cached = CognitionStore(database, CachedEmbedder(embedder))
    queries = ["constraints between every pair of circles", "six neighbours per circle", "overlap penalty"]
    cached.search(queries[1:], task=TASK, k=4, min_similarity=-1.0)  # two of the three held, batched apart
    for _ in range(2):
        found = cached.search(queries, task=TASK, k=4, min_similarity=-1.0)
        expected = plain.search(queries, task=TASK, k=4, min_similarity=-1.0)
        assert [item.id for item in found] == [item.id for item in expected]
        assert [item.similarity for item in found] == pytest.approx([item.similarity for item in expected], abs=1e-5)


class _FakeEmbedder:
    name = "tiny"
    dim = 8

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[1.0] + [0.0] * 7 for _ in texts]


@pytest.mark.integration
def test_an_embedder_of_another_dimension_is_refused(database: Database) -> None:
    with pytest.raises(
        EmbeddingMismatchError, match="'tiny' gives 8-d vectors but the database stores 384-d"
    ):
        CognitionStore(database, _FakeEmbedder()).add(TASK, "text", title="t", source="s")


@pytest.fixture
def embeddings_endpoint() -> Iterator[str]:
    """A local OpenAI-compatible /embeddings endpoint returning unnormalised 3-d vectors."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": [3.0, 4.0, float(i)]}
                for i in range(len(texts))
            ]
            body = json.dumps(
                {
                    "object": "list",
                    "data": data,
                    "model": request["model"],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            return None  # keep the test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    thread.join()


def test_openai_compatible_embedder_learns_its_dimension(
    embeddings_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_KEY_HERE", raising=False)
    model = OpenAIEmbedder("tiny-embed", base_url=embeddings_endpoint, api_key_env="NO_KEY_HERE")
    assert model.dim == 3
    assert model.embed(["a", "b"]) == [
        pytest.approx([0.6, 0.8, 0.0]),
        pytest.approx([3 / math.sqrt(26), 4 / math.sqrt(26), 1 / math.sqrt(26)]),
    ]
    with pytest.raises(ValueError, match="api_key_env: environment variable 'NO_KEY_HERE' is not set"):
        OpenAIEmbedder("text-embedding-3-small", api_key_env="NO_KEY_HERE")


def test_the_recorded_embedding_identity_is_known_without_loading_or_asked_of_the_endpoint(
    embeddings_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_KEY_HERE", raising=False)
    assert embedding_identity(CognitionConfig()) == ("all-MiniLM-L6-v2", 384)
    alias = CognitionConfig(embedding_model="sentence-transformers/all-MiniLM-L6-v2")
    assert embedding_identity(alias) == ("all-MiniLM-L6-v2", 384), "one name for one model"
    declared = CognitionConfig(
        embedding_model="big-embed", embedding_base_url="http://127.0.0.1:9/v1", embedding_dim=1024
    )
    assert embedding_identity(declared) == ("big-embed", 1024), "a declared dimension needs no request"
    endpoint = CognitionConfig(
        embedding_model="tiny-embed",
        embedding_base_url=embeddings_endpoint,
        embedding_api_key_env="NO_KEY_HERE",
    )
    assert embedding_identity(endpoint) == ("tiny-embed", 3)


@pytest.mark.integration
def test_a_note_edited_between_runs_retires_the_passages_it_no_longer_holds(
    cognition: CognitionStore, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.md"

    def write(*sections: str) -> None:
        notes.write_text("# Packing\n" + "".join(f"## {title}\nUse a {title.lower()} to place circles.\n"
                                                 for title in sections))

    def titles() -> set[str]:
        found = cognition.search(["place circles"], task=TASK, k=10, min_similarity=-1.0)
        assert {item.title for item in found} == {item.title for item in cognition.list(TASK)}
        return {item.title.split(" / ")[-1] for item in found}

    write("Square grid", "Hexagonal lattice")
    assert cognition.sync_files([notes], TASK) == (2, 0)
    write("Square grid", "Spiral")
    assert cognition.sync_files([notes], TASK) == (1, 1)
    assert titles() == {"Square grid", "Spiral"} and cognition.count(TASK) == 2
    hexagonal = [item.id for item in cognition.list(None) if "Hexagonal" in item.title]
    assert hexagonal == [], "a retired passage is not listed"
    write("Square grid", "Hexagonal lattice")  # the edit undone: the old passage comes back, not a copy
    assert cognition.sync_files([notes], TASK) == (0, 1)
    assert titles() == {"Square grid", "Hexagonal lattice"}
    cognition.add(TASK, "Lessons stay.", title="lesson", source=str(notes), kind="insight", node_id="n1")
    assert cognition.sync_files([notes], TASK) == (0, 0), "insights are never retired by a note's edit"
