"""Run reports: derived figures on hand-made nodes (offline), then a report of a real scripted run, written
while the run goes on and after it, checked through its plot data and rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from evoforge.cognition.store import CognitionItem
from evoforge.memory.database import Database
from evoforge.memory.embedded import EmbeddedPostgres
from evoforge.memory.nodes import NODE_STATUSES, NodeRecord, RunRecord
from evoforge.report import RunData, collect_run, write_report
from evoforge.report.data import FUNNEL_GROUP, FUNNEL_STAGES
from evoforge.report.plots import _tree_positions

START = datetime(2026, 1, 1, tzinfo=UTC)
SEED_CODE = "def run():\n    return 1\n"
CHROMIUM = "/usr/bin/chromium"
SECTIONS = ("summary", "scores", "lineage", "funnel", "costs", "cognition", "top-nodes", "node-table")


def node(round_: int, name: str, *, lane: int = 0, status: str = "evaluated", score: float | None = None,
         parent: str | None = None, code: str = SEED_CODE, **fields: Any) -> NodeRecord:
    return NodeRecord(id=f"run-r{round_:04d}-l{lane}", run_id="run", round=round_, lane=lane, name=name,
                      status=status, score=score, valid=status == "evaluated", code=code,
                      parent_ids=[parent] if parent else [], created_at=START + timedelta(minutes=round_ * 10 + lane),
                      **fields)


def run_data(nodes: list[NodeRecord], *, status: str = "finished", direction: Any = "maximize",
             cognition: dict[str, CognitionItem] | None = None) -> RunData:
    return RunData(run=RunRecord(id="run", task="circle_packing", status=status), direction=direction,
                   nodes=nodes, cognition=cognition or {})


def sidecar(report_dir: Path, name: str) -> dict[str, Any]:
    assert (report_dir / f"{name}.png").stat().st_size > 5_000, f"{name}.png is missing or blank"
    return json.loads((report_dir / f"{name}.json").read_text())


# Offline: figures derived from hand-made nodes


def test_every_status_has_a_funnel_stage() -> None:
    assert set(FUNNEL_GROUP) == set(NODE_STATUSES)
    assert set(FUNNEL_GROUP.values()) < set(FUNNEL_STAGES)


def test_improvements_are_new_bests_in_recorded_order_in_the_tasks_direction() -> None:
    seed = node(0, "seed", score=5.0)
    nodes = [
        seed,
        node(1, "worse", score=6.0, parent=seed.id),
        node(1, "better", lane=1, score=4.0, parent=seed.id),
        node(2, "failed_low", status="early_rejected", score=1.0, parent=seed.id),
        node(3, "tie", score=4.0, parent=seed.id),
        node(4, "best", score=3.5, parent=seed.id),
    ]
    data = run_data(nodes, direction="minimize")
    assert data.improving_ids == ["run-r0001-l1", "run-r0004-l0"]
    assert data.best_node is not None and data.best_node.name == "best"
    assert dict(data.funnel()) == {"generated": 5, "static-rejected": 0, "duplicate": 0, "early-rejected": 1,
                                   "runtime-failed": 0, "evaluated": 4, "improved": 2}
    assert [top.node.name for top in data.top_nodes(3)] == ["best", "better", "tie"]


def test_costs_and_roles_add_up_per_round_and_per_role() -> None:
    usage = {"researcher": {"tokens_in": 100, "tokens_out": 20, "seconds": 2.0, "calls": 1},
             "analyzer": {"tokens_in": 50, "tokens_out": 10, "seconds": 1.0, "calls": 1}}
    nodes = [node(1, "a", lane=lane, tokens_in=150, tokens_out=30, llm_seconds=3.0, eval_seconds=4.0,
                  resources={"cpu_s": 2.5, "peak_memory_mb": 100.0 * (lane + 1), "usage": usage}) for lane in (0, 1)]
    data = run_data(nodes)
    (row,) = data.costs_by_round()
    assert row == {"round": 1, "nodes": 2, "tokens_in": 300, "tokens_out": 60, "llm_seconds": 6.0,
                   "eval_seconds": 8.0, "cpu_s": 5.0, "peak_memory_mb": 200.0}
    assert data.usage_by_role() == {"analyzer": {"tokens_in": 100, "tokens_out": 20, "seconds": 2.0, "calls": 2},
                                    "researcher": {"tokens_in": 200, "tokens_out": 40, "seconds": 4.0, "calls": 2}}


def test_lineage_layout_survives_a_chain_deeper_than_the_recursion_limit() -> None:
    chain = [node(0, "seed", score=0.0)]
    for round_ in range(1, 3000):
        chain.append(node(round_, f"n{round_}", score=float(round_), parent=chain[-1].id))
    y = _tree_positions(run_data(chain))
    assert len(y) == 3000 and set(y.values()) == {0.0}


def test_report_of_a_run_in_progress_escapes_what_the_models_wrote(tmp_path: Path) -> None:
    hostile = "<script>alert('x')</script>"
    lesson = CognitionItem(id="cog-1", task="circle_packing", kind="insight", title="rings beat grids",
                           content="put circles on rings", source="node:run-r0001-l0")
    seed = node(0, "seed", score=1.0)
    child = node(1, "ring", score=2.0, parent=seed.id, code=SEED_CODE.replace("1", "2") + f"# {hostile}\n",
                 motivation=f"try {hostile}", analysis="it worked", cognition_ids=["cog-1"])
    other_lane = node(1, "broken", lane=1, status="runtime_failed", parent=seed.id, error="boom")
    data = run_data([seed, child, other_lane], status="running", cognition={"cog-1": lesson})
    index = write_report(data, tmp_path / "report")

    html = index.read_text()
    assert 'id="in-progress"' in html
    assert hostile not in html and "&lt;script&gt;alert(" in html
    assert '<span class="add">+# &lt;script&gt;' in html  # the diff line against the parent, escaped
    assert "rings beat grids" in html and "run-r0001-l0" in html
    scores = sidecar(index.parent, "scores")
    assert [s["label"] for s in scores["series"]] == ["lane 0", "lane 1"]
    assert scores["scored_nodes"] == 2 and scores["best"] == [[0, 1.0], [1, 2.0]]
    lineage = sidecar(index.parent, "lineage")
    assert sorted(n["name"] for n in lineage["nodes"]) == ["broken", "ring", "seed"]
    assert [n["failed"] for n in lineage["nodes"] if n["name"] == "broken"] == [True]
    assert sorted(lineage["edges"]) == [[seed.id, child.id], [seed.id, other_lane.id]]


def _with_failures() -> tuple[RunData, dict[str, NodeRecord]]:
    """A seed, an improvement, a node whose costly stage a person rejected after its quick stage scored, and two
    nodes that failed before any score; the reason the person gave holds markup that must be escaped."""
    seed = node(0, "seed", score=1.0)
    nodes = {
        "seed": seed,
        "better": node(1, "better", score=2.0, parent=seed.id),
        "rejected": node(2, "rejected", status="rejected_by_human", score=1.5, parent=seed.id,
                         error="a person rejected stage 'full' (cost 2.0): not worth the <b>GPU</b> today"),
        "static": node(3, "static", status="static_rejected", parent=seed.id,
                       error="SyntaxError: invalid syntax (line 3)"),
        "crashed": node(3, "crashed", lane=1, status="runtime_failed", parent=seed.id, error="ZeroDivisionError"),
    }
    return run_data(list(nodes.values())), nodes


def test_report_says_why_each_node_failed(tmp_path: Path) -> None:
    data, _ = _with_failures()
    html = write_report(data, tmp_path / "report").read_text()
    assert "not worth the &lt;b&gt;GPU&lt;/b&gt; today" in html  # the person's reason, escaped
    assert "SyntaxError: invalid syntax (line 3)" in html and "ZeroDivisionError" in html


def test_score_plot_shows_unscored_and_rejected_nodes_by_status(tmp_path: Path) -> None:
    data, nodes = _with_failures()
    scores = sidecar(write_report(data, tmp_path / "report").parent, "scores")
    assert [p[1] for s in scores["series"] for p in s["points"]] == [1.0, 2.0]  # not the rejected node's 1.5
    assert scores["scored_nodes"] == 2
    assert sorted((n["id"], n["status"]) for n in scores["unscored"]) == sorted(
        (nodes[name].id, nodes[name].status) for name in ("rejected", "static", "crashed"))
    assert scores["unscored_rows"] == ["rejected_by_human", "runtime_failed", "static_rejected"]


def test_lineage_shows_a_rejected_node_without_a_score(tmp_path: Path) -> None:
    data, nodes = _with_failures()
    lineage = sidecar(write_report(data, tmp_path / "report").parent, "lineage")
    by_id = {n["id"]: n for n in lineage["nodes"]}
    assert by_id[nodes["rejected"].id]["score"] is None and by_id[nodes["rejected"].id]["failed"]
    assert by_id[nodes["better"].id]["score"] == 2.0


def test_lineage_axes_are_labelled(tmp_path: Path) -> None:
    data, _ = _with_failures()
    lineage = sidecar(write_report(data, tmp_path / "report").parent, "lineage")
    assert lineage["axes"] == {"x": "round", "y": "family branch"}


def test_report_of_a_run_with_no_node_yet(tmp_path: Path) -> None:
    index = write_report(run_data([], status="running"), tmp_path / "empty")
    assert "No valid node yet." in index.read_text()
    for name in ("scores", "lineage", "funnel", "costs", "roles"):
        sidecar(index.parent, name)


# A real scripted run (the one tests/test_graph.py drives through every branch)


@pytest.fixture(scope="module")
def scripted_run(embedded_postgres: EmbeddedPostgres, database_template: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Runs every_branch.yaml once for this module; writes one report mid-run (after round 2) and one at the end."""
    from test_graph import scripted_config

    from evoforge.graph.runner import start_run
    from evoforge.runtime import services

    tmp = tmp_path_factory.mktemp("report_run")
    name = f"test_report_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(embedded_postgres.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                       sql.Identifier(database_template)))
    database = Database.open(embedded_postgres.url(name), tmp)
    config = scripted_config(database, tmp, "every_branch.yaml")
    mid_run: dict[str, Any] = {}
    recorded: list[str] = []

    def report_mid_run(step: str, update: dict[str, Any]) -> None:
        recorded.extend([step] if step == "record_node" else [])
        if step == "record_node" and len(recorded) == 2:
            res = services.get_services(config)
            data = collect_run(res.nodes, "reported", cognition=res.cognition)
            mid_run.update(data=data, index=write_report(data, tmp / "mid_run"))

    try:
        start_run(config, "reported", on_update=report_mid_run)
        res = services.get_services(config)
        data = collect_run(res.nodes, "reported", cognition=res.cognition)
        yield {"data": data, "index": write_report(data, tmp / "report"), "mid_run": mid_run,
               "nodes": res.nodes.list_nodes("reported")}
    finally:
        services.clear_services()
        database.close()
        with psycopg.connect(embedded_postgres.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [(tag, value or "") for key, value in attrs if key in ("src", "href", "srcset", "data")]


@pytest.mark.integration
@pytest.mark.slow  # shares one ~60 s scripted run
def test_report_of_a_scripted_run_plots_every_node(scripted_run: dict[str, Any]) -> None:
    index: Path = scripted_run["index"]
    nodes: list[NodeRecord] = scripted_run["nodes"]
    data: RunData = scripted_run["data"]
    report_dir = index.parent
    assert [n.status for n in nodes] == ["evaluated", "evaluated", "evaluated", "early_rejected", "static_rejected"]

    scores = sidecar(report_dir, "scores")
    scored = [n for n in nodes if n.score is not None]
    assert scores["scored_nodes"] == len(scored) == 4  # the static rejection never ran
    assert sorted(p[1] for s in scores["series"] for p in s["points"]) == sorted(n.score for n in scored)
    assert scores["best"][-1][1] == max(n.score for n in scored if n.valid)
    lineage = sidecar(report_dir, "lineage")
    assert sorted(n["id"] for n in lineage["nodes"]) == sorted(n.id for n in nodes)
    assert len(lineage["edges"]) == 4 and {n["status"] for n in lineage["nodes"] if n["failed"]} == {
        "early_rejected", "static_rejected"}
    funnel_plot = sidecar(report_dir, "funnel")
    funnel = dict(zip(funnel_plot["stages"], funnel_plot["counts"], strict=True))
    assert funnel == {"generated": 4, "static-rejected": 1, "duplicate": 0, "early-rejected": 1,
                      "runtime-failed": 0, "evaluated": 2, "improved": len(data.improving_ids)}
    assert 1 <= len(data.improving_ids) <= 2
    costs = sidecar(report_dir, "costs")["rounds"]
    assert [row["round"] for row in costs] == [0, 1, 2, 3, 4]
    assert sum(row["tokens_in"] for row in costs) == sum(n.tokens_in for n in nodes) > 0
    roles = sidecar(report_dir, "roles")["roles"]
    assert {"researcher", "analyzer"} <= set(roles) and roles["researcher"]["calls"] >= 6

    # the lesson learnt from round 1 reached later Researchers; any improving node that saw it is credited
    used = {item for node_id in data.improving_ids for item in data.by_id[node_id].cognition_ids}
    assert {use.item.id for use in data.cognition_uses()} == used & set(data.cognition)

    html = index.read_text()
    parser = _References()
    parser.feed(html)
    images = [link for tag, link in parser.links if tag == "img"]
    assert sorted(images) == ["costs.png", "funnel.png", "lineage.png", "roles.png", "scores.png"]
    for tag, link in parser.links:
        assert link.startswith("#") or (report_dir / link).is_file(), f"<{tag}> refers to {link!r}"
    assert not re.search(r"https?:|//|@import|url\(", "".join(link for _, link in parser.links) + html.split(
        "</style>")[0].split("<style>")[1])
    assert html.count('class="card top-node"') == 3  # every valid node (the seed included)


@pytest.mark.integration
@pytest.mark.slow  # shares one ~60 s scripted run
def test_report_written_mid_run_shows_what_was_there(scripted_run: dict[str, Any]) -> None:
    mid_run = scripted_run["mid_run"]
    assert mid_run, "the report callback never ran during the run"
    data: RunData = mid_run["data"]
    assert data.run.status == "running" and [n.round for n in data.nodes] == [0, 1, 2]
    assert 'id="in-progress"' in mid_run["index"].read_text()
    assert len(sidecar(mid_run["index"].parent, "lineage")["nodes"]) == 3


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/install.sh installs Debian's chromium (apt-get install chromium)",
                    pytrace=False)
    with tempfile.TemporaryDirectory(prefix="evoforge-chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120, check=False,
        )


