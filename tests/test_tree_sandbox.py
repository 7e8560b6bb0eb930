"""A tree candidate in every sandbox backend: the evaluator sees the whole tree (evolvable files from the bundle,
fixed ones from the task), and a job that tries to change a fixed file cannot. The same toy evaluator on local,
docker and ray, so the three views can be compared."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from evoforge.config import SandboxConfig
from evoforge.sandbox import Sandbox, get_sandbox
from evoforge.tasks.spec import TaskSpec, load_task
from evoforge.tasks.tree import decode_bundle, encode_bundle
from evoforge.tools.evaluation import run_stage, run_static_check

pytestmark = pytest.mark.integration

EVALUATOR = textwrap.dedent('''
    """Reports the tree it was given and whether a fixed file could be changed; scores lib/score.py's SCORE."""
    import json, os, sys
    from pathlib import Path
    tree, results = Path(sys.argv[1]), Path(sys.argv[2])
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
    try:
        (tree / "fixed.txt").write_text("changed by the job")
        overwritten = True
    except OSError:
        overwritten = False
    try:
        (tree / "other.txt").write_text("replaced by the job")
        os.replace(tree / "other.txt", tree / "fixed.txt")
        replaced = True
    except OSError:
        replaced = False
    sys.path.insert(0, str(tree))
    import lib.score
    metrics = {"files": files, "fixed_overwritten": overwritten, "fixed_replaced": replaced,
               "fixed_text": (tree / "fixed.txt").read_text()}
    (results / "metrics.json").write_text(json.dumps({"score": float(lib.score.SCORE), "valid": True,
                                                      "metrics": metrics}))
''')
CHECK = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    tree, results = Path(sys.argv[1]), Path(sys.argv[2])
    reasons = [] if (tree / "fixed.txt").is_file() and (tree / "lib" / "score.py").is_file() else ["tree incomplete"]
    (results / "check.json").write_text(json.dumps({"ok": not reasons, "reasons": reasons}))
''')


def toy_tree_task(root: Path) -> TaskSpec:
    (root / "tree" / "lib").mkdir(parents=True)
    (root / "tree" / "lib" / "__init__.py").write_text("")
    (root / "tree" / "lib" / "score.py").write_text("SCORE = 1.0\n")
    (root / "tree" / "fixed.txt").write_text("fixed context\n")
    (root / "evaluate.py").write_text(EVALUATOR)
    (root / "check.py").write_text(CHECK)
    (root / "task.yaml").write_text(yaml.safe_dump({
        "name": "toy_tree", "description": "toy", "tree": "tree", "evolve": ["lib/*.py"],
        "stages": [{"name": "quick", "timeout_s": 60}], "rules": {"static_check": {"script": "check.py"}}}))
    return load_task(root)


@pytest.fixture(params=["local", "docker", "ray"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    if request.param == "docker":
        from evoforge.sandbox.docker import DockerSandbox

        yield DockerSandbox(base_url=request.getfixturevalue("docker_engine"))
        return
    if request.param == "ray":
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        ray_sandbox = get_sandbox("ray", "bubblewrap", SandboxConfig(backend="ray", ray={"num_cpus": 1}))
        yield ray_sandbox
        ray_sandbox.close()  # type: ignore[attr-defined]
        return
    yield get_sandbox("local", "auto", SandboxConfig())


def test_every_backend_gets_the_whole_tree_with_fixed_files_read_only(tmp_path: Path, sandbox: Sandbox) -> None:
    task = toy_tree_task(tmp_path / "task")
    files = decode_bundle(task.seed_code())
    files["lib/score.py"] = "SCORE = 2.5\n"
    files["lib/extra.py"] = "X = 1\n"
    code = encode_bundle(files)
    outcome = run_stage(task, task.stages[0], code, tmp_path / "work", sandbox)
    assert outcome["status"] == "ok", (outcome["error"], outcome["stderr_tail"])
    assert outcome["score"] == 2.5
    assert outcome["metrics"]["files"] == ["fixed.txt", "lib/__init__.py", "lib/extra.py", "lib/score.py"]
    assert outcome["metrics"]["fixed_overwritten"] is False
    if "not isolated" not in " ".join(outcome["warnings"]):  # bubblewrap and docker mount fixed files read-only
        assert outcome["metrics"]["fixed_replaced"] is False and outcome["metrics"]["fixed_text"] == "fixed context\n"
    assert (task.root / "tree" / "fixed.txt").read_text() == "fixed context\n", "the task's own copy is untouched"
    verdict = run_static_check(task, code, tmp_path / "check", sandbox)
    assert verdict.reasons == []


def test_a_tree_candidate_that_raises_is_a_runtime_error_for_the_debugger(tmp_path: Path) -> None:
    task = toy_tree_task(tmp_path / "task")
    files = decode_bundle(task.seed_code())
    files["lib/score.py"] = "SCORE = 1 / 0\n"
    outcome = run_stage(task, task.stages[0], encode_bundle(files), tmp_path / "work",
                        get_sandbox("local", "auto", SandboxConfig()))
    assert outcome["status"] == "runtime_error", outcome["error"]
    assert 'program/lib/score.py", line 1' in (outcome["traceback"] or "")
    assert json.loads(json.dumps(outcome))["stage"] == "quick"
