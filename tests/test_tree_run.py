"""A scripted run on the tree task linear_attention_repo through the whole graph, the embedded Postgres and the
local sandbox: one candidate changes two files, a later one a third; refused replies give their reason and the
rounds go on; node memory, the sandbox's view of the tree, `best --out`, `diff`, `show` and the report all show
exactly those changes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from evoforge.cli import app
from evoforge.config import RunConfig
from evoforge.graph.runner import start_run
from evoforge.memory.database import Database, get_database
from evoforge.report import collect_run, write_report
from evoforge.runtime import services
from evoforge.tasks.spec import load_task
from evoforge.tasks.tree import changed_paths, decode_bundle

SCRIPTS = Path(__file__).parent / "fixtures" / "scripts"
pytestmark = [pytest.mark.integration, pytest.mark.slow]
TINY: dict[str, object] = {}
"""At the task's own quick settings (≈ 15-30 s an evaluation): measured 0.027 (seed), 0.087 (mixer + recipe),
0.0996 (+ config), deterministic on one thread; at 60 steps the config change did not help, so the best node would
not hold all three changes."""
TREE_FILES = {"config.yaml", "data.py", "mixer.py", "model.py", "run.py", "train.py"}


def tree_task(tmp_path: Path) -> Path:
    """A copy of the example task (settings changed by TINY), its tree holding a symlink to a directory outside it."""
    task_dir = tmp_path / "linear_attention_repo"
    shutil.copytree(load_task("linear_attention_repo").root, task_dir,
                    ignore=shutil.ignore_patterns("__pycache__"))
    spec = yaml.safe_load((task_dir / "task.yaml").read_text())
    for stage in spec["stages"]:
        stage["settings"] = {**stage["settings"], **TINY}
    (task_dir / "task.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (tmp_path / "outside").mkdir()
    (task_dir / "repo" / "outside_link").symlink_to(tmp_path / "outside")
    return task_dir


def test_a_tree_run_changes_two_files_then_a_third(database: Database, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    task_dir = tree_task(tmp_path)
    config = RunConfig(task=str(task_dir), rounds=2, llm={"provider": "scripted",
                                                          "script": str(SCRIPTS / "linear_attention_repo.yaml")},
                       database_url=database.url, state_dir=tmp_path / "state",
                       sampling={"policy": "greedy", "inspirations": 1}, cognition={"top_k": 2},
                       bounds={"max_parse_retries": 4},
                       novelty={"duplicate_similarity": 0.9999, "judge_similarity": 0.9999})
    outcome = start_run(config, "tree", on_update=lambda node, update: None)
    assert outcome.state["stop_reason"] == "2 rounds done"
    nodes = {n.round: n for n in services.get_services(config).nodes.list_nodes("tree")}
    seed, first, second = nodes[0], nodes[1], nodes[2]
    for node in (seed, first, second):
        assert node.status == "evaluated", (node.round, node.status, node.error)

    # node memory: exactly the files each candidate changed, against the parent it was made from
    assert first.parent_ids == [seed.id] and second.parent_ids == [first.id]
    assert changed_paths(seed.code, first.code) == ["mixer.py", "train.py"]
    assert changed_paths(first.code, second.code) == ["config.yaml"]
    assert set(decode_bundle(second.code)) == {"config.yaml", "mixer.py", "train.py"}, "fixed files stay in the task"
    assert "+++ b/mixer.py" in first.diff and "+++ b/train.py" in first.diff and "config.yaml" not in first.diff
    assert "+++ b/config.yaml" in second.diff and "mixer.py" not in second.diff
    assert second.score > first.score > seed.score, [seed.score, first.score, second.score]

    # refused replies: each reason recorded, and the round went on to the next reply
    assert "'model.py' is a fixed file of the task" in first.feedback
    for reason in ("climbs out of the tree with '..'", "is absolute", "goes through the symlink 'outside_link'",
                   "'train.py' is a required file of the task and may not be deleted"):
        assert reason in second.feedback, (reason, second.feedback)
    assert not (tmp_path / "helper.py").exists() and not list((tmp_path / "outside").iterdir())

    # the sandbox's view: the whole tree, the candidate's files as recorded, the fixed ones read-only
    for node in (first, second):
        view = json.loads((config.node_dir("tree", node.id) / "quick-try0" / "results" / "tree_view.json").read_text())
        assert set(view) == TREE_FILES, "the symlink out of the tree is not materialized"
        assert {path for path, entry in view.items() if entry["writable"]} == {"config.yaml", "mixer.py", "train.py"}
    mixer = decode_bundle(first.code)["mixer.py"]
    assert view["mixer.py"]["sha256"] == hashlib.sha256(mixer.encode()).hexdigest()

    # the CLI and the report, per file
    monkeypatch.setenv("EVOFORGE_DATABASE_URL", database.url)
    monkeypatch.setenv("EVOFORGE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    out = tmp_path / "best"
    best = runner.invoke(app, ["best", "tree", "--out", str(out)])
    assert best.exit_code == 0, best.output
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == TREE_FILES
    for path, text in decode_bundle(second.code).items():
        assert (out / path).read_text() == text
    assert (out / "model.py").read_text() == (task_dir / "repo" / "model.py").read_text()
    diff = runner.invoke(app, ["diff", seed.id, second.id])
    assert diff.exit_code == 0
    assert {line[6:] for line in diff.stdout.splitlines() if line.startswith("+++ b/")} == {
        "config.yaml", "mixer.py", "train.py"}
    show = runner.invoke(app, ["show", second.id])
    assert "file config.yaml (changed)" in show.output and "file mixer.py (unchanged)" in show.output
    evaluated = runner.invoke(app, ["evaluate", str(task_dir), str(out), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["score"] == pytest.approx(second.score)

    data = collect_run(services.get_services(config).nodes, "tree")
    html = write_report(data, tmp_path / "report").read_text()
    for path in ("config.yaml", "mixer.py", "train.py"):
        assert f"+++ b/{path}" in html
    get_database(database.url, tmp_path / "state").close()