HARNESS = """<!DOCTYPE html><html><body><iframe id="report" src="{url}" width="1200" height="900"></iframe>
<pre id="result"></pre><script>
window.addEventListener("load", () => {{
  const page = document.getElementById("report").contentDocument;
  const images = [...page.images].map(img => [img.getAttribute("src"), img.complete && img.naturalWidth > 0]);
  document.getElementById("result").textContent = JSON.stringify({{images: images, title: page.title}});
}});
</script></body></html>"""


@pytest.mark.integration
@pytest.mark.slow  # shares one ~60 s scripted run
def test_report_renders_in_headless_chromium(scripted_run: dict[str, Any], tmp_path: Path) -> None:
    index: Path = scripted_run["index"]
    url = index.resolve().as_uri()

    dom = _chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert f'id="{section}"' in dom.stdout, f"section {section} missing from the rendered page"
    assert dom.stdout.count("<img ") == 5 and "Run reported" in dom.stdout

    # A page beside the report loads it in a frame and checks that every image decoded; chromium's
    # verbose log names every file the page asked for.
    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS.format(url=url))
    checked = _chromium("--allow-file-access-from-files", "--enable-logging=stderr", "--v=1", "--dump-dom",
                        harness.as_uri())
    assert checked.returncode == 0, checked.stderr[-2000:]
    found = re.search(r'<pre id="result">(.*?)</pre>', checked.stdout, re.S)
    assert found and found.group(1), f"the harness saw nothing: {checked.stdout[-1000:]}"
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["title"] == "EvoForge run reported"
    assert len(result["images"]) == 5 and all(ok for _, ok in result["images"]), result["images"]
    loads = re.findall(r"FileURLLoader::Start: (\S+)", checked.stderr)
    assert url in loads and len(loads) >= 6, loads
    for loaded in loads:
        path = Path(loaded.removeprefix("file://"))
        assert path.is_file(), f"the page asked for a missing file: {loaded}"
        assert path.parent in (index.parent.resolve(), tmp_path.resolve()), f"load outside the report: {loaded}"

    screenshot = tmp_path / "report.png"
    shot = _chromium("--hide-scrollbars", "--window-size=1280,3000", f"--screenshot={screenshot}", url)
    assert shot.returncode == 0 and screenshot.stat().st_size > 50_000, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
