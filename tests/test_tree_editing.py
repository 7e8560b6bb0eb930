"""Tree programs without anything running: the bundle format, path safety, the task contract's tree fields, and
file-addressed replies applied or refused with their reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evoforge.agents.editing import EditError, UnchangedEdit
from evoforge.agents.tree_editing import RefusedChange, apply_tree_reply, split_changes
from evoforge.tasks.spec import TaskError, load_task
from evoforge.tasks.tree import (
    BundleError,
    PathRefused,
    bundle_diff,
    changed_paths,
    checked_path,
    decode_bundle,
    encode_bundle,
    glob_pattern,
    is_bundle,
)

MIXER = "def mix(x):\n    return x * 2\n"
TRAIN = "def train(steps):\n    lr = 0.1\n    return lr * steps\n"


def make_task(root: Path, **overrides: object) -> Path:
    """A tree task: repo/ with two evolvable Python files, a config, a fixed model and a symlink out of the tree."""
    repo = root / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "mixer.py").write_text(MIXER)
    (repo / "train.py").write_text(TRAIN)
    (repo / "config.yaml").write_text("lr: 0.1\nsteps: 10\n")
    (repo / "model.py").write_text("from src.mixer import mix\n")
    (root / "outside").mkdir()
    (repo / "escape").symlink_to(root / "outside")
    (root / "evaluate.py").write_text("print('evaluate')\n")
    spec = {"name": "toy_tree", "description": "a toy tree", "tree": "repo",
            "evolve": ["src/*.py", "train.py", "config.yaml"], "stages": [{"name": "quick", "timeout_s": 10}],
            **overrides}
    (root / "task.yaml").write_text(yaml.safe_dump(spec))
    return root


def test_bundle_round_trips_every_byte() -> None:
    files = {"b.py": "x = 1\n", "a/c.yaml": "k: v", "empty.txt": "", "tricky.py": "=== FILE: x (1 line) ===\n\n\n"}
    text = encode_bundle(files)
    assert is_bundle(text) and decode_bundle(text) == files
    assert text.index("a/c.yaml") < text.index("b.py"), "files in path order"
    with pytest.raises(BundleError, match="announces 3 lines"):
        decode_bundle("=== FILE: a.py (3 lines) ===\nx\n")
    assert not is_bundle("def f():\n    pass\n")


@pytest.mark.parametrize(("raw", "reason"), [("../x.py", "climbs out"), ("/etc/passwd", "absolute"),
                                             ("a\\b.py", "backslashes"), ("~/x", "absolute"), ("", "empty"),
                                             ("src/__pycache__/m.pyc", "never a program file")])
def test_unsafe_paths_are_refused_with_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(PathRefused, match=reason):
        checked_path(raw)


def test_paths_are_normalised_and_globs_stay_in_their_directory() -> None:
    assert checked_path("./src//mixer.py") == "src/mixer.py"
    assert glob_pattern("src/*.py").match("src/mixer.py") and not glob_pattern("src/*.py").match("src/a/b.py")
    assert glob_pattern("src/**/*.py").match("src/a/b.py") and glob_pattern("src/**/*.py").match("src/b.py")


def test_tree_task_fields_are_validated(tmp_path: Path) -> None:
    task = load_task(make_task(tmp_path / "ok"))
    assert task.is_tree and not task.evolve_block
    assert set(decode_bundle(task.seed_code())) == {"src/mixer.py", "train.py", "config.yaml"}
    assert task.program_tree.required == {"train.py", "config.yaml"}
    assert "model.py" in task.program_tree.fixed_files()
    for overrides, message in [({"evolve": ["nope.py"]}, "no such file"),
                               ({"evolve": ["../x.py"]}, "climbs out"),
                               ({"adapter": "openevolve"}, "native adapter"),
                               ({"entry_points": ["train"]}, "program: file"),
                               ({"program": "model.py"}, "names the evolvable file"),
                               ({"tree": "missing"}, "expected a directory"),
                               ({"evolve_block": True}, "single-file")]:
        with pytest.raises(TaskError, match=message):
            load_task(make_task(tmp_path / message.replace(" ", "_").replace(":", ""), **overrides))


def reply(body: str) -> str:
    return "NAME: two_files\nMOTIVATION: change two files.\n" + body


TWO_FILES = reply("""FILE: src/mixer.py
<<<<<<< SEARCH
    return x * 2
