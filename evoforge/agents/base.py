"""What every agent node shares: calling its chat model with a varied seed, and counting what it cost."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal, overload

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from evoforge.config import ModelConfig, Role
from evoforge.llm.models import grammar_options
from evoforge.llm.usage import LLMCallError, Usage, call_model
from evoforge.runtime.payloads import MessageRecord, NodeView, ParentView, RoleUsage
from evoforge.runtime.services import Services
from evoforge.runtime.state import State

log = logging.getLogger(__name__)


def sampling_seed(base: int, *parts: object) -> int:
    """A request seed that differs per run, round, lane, role and attempt, and is the same when a step is
    replayed.

    The local model returns byte-identical code for identical prompts and seeds, so a retry must vary it.
    """
    digest = hashlib.sha256(repr((base, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def add_usage(current: dict[str, RoleUsage], role: str, usage: Usage) -> dict[str, RoleUsage]:
    """A new per-role usage mapping with `usage` added to `role`."""
    merged = {name: values.copy() for name, values in current.items()}
    before = merged.get(role) or RoleUsage(tokens_in=0, tokens_out=0, seconds=0.0, calls=0, tokens_cached=0)
    merged[role] = RoleUsage(
        tokens_in=before["tokens_in"] + usage.tokens_in,
        tokens_out=before["tokens_out"] + usage.tokens_out,
        seconds=before["seconds"] + usage.seconds,
        calls=before["calls"] + usage.calls,
        # a checkpoint from before the prompt cache was counted holds entries without it
        tokens_cached=before.get("tokens_cached", 0) + usage.tokens_cached,
    )
    return merged


TRANSCRIPT = "llm_calls.jsonl"
"""Every model call of a node, one JSON object per line, in the node's directory (`evoforge show --calls`)."""


def retry_temperature(cfg: ModelConfig, retries: int) -> float:
    """The sampling temperature of a call after `retries` earlier tries this round: the model's own, raised by
    its `retry_temperature_step` per try up to 1.0 (never lowered)."""
    hotter = min(1.0, cfg.temperature + cfg.retry_temperature_step * retries)
    return round(max(cfg.temperature, hotter), 3)


def ask(res: Services, role: Role, messages: list[BaseMessage], state: State, *, attempt: object,
        grammar: str | None = None, retries: int = 0) -> tuple[str, Usage]:
    """One call of `role`'s model for the node `state` is building, added to the node's transcript; raises
    LLMCallError (the caller decides what a failure means). `grammar` constrains the reply where the
    provider supports it (see `grammar_options`); `retries` (earlier tries this round) raise the temperature
    by the model's `retry_temperature_step` each."""
    # lanes of one round may share a parent and so a prompt: the lane keeps their samples apart
    seed = sampling_seed(res.config.seed, state.run_id, state.round, state.lane, role, attempt)
    model = res.chat_model(role)
    cfg = res.config.model_for(role)
    options = grammar_options(cfg, model, grammar)
    if cfg.provider != "scripted" and (temperature := retry_temperature(cfg, retries)) != cfg.temperature:
        options["temperature"] = temperature
    call = {"role": role, "round": state.round, "lane": state.lane, "attempt": repr(attempt), "seed": seed,
            "at": datetime.now(UTC).isoformat(timespec="seconds"), "constrained": "extra_body" in options,
            "temperature": options.get("temperature", cfg.temperature),
            "messages": message_records(messages)}
    try:
        reply, usage = call_model(model, messages, seed=seed, options=options, run_id=state.run_id)
    except LLMCallError as exc:
        _append_transcript(res, state, {**call, "error": str(exc)})
        raise
    _append_transcript(res, state, {**call, "reply": reply, "usage": usage.to_dict()})
    return reply, usage


def ask_researcher(res: Services, messages: list[BaseMessage], state: State, parse_try: int, grammar: str | None,
                   errors: list[str]) -> tuple[str, Usage] | None:
    """One Researcher call of the round's `parse_try`-th try: its attempt counts the round's earlier static,
    novelty and parse retries (the seed and the temperature follow them). A failed call is logged, added to
    `errors` and gives None: the caller goes on to its next try."""
    attempt = (state.static_retries, state.novelty_retries, state.parse_failures + parse_try)
    try:
        return ask(res, "researcher", messages, state, attempt=attempt, grammar=grammar, retries=sum(attempt))
    except LLMCallError as exc:
        log.warning("researcher model call failed (round %s): %s", state.round, exc)
        errors.append(f"the model call failed: {exc}")
        return None


def message_records(messages: list[BaseMessage]) -> list[MessageRecord]:
    """Messages as plain JSON ({type, content}) for the graph state and the transcripts."""
    return [{"type": m.type, "content": m.text} for m in messages]


_MESSAGE_TYPES = {"system": SystemMessage, "human": HumanMessage, "ai": AIMessage}


def messages_from_records(records: list[MessageRecord]) -> list[BaseMessage]:
    """The inverse of `message_records`."""
    return [_MESSAGE_TYPES[record["type"]](record["content"]) for record in records]


def _append_transcript(res: Services, state: State, call: dict[str, Any]) -> None:
    node_dir = res.config.node_dir(state.run_id, state.node_id or f"r{state.round:04d}-l{state.lane}")
    try:
        node_dir.mkdir(parents=True, exist_ok=True)
        with (node_dir / TRANSCRIPT).open("a", encoding="utf-8") as transcript:
            transcript.write(json.dumps(call, ensure_ascii=False) + "\n")
    except OSError as exc:  # a full or read-only disk must not stop the research loop
        log.warning("could not write the model-call transcript under %s: %s", node_dir, exc)


@overload
def node_view(node: Any, *, with_code: Literal[True]) -> ParentView: ...
@overload
def node_view(node: Any, *, with_code: Literal[False]) -> NodeView: ...
def node_view(node: Any, *, with_code: bool) -> NodeView | ParentView:
    """The part of a node record an agent prompt (and Studio) shows."""
    view: NodeView = {
        "id": node.id,
        "name": node.name,
        "score": node.score,
        "status": node.status,
        "motivation": node.motivation,
        "analysis": node.analysis,
    }
    if with_code:
        return {**view, "code": node.code}
    return view
