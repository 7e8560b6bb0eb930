"""`evoforge show | diff | export | report` on hand-made nodes in the embedded Postgres, and the live
progress display of `evoforge run` (per-lane rows on a terminal, one plain line per round otherwise)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from evoforge.agents.base import TRANSCRIPT
from evoforge.cli import app
from evoforge.cognition.store import CognitionStore
from evoforge.config import RunConfig
from evoforge.memory.database import Database, get_database
from evoforge.memory.nodes import NodeRecord, NodeStore
from evoforge.tasks.spec import resolve_task_dir
from evoforge.ui.progress import RoundReporter

Invoke = Callable[..., Result]
SEED = "def run():\n    return 1\n"
CHILD = "def run():\n    # rings pack tighter\n    return 2\n"


class FixedEmbedder:
    """384-d vectors without loading a model: only storage is under test here."""

    name = "fixed"
    dim = 384

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[1.0] + [0.0] * 383 for _ in texts]


@pytest.fixture
def run_nodes(database: Database) -> dict[str, NodeRecord]:
    """A run of three nodes: the seed, an improving child that saw one cognition item, a failed child."""
    store = NodeStore(database)
    store.create_run("run", "circle_packing", str(resolve_task_dir("circle_packing")), {"rounds": 2})
    item = CognitionStore(database, FixedEmbedder()).add("circle_packing", "Rings of circles pack tighter.",
                                                          title="ring packing", source="notes.md")
    assert item is not None
    nodes = {
        "seed": NodeRecord(id="run-r0000-l0", run_id="run", round=0, name="seed", code=SEED, score=1.0, valid=True),
        "ring": NodeRecord(id="run-r0001-l0", run_id="run", round=1, name="ring", code=CHILD, score=2.0, valid=True,
                           parent_ids=["run-r0000-l0"], motivation="Rings waste less space.",
                           analysis="RESULT: the score doubled.", metrics={"sum_radii": 2.0},
                           cognition_ids=[item], tokens_in=120, tokens_out=30,
                           stage_results=[{"stage": "quick", "status": "ok", "score": 2.0, "wall_s": 1.5,
                                           "cpu_s": 1.2, "peak_memory_mb": 60.0}]),
        "broken": NodeRecord(id="run-r0002-l0", run_id="run", round=2, name="broken", code="def run(:\n",
                             status="static_rejected", parent_ids=["run-r0001-l0"], error="SyntaxError"),
    }
    for record in nodes.values():
        assert store.record_node(record)
    return nodes


@pytest.fixture
def cli(database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    monkeypatch.setenv("EVOFORGE_DATABASE_URL", database.url)
    monkeypatch.setenv("EVOFORGE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, list(args))

    yield invoke
    get_database(database.url, tmp_path / "state").close()


@pytest.mark.integration
def test_show_prints_what_a_node_holds(cli: Invoke, run_nodes: dict[str, NodeRecord]) -> None:
    result = cli("show", "run-r0001-l0")
    assert result.exit_code == 0, result.output
    for expected in ("Rings waste less space.", "RESULT: the score doubled.", '"sum_radii": 2.0', "run-r0000-l0 seed",
                     "[prior] ring packing (notes.md)", "# rings pack tighter", "stage quick: ok", "120+30 tokens"):
        assert expected in result.stdout, f"{expected!r} missing from:\n{result.stdout}"
    assert "SyntaxError" in cli("show", "run-r0002-l0").stdout
    missing = cli("show", "nope")
    assert missing.exit_code == 2 and "no node 'nope'" in missing.output


@pytest.mark.integration
def test_show_calls_prints_the_model_transcript(cli: Invoke, run_nodes: dict[str, NodeRecord], tmp_path: Path) -> None:
    assert "no model calls recorded" in cli("show", "run-r0001-l0", "--calls").stdout
    node_dir = tmp_path / "state" / "runs" / "run" / "nodes" / "run-r0001-l0"
    node_dir.mkdir(parents=True)
    calls = [{"role": "researcher", "attempt": "(0, 0, 0)", "seed": 7, "at": "2026-11-22T10:00:00+00:00",
              "messages": [{"type": "system", "content": "You are the Researcher"},
                           {"type": "human", "content": "## Parent program"}], "reply": "NAME: ring"},
             {"role": "analyzer", "attempt": "0", "seed": 8, "at": "2026-11-22T10:01:00+00:00",
              "messages": [{"type": "human", "content": "## Candidate"}], "error": "chat model call failed: down"}]
    (node_dir / TRANSCRIPT).write_text("".join(json.dumps(call) + "\n" for call in calls) + '{"role": "cut sh')
    out = cli("show", "run-r0001-l0", "--calls").stdout
    for expected in ("call 1: researcher, attempt (0, 0, 0), seed 7", "You are the Researcher", "NAME: ring",
                     "call 2: analyzer", "chat model call failed: down", "call 3: unreadable line"):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    assert out.index("# rings pack tighter") < out.index("call 1: researcher"), "the calls come after the node"


@pytest.mark.integration
def test_diff_of_two_nodes(cli: Invoke, run_nodes: dict[str, NodeRecord]) -> None:
    result = cli("diff", "run-r0000-l0", "run-r0001-l0")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == ["--- run-r0000-l0 (seed)", "+++ run-r0001-l0 (ring)"]
    assert "-    return 1" in lines and "+    # rings pack tighter" in lines and "+    return 2" in lines
    assert "same code" in cli("diff", "run-r0000-l0", "run-r0000-l0").output


@pytest.mark.integration
def test_export_writes_every_node_as_json_lines(cli: Invoke, run_nodes: dict[str, NodeRecord], tmp_path: Path) -> None:
    result = cli("export", "run", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == [n.id for n in run_nodes.values()]
    assert records[1]["motivation"] == "Rings waste less space." and records[1]["parent_ids"] == ["run-r0000-l0"]
    assert "embedding" not in records[0] and records[0]["created_at"]
    out = tmp_path / "nodes.jsonl"
    assert cli("export", "run", "--embeddings", "--out", str(out)).exit_code == 0
    assert len(out.read_text().splitlines()) == 3 and "embedding" in json.loads(out.read_text().splitlines()[0])
    wrong = cli("export", "run", "--format", "csv")
    assert wrong.exit_code == 2 and "--format: expected 'jsonl', got 'csv'" in wrong.output
    assert cli("export", "nope").exit_code == 2


@pytest.mark.integration
def test_report_command_writes_under_the_run_directory(cli: Invoke, run_nodes: dict[str, NodeRecord],
                                                       tmp_path: Path) -> None:
    result = cli("report", "run", "--top", "1")
    assert result.exit_code == 0, result.output
    index = tmp_path / "state" / "runs" / "run" / "report" / "index.html"
    html = index.read_text()
    assert html.count('class="card top-node"') == 1 and "ring packing" in html  # the improving node's item
    assert cli("report", "nope").exit_code == 2


# The live display


def updates(lanes: bool) -> list[tuple[str, dict[str, Any]]]:
    """Two lanes' steps interleaved as the runner streams them (`lane` only when `lanes`)."""
    def step(node: str, lane: int, **update: Any) -> tuple[str, dict[str, Any]]:
        return node, {**update, **({"lane": lane} if lanes else {})}

    return [
        step("prepare_run", 0, round=0, best_score=0.96),
        step("sample_context", 0, round=1),
        step("sample_context", 1, round=1),
        step("propose_candidate", 0, candidate={"name": "grid"}),
        step("run_evaluation", 0, stage_results=[{"score": 2.4}], status="evaluated"),
        step("propose_candidate", 1, candidate={"name": "ring"}),
        step("record_node", 0, best_score=2.4),
        step("check_candidate", 1, status="static_rejected"),
        step("record_node", 1, best_score=2.4),
    ]


