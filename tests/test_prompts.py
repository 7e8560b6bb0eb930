"""Every prompt renders with every placeholder filled, and a task can override a role's template."""

from pathlib import Path

import jinja2
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from evoforge.agents.analyzer import stage_views
from evoforge.agents.prompting import FOLLOW_UP_ROLES, ROLES_WITH_PROMPTS, render, render_follow_up
from evoforge.agents.tree_view import ShownFile
from evoforge.tasks.spec import TaskSpec, list_builtin_tasks, load_task

NODE = {
    "id": "n1",
    "name": "ring",
    "score": 0.96,
    "status": "evaluated",
    "motivation": "one ring",
    "analysis": "RESULT: fine",
    "code": "# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n",
}
CANDIDATE = {"name": "grid", "motivation": "a grid", "code": "x = 2\n", "diff": "-x = 1\n+x = 2\n"}
STAGE = {
    "stage": "quick",
    "status": "ok",
    "score": 1.5,
    "wall_s": 2.0,
    "metrics": {"a": 1},
    "feedback": "fine",
    "error": None,
    "artifacts": {"curve": [1, 2]},
    "traceback": None,
    "stderr_tail": "",
}
VARIABLES = {
    "researcher": {
        "parent": NODE,
        "inspirations": [NODE],
        "cognition": [
            {"kind": "prior", "title": "t", "content": "c"},
            {"kind": "insight", "title": "l", "content": "d"},
        ],
        "feedback": ["static check rejected"],
        "focus_idea": True,
    },
    "debugger": {
        "candidate": CANDIDATE,
        "failure": dict(STAGE, traceback="Traceback ...\nValueError"),
        "feedback": ["debugger: tried"],
        "changes": CANDIDATE["diff"],
    },
    "analyzer": {
        "candidate": CANDIDATE,
        "parent": NODE,
        "best_score": 1.0,
        "status": "evaluated",
        "error": None,
        "diff": CANDIDATE["diff"],
        "stage_results": stage_views([STAGE, dict(STAGE, stage="full", metrics={"a": 1, "b": 2})]),
    },
    "novelty_judge": {"nearest": NODE, "candidate": CANDIDATE},
    "static_review": {"candidate": CANDIDATE},
}
TREE_FILES = [ShownFile("src/mixer.py", "x = 2\n", False, "python"), ShownFile("train.py", "def train(): ...", True,
                                                                               "python")]
VARIABLES["researcher_tree"] = {**VARIABLES["researcher"], "tree_map": ["model.py  (40 bytes, fixed)"],
                                "files": TREE_FILES, "fixed_outlines": [ShownFile("model.py", "def f():", True,
                                                                                  "python")]}
VARIABLES["debugger_tree"] = {**VARIABLES["debugger"], "files": TREE_FILES, "location": ("model.py", 3),
                              "evolvable": ["src/mixer.py", "train.py"]}


@pytest.mark.parametrize("task_name", list_builtin_tasks())
@pytest.mark.parametrize("role", ROLES_WITH_PROMPTS)
def test_every_prompt_renders_completely(task_name: str, role: str) -> None:
    task = load_task(task_name)
    system, user = render(task, role, **VARIABLES[role])
    assert system.content and user.content
    assert "{{" not in system.content + user.content and "{%" not in system.content + user.content


@pytest.mark.parametrize("task_name", list_builtin_tasks())
@pytest.mark.parametrize("role", FOLLOW_UP_ROLES)
def test_every_follow_up_continues_the_researchers_conversation(task_name: str, role: str) -> None:
    task = load_task(task_name)
    conversation = [*render(task, "researcher", **VARIABLES["researcher"]), AIMessage("NAME: grid\n...")]
    messages = render_follow_up(task, role, conversation, **VARIABLES[role])
    assert messages[:-1] == conversation  # the whole earlier exchange is an unchanged prefix
    assert isinstance(messages[-1], HumanMessage) and messages[-1].content
    assert "{{" not in messages[-1].content and "{%" not in messages[-1].content
    without = render_follow_up(task, role, [], **VARIABLES[role])  # a checkpoint from before conversations
    assert isinstance(without[0], SystemMessage) and without[0].content == conversation[0].content


def test_missing_placeholder_is_an_error() -> None:
    task = load_task("circle_packing")
    with pytest.raises(jinja2.UndefinedError):
        render(task, "researcher", parent=NODE, inspirations=[], cognition=[])
    variables = {key: value for key, value in VARIABLES["researcher"].items() if key != "focus_idea"}
    with pytest.raises(jinja2.UndefinedError):
        render(task, "researcher", **variables)


