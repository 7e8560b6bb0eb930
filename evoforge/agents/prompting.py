"""Prompt templates: one system and one user template per role, rendered here and nowhere else.

A task may override either template of a role with `prompts: {"researcher.user": "my_prompt.jinja"}` in its
task.yaml. Rendering is strict: a placeholder left unfilled is an error, not an empty string.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from evoforge.tasks.spec import TaskSpec

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
ROLES_WITH_PROMPTS = ("researcher", "debugger", "novelty_judge", "static_review", "researcher_tree", "debugger_tree")
"""Roles with a conversation of their own: a system and a user template."""
FOLLOW_UP_ROLES = ("analyzer",)
"""Roles that continue the Researcher's conversation with one more user turn (a user template only): the
whole earlier conversation is then a prefix a server's prompt cache already holds."""


def _clip(value: object, limit: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 15].rstrip() + " …[clipped]"


def _tail(value: object, limit: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else "[…] " + text[-limit:]


def _score(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "none"
    return f"{value:.6g}" if isinstance(value, (int, float)) else str(value)


def _rounded(value: Any) -> Any:
    """`value` with every float at 6 significant digits: a small model's tokenizer spends a token per digit, and
    0.04355375804434862 says no more to it than 0.0435538."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


def _compact(value: Any, limit: int) -> str:
    return _clip(json.dumps(_rounded(value), default=str, separators=(",", ":")), limit)


@lru_cache(maxsize=32)
def _environment(search_path: tuple[str, ...]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(list(search_path)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=False,
        autoescape=False,
    )
    env.filters.update(clip=_clip, tail=_tail, score=_score, compact=_compact)
    return env


def _template(task: TaskSpec, name: str) -> jinja2.Template:
    override = task.prompts.get(name)
    if override:
        path = (task.root / override).resolve()
        return _environment((str(path.parent), str(PROMPTS_DIR))).get_template(path.name)
    return _environment((str(PROMPTS_DIR),)).get_template(f"{name}.jinja")


def render_follow_up(task: TaskSpec, role: str, conversation: list[BaseMessage], **variables: Any) -> list[BaseMessage]:
    """`conversation` (the Researcher's, ending with its reply) plus `role`'s user turn; with no conversation
    (a checkpoint from before conversations were kept) the Researcher's system prompt stands in for it."""
    if role not in FOLLOW_UP_ROLES:
        raise ValueError(f"role must be one of {FOLLOW_UP_ROLES}, got {role!r}")
    if not conversation:
        conversation = [SystemMessage(_template(task, "researcher.system").render(task=task).strip())]
    user = _template(task, f"{role}.user").render(task=task, **variables).strip()
    return [*conversation, HumanMessage(user)]


def render(task: TaskSpec, role: str, **variables: Any) -> list[BaseMessage]:
    """System + user messages for `role`; the system part depends only on the task (a stable prefix)."""
    if role not in ROLES_WITH_PROMPTS:
        raise ValueError(f"role must be one of {ROLES_WITH_PROMPTS}, got {role!r}")
    system = _template(task, f"{role}.system").render(task=task).strip()
    user = _template(task, f"{role}.user").render(task=task, **variables).strip()
    return [SystemMessage(system), HumanMessage(user)]