def test_plain_output_prints_one_line_per_round_with_every_lane() -> None:
    out = io.StringIO()
    with RoundReporter(Console(file=out, force_terminal=False, width=300), RunConfig(rounds=4, workers=2)) as reporter:
        for node, update in updates(lanes=True):
            reporter.update(node, update)
    assert out.getvalue().splitlines() == [
        "round 1/4 (lane 0, its round 1): grid evaluated score=2.4 best=2.4 | lane 1 round 1 propose_candidate",
        "round 2/4 (lane 1, its round 1): ring static_rejected score=- best=2.4 | lane 0 round 1 record_node",
    ]
    assert reporter.completed == 2


def test_plain_output_of_a_single_lane_run() -> None:
    out = io.StringIO()
    with RoundReporter(Console(file=out, force_terminal=False, width=300), RunConfig(rounds=4)) as reporter:
        for node, update in updates(lanes=True):
            if update.pop("lane") == 0:  # a one-lane graph's updates carry no lane
                reporter.update(node, update)
    assert out.getvalue().splitlines() == ["round 1/4: grid evaluated score=2.4 best=2.4"]


def test_terminal_display_shows_a_row_per_lane() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    with RoundReporter(console, RunConfig(rounds=4, workers=2)) as reporter:
        for node, update in updates(lanes=True)[:8]:
            reporter.update(node, update)
        console.print(reporter)  # the live rows as they stand
    text = out.getvalue()
    assert "rounds 1/4" in text and "best 2.4 | last: grid evaluated 2.4" in text
    assert "lane 0  round 1  record_node" in text and "last: grid evaluated 2.4" in text
    assert "lane 1  round 1  check_candidate  ring" in text