def test_system_prompt_is_a_stable_prefix() -> None:
    task = load_task("circle_packing")
    first = render(task, "researcher", **VARIABLES["researcher"])[0].content
    other = dict(VARIABLES["researcher"], feedback=[], parent=dict(NODE, score=2.0))
    assert render(task, "researcher", **other)[0].content == first


def test_task_can_override_a_template(tmp_path: Path) -> None:
    base = load_task("circle_packing")
    (tmp_path / "my_researcher.jinja").write_text("Custom for {{ parent.name }}")
    for name in (base.program, base.evaluator):
        (tmp_path / name).write_text((base.root / name).read_text())
    data = base.model_dump(exclude={"root", "prompts"})
    task = TaskSpec(root=tmp_path, prompts={"researcher.user": "my_researcher.jinja"}, **data)
    _, user = render(task, "researcher", **VARIABLES["researcher"])
    assert user.content == "Custom for ring"


def test_unknown_role_is_rejected() -> None:
    with pytest.raises(ValueError, match="role must be one of"):
        render(load_task("circle_packing"), "wizard")


def test_the_focus_idea_is_shown_in_full_and_the_rest_as_reminders() -> None:
    task = load_task("circle_packing")
    long_text = "grid " * 200
    cognition = [
        {"kind": "prior", "title": "focus", "content": long_text},
        {"kind": "prior", "title": "notes / other", "content": long_text},
        {"kind": "insight", "title": "lesson from x", "content": "check shapes " * 40},
    ]
    variables = dict(VARIABLES["researcher"], cognition=cognition)
    focused = render(task, "researcher", **variables)[1].content
    idea = focused.split("## Idea to implement in this candidate (a prior)\n", 1)[1]
    assert idea.startswith("focus: " + long_text.strip()[:900])
    assert "Other ideas, for later candidates: other." in focused
    assert focused.count("grid") <= 1200 // len("grid ") + 1, "only the focus is shown in full"
    lesson = focused.split("- Lesson learned: ", 1)[1].split("\n", 1)[0]
    assert lesson.startswith("check shapes check shapes") and len(lesson) <= 240
    assert "and implements the idea above" in focused
    unfocused = render(task, "researcher", **dict(variables, focus_idea=False))[1].content
    assert "Idea to implement" not in unfocused and "implements the idea above" not in unfocused
    assert "- [prior] focus: " in unfocused and "- [lesson learned] lesson from x: " in unfocused


def test_the_debugger_is_shown_what_the_candidate_changed() -> None:
    task = load_task("circle_packing")
    _, user = render(task, "debugger", **VARIABLES["debugger"])
    assert "## What the candidate changed in its parent" in user.content and "+x = 2" in user.content
    _, without = render(task, "debugger", **dict(VARIABLES["debugger"], changes=""))
    assert "What the candidate changed" not in without.content


def test_the_analyzer_sees_each_stage_only_for_what_it_adds() -> None:
    quick = dict(STAGE, metrics={"sum": 2.601862051483486, "pairs": 58}, artifacts={"centers": [[0.1, 0.2]]})
    full = dict(quick, stage="full", metrics={"sum": 2.601862051483486, "pairs": 58, "repeats": 2})
    messages = render_follow_up(load_task("circle_packing"), "analyzer", [SystemMessage("s")],
                                **dict(VARIABLES["analyzer"], stage_results=stage_views([quick, full])))
    text = messages[-1].text
    assert 'metrics: {"sum":2.60186,"pairs":58}' in text, "floats at 6 significant digits"
    assert 'metrics (those that changed since stage quick): {"repeats":2}' in text
    assert text.count("feedback: fine") == 1 and text.count("artifacts:") == 1
    assert text.index("artifacts:") > text.index("Stage full"), "the artifacts of the last stage that has them"


def test_a_tree_prompt_shows_the_map_the_files_and_where_the_traceback_points() -> None:
    task = load_task("circle_packing")
    _, user = render(task, "researcher_tree", **VARIABLES["researcher_tree"])
    assert "model.py  (40 bytes, fixed)" in user.content and "FILE: src/mixer.py\n```python\nx = 2" in user.content
    assert "FILE: train.py (outline only" in user.content
    _, debug = render(task, "debugger_tree", **VARIABLES["debugger_tree"])
    assert "last frame in the tree is model.py, line 3 (a fixed file" in debug.content