=======
    return x * 3
>>>>>>> REPLACE
FILE: config.yaml
```yaml
lr: 0.3
steps: 10
```
""")


def test_a_reply_changes_two_files_and_adds_one(tmp_path: Path) -> None:
    task = load_task(make_task(tmp_path))
    seed = task.seed_code()
    child, modes = apply_tree_reply(task.program_tree, seed, TWO_FILES)
    assert modes == {"src/mixer.py": "diff", "config.yaml": "rewrite"}
    assert changed_paths(seed, child) == ["config.yaml", "src/mixer.py"]
    files = decode_bundle(child)
    assert files["src/mixer.py"] == "def mix(x):\n    return x * 3\n" and files["train.py"] == TRAIN
    diff = bundle_diff(seed, child)
    assert "--- a/config.yaml" in diff and "+++ b/src/mixer.py" in diff and not any("train.py" in d for d in diff)
    added, modes = apply_tree_reply(task.program_tree, child, reply(
        "NEW FILE: src/extra.py\n```python\nK = 1\n```\nDELETE FILE: src/mixer.py\n"))
    assert modes == {"src/extra.py": "new", "src/mixer.py": "deleted"}
    assert set(decode_bundle(added)) == {"src/extra.py", "train.py", "config.yaml"}


def test_blocks_without_a_header_go_to_the_one_file_they_match(tmp_path: Path) -> None:
    task = load_task(make_task(tmp_path))
    child, modes = apply_tree_reply(task.program_tree, task.seed_code(), reply(
        "<<<<<<< SEARCH\n    lr = 0.1\n=======\n    lr = 0.2\n>>>>>>> REPLACE\n"))
    assert modes == {"train.py": "diff"}


def test_a_fenced_python_file_replaces_the_functions_it_gives(tmp_path: Path) -> None:
    task = load_task(make_task(tmp_path))
    child, modes = apply_tree_reply(task.program_tree, task.seed_code(), reply(
        "FILE: train.py\n```python\ndef train(steps):\n    return 0.5 * steps\n```\n"))
    assert decode_bundle(child)["train.py"].strip() == "def train(steps):\n    return 0.5 * steps"


def test_header_lines_inside_code_do_not_start_a_section() -> None:
    changes = split_changes("FILE: a.py\n<<<<<<< SEARCH\nx = 1\n=======\nFILE: int = 2\n>>>>>>> REPLACE\n")
    assert [c.path for c in changes] == ["a.py"] and "FILE: int = 2" in changes[0].text


@pytest.mark.parametrize(("body", "reason"), [
    ("FILE: model.py\n<<<<<<< SEARCH\nfrom src.mixer import mix\n=======\nx = 1\n>>>>>>> REPLACE\n",
     "'model.py' is a fixed file"),
    ("NEW FILE: ../evil.py\n```python\nx = 1\n```\n", "climbs out of the tree"),
    ("NEW FILE: /tmp/evil.py\n```python\nx = 1\n```\n", "is absolute"),
    ("NEW FILE: escape/evil.py\n```python\nx = 1\n```\n", "goes through the symlink 'escape'"),
    ("DELETE FILE: train.py\n", "required file"),
    ("NEW FILE: notes.md\n```\nhello\n```\n", "not evolvable"),
])
def test_forbidden_changes_are_refused_with_their_reason(tmp_path: Path, body: str, reason: str) -> None:
    task = load_task(make_task(tmp_path))
    with pytest.raises(RefusedChange, match=reason):
        apply_tree_reply(task.program_tree, task.seed_code(), reply(TWO_FILES.split("NAME")[0] + body))


def test_unusable_replies_say_what_to_fix(tmp_path: Path) -> None:
    task = load_task(make_task(tmp_path))
    seed = task.seed_code()
    with pytest.raises(UnchangedEdit):
        apply_tree_reply(task.program_tree, seed, reply("FILE: train.py\n<<<<<<< SEARCH\n    lr = 0.1\n=======\n"
                                                        "    lr = 0.1\n>>>>>>> REPLACE\n"))
    with pytest.raises(EditError, match="no change found"):
        apply_tree_reply(task.program_tree, seed, reply("I would change the learning rate."))
    with pytest.raises(EditError, match="FILE: train.py: SEARCH block 1"):
        apply_tree_reply(task.program_tree, seed, reply("FILE: train.py\n<<<<<<< SEARCH\nnope\n=======\nx\n"
                                                        ">>>>>>> REPLACE\n"))


def test_materialize_writes_the_whole_tree_with_fixed_files_read_only(tmp_path: Path) -> None:
    task = load_task(make_task(tmp_path / "task"))
    child, _ = apply_tree_reply(task.program_tree, task.seed_code(), TWO_FILES)
    dest = tmp_path / "out" / "program"
    fixed = task.program_tree.materialize(child, dest)
    assert fixed == ["model.py"]
    assert (dest / "model.py").stat().st_mode & 0o222 == 0
    assert (dest / "config.yaml").read_text() == "lr: 0.3\nsteps: 10\n"
    assert not (dest / "escape").exists() and not (dest / "escape").is_symlink(), "a symlink out is left out"


def test_static_checks_run_per_changed_file_and_name_it(tmp_path: Path) -> None:
    from evoforge.agents.static_checker import code_problems

    task = load_task(make_task(tmp_path))
    seed = task.seed_code()
    files = decode_bundle(seed)
    files["src/mixer.py"] = "import src.helpers\nimport socketserver_nope\ndef mix(x):\n    return y\n"
    files["config.yaml"] = "lr: [0.1\n"
    problems = code_problems(task, encode_bundle(files), parent_code=seed)
    assert any(p.startswith("src/mixer.py: ") and "undefined name 'y'" in p for p in problems), problems
    assert any("module 'socketserver_nope' is not installed" in p for p in problems)
    assert not any("'src'" in p for p in problems), "the tree's own packages count as installed"
    assert any(p.startswith("config.yaml: not valid YAML") for p in problems)
    assert not any(p.startswith("train.py") for p in problems), "an unchanged file is not checked again"
    files["train.py"] = "def train(:\n"
    assert any(p.startswith("train.py: SyntaxError") for p in code_problems(task, encode_bundle(files)))


def test_the_view_leads_with_a_file_and_outlines_beyond_the_budget() -> None:
    from evoforge.agents.tree_view import FILES_BUDGET_CHARS, shown_files, traceback_location, tree_paths

    big = "def f():\n    return 1\n" + "# filler\n" * (FILES_BUDGET_CHARS // 9)
    shown = shown_files({"a.py": "x = 1\n", "b.py": big, "c.yaml": "k: v\n"}, first="c.yaml")
    assert [s.path for s in shown] == ["c.yaml", "a.py", "b.py"]
    assert [s.outline for s in shown] == [False, False, True] and shown[2].text == "def f():"
    trace = 'Traceback:\n  File "/w/program/src/m.py", line 4, in f\n  File "/usr/lib/x/y.py", line 9\nE'
    assert traceback_location(trace) == ("src/m.py", 4)
    assert 'File "src/m.py", line 4' in tree_paths(trace) and 'File "y.py", line 9' in tree_paths(trace)


def test_imports_bound_again_go_below_the_docstring_and_future_imports() -> None:
    from evoforge.agents.tree_researcher import imports_below_header

    text = 'import math\n\n"""Doc."""\n\nfrom __future__ import annotations\n\nimport torch\nx = math.pi\n'
    fixed = imports_below_header(text)
    assert fixed == '"""Doc."""\n\nfrom __future__ import annotations\nimport math\n\nimport torch\nx = math.pi\n'
    compile(fixed, "f", "exec")
    assert imports_below_header("import math\nx = 1\n") == "import math\nx = 1\n"
