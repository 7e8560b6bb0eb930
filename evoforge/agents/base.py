"""What every agent node shares: calling its chat model with a varied seed, and counting what it cost."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from langchain_core.messages import BaseMessage

from evoforge.config import Role
from evoforge.graph.resources import Resources
from evoforge.llm.usage import Usage, call_model

log = logging.getLogger(__name__)


def sampling_seed(base: int, *parts: object) -> int:
    """A request seed that differs per run, round, role and attempt, and is the same when a step is replayed.

    The local model returns byte-identical code for identical prompts and seeds, so a retry must vary it.
    """
    digest = hashlib.sha256(repr((base, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def add_usage(current: dict[str, dict[str, float]], role: str, usage: Usage) -> dict[str, dict[str, float]]:
    """A new per-role usage mapping with `usage` added to `role`."""
    merged = {name: dict(values) for name, values in current.items()}
    entry = merged.setdefault(role, {"tokens_in": 0, "tokens_out": 0, "seconds": 0.0, "calls": 0})
    for key, value in usage.to_dict().items():
        entry[key] = entry.get(key, 0) + value
    return merged


def ask(
    res: Resources, role: Role, messages: list[BaseMessage], *, run_id: str, round_: int, attempt: object
) -> tuple[str, Usage]:
    """One call of `role`'s model; raises LLMCallError (the caller decides what a failure means)."""
    seed = sampling_seed(res.config.seed, run_id, round_, role, attempt)
    return call_model(res.chat_model(role), messages, seed=seed)


def node_view(node: Any, *, with_code: bool) -> dict[str, Any]:
    """The part of a node record an agent prompt (and Studio) shows."""
    view = {
        "id": node.id,
        "name": node.name,
        "score": node.score,
        "status": node.status,
        "motivation": node.motivation,
        "analysis": node.analysis,
    }
    if with_code:
        view["code"] = node.code
    return view
