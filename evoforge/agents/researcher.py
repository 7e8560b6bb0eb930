"""The Researcher: reads the parent, inspirations, cognition and feedback; writes a named, motivated candidate."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from evoforge.agents.base import add_usage, ask, message_records
from evoforge.agents.code_view import edit_and_view
from evoforge.agents.editing import (
    Edit,
    EditError,
    UnchangedEdit,
    apply_edit,
    keep_fixed_region,
    parse_edit,
    require_change,
    unified_diff,
)
from evoforge.agents.prior_code import prior_code_blocks, prior_code_candidate
from evoforge.agents.prompting import render
from evoforge.agents.reply_grammar import researcher_grammar
from evoforge.agents.tree_researcher import propose_tree_candidate
from evoforge.agents.unbound_names import bind_unbound_names
from evoforge.config import RunConfig
from evoforge.llm.usage import LLMCallError
from evoforge.runtime.services import services_for
from evoforge.runtime.state import State

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[\s*#>-]*name[\s*]*[:：]\s*(?P<name>.+)$", re.IGNORECASE | re.MULTILINE)
_MOTIVATION = re.compile(
    r"^[\s*#>-]*motivation[\s*]*[:：]\s*(?P<text>.*?)(?=^[ \t]*<{5,}|^[ \t]*```|^[\s*#>-]*name[\s*]*[:：]|\Z)",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Proposal:
    name: str
    motivation: str
    edit: Edit


def _snake(name: str) -> str:
    name = re.sub(r"[`*\"']", "", name).strip()
    name = re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower()
    return name[:60]


def parse_proposal(reply: str) -> Proposal:
    """NAME, MOTIVATION and the edit; raises EditError with what to fix when the code part is unusable."""
    reply = _THINK.sub("", reply)
    name_match = _NAME.search(reply)
    motivation_match = _MOTIVATION.search(reply)
    edit = parse_edit(reply)
    motivation = " ".join(motivation_match.group("text").split()) if motivation_match else ""
    return Proposal(
        name=_snake(name_match.group("name")) if name_match else "",
        motivation=motivation[:2000],
        edit=edit,
    )


def _candidate(name: str, motivation: str, original_code: str, code: str, mode: str, messages: list[Any],
               reply: str, repairs: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "motivation": motivation,
        "code": code,
        "diff": unified_diff(original_code, code),
        "edit_mode": mode,
        "repairs": repairs or [],
        # the Analyzer continues this conversation, so a server's prompt cache serves its whole prefix
        "conversation": message_records([*messages, AIMessage(reply)]),
    }


def _idea_name(item: dict[str, Any]) -> str:
    """A cognition item's own heading: the last part of a title such as 'Layouts that work / Staggered rows'."""
    return str(item["title"]).split(" / ")[-1]


def _prior_code_fallback(config: RunConfig, cognition: list[dict[str, Any]],
                         parent_code: str) -> tuple[str, str, list[dict[str, Any]]] | None:
    """(title, code, cognition) for the first retrieved human prior, the focused one first, whose complete functions
    merged into the parent change it (see prior_code.py), with `cognition` reordered to put that prior in focus;
    None where the config does not allow it or no prior gives such code.

    Not only the focused prior: measured on circle_packing (2026-12-03), the focus was often an idea without code
    that the 1.5B model would not write, and the rounds went to echoes of the parent while a retrieved prior held
    a complete function nobody ran."""
    if not (config.cognition.focus and config.cognition.prior_code_fallback):
        return None
    for position, item in enumerate(cognition):
        code = prior_code_candidate(parent_code, item)
        if code is not None:
            return _idea_name(item), code, [item, *cognition[:position], *cognition[position + 1:]]
    return None


def _next_idea(cognition: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`cognition` with its focused item moved to the end, so that the next try implements the next one; the
    same list when there is no other item."""
    return [*cognition[1:], cognition[0]] if len(cognition) > 1 else cognition


def propose_candidate(state: State, runtime: Runtime[RunConfig]) -> dict[str, Any]:
    """Ask the Researcher for a candidate; an unusable reply is retried, then the round is recorded as failed.

    A retry is a fresh prompt that names what was wrong with the earlier replies, never a continuation of the
    conversation: measured on circle_packing with the embedded 1.5B model (2026-12-03), none of 27 retries that
    showed the model its own unusable reply gave a usable one, and 22 repeated it token for token. When a reply
    left the program unchanged with an idea in focus, the retry takes the next idea: the model would not write
    that one."""
    res = services_for(state.run_id, runtime)
    if res.task.is_tree:  # a tree task's replies address files: its own prompt, grammar and parser
        return propose_tree_candidate(state, runtime)
    assert state.parent is not None, "sample_context must choose a parent before the Researcher runs"
    original_code: str = state.parent["code"]
    parent_code, shown_code = edit_and_view(original_code, compact=res.config.compact_parent)
    focus_idea = res.config.cognition.focus
    cognition = list(state.cognition)
    grammar = researcher_grammar(parent_code, evolve_block=res.task.evolve_block)
    usage = state.usage
    errors: list[str] = []
    turned_back: list[str] = []
    # `max_parse_retries` bounds the round, not each visit: a static or novelty retry that follows unusable
    # replies gets one try, not a fresh allowance (a round of the 2026-12-03 benchmark made 7 Researcher calls)
    tries = max(1, res.config.bounds.max_parse_retries + 1 - state.parse_failures)
    for parse_try in range(tries):
        messages = render(
            res.task,
            "researcher",
            parent=dict(state.parent, code=shown_code),
            inspirations=state.inspirations,
            cognition=cognition,
            feedback=[*state.feedback, *turned_back],
            focus_idea=focus_idea,
        )
        attempt = (state.static_retries, state.novelty_retries, state.parse_failures + parse_try)
        try:
            reply, call_usage = ask(res, "researcher", messages, state, attempt=attempt, grammar=grammar,
                                    retries=sum(attempt))
        except LLMCallError as exc:
            log.warning("researcher model call failed (round %s): %s", state.round, exc)
            errors.append(f"the model call failed: {exc}")
            continue
        usage = add_usage(usage, "researcher", call_usage)
        try:
            proposal = parse_proposal(reply)
            code, mode = apply_edit(parent_code, proposal.edit)
            repairs: list[str] = []
            if res.task.evolve_block:  # first, so that the fixed code binds what it defines and imports
                code, kept = keep_fixed_region(parent_code, code)
                repairs.extend([kept] if kept else [])
            code, bound = bind_unbound_names(parent_code, code, prior_code_blocks(cognition), res.task.entry_points)
            repairs.extend(bound)
            require_change(parent_code, code)  # a renamed copy of the parent's function, named back, is the parent
        except EditError as exc:
            unchanged = isinstance(exc, UnchangedEdit)
            prior = _prior_code_fallback(res.config, cognition, parent_code) if unchanged else None
            if prior is not None:
                title, code, cognition = prior
                log.info("round %s: the reply left the parent unchanged; the candidate is the code of the prior %r",
                         state.round, title)
                motivation = (f"The code the prior '{title}' gives, merged into the parent (the Researcher's reply "
                              "left the program unchanged).")
                candidate = _candidate(f"prior_{_snake(title)}"[:60], motivation, original_code, code, "prior_code",
                                       messages, reply)
                return {"candidate": candidate, "usage": usage, "cognition": cognition,
                        "parse_failures": state.parse_failures + len(errors)}
            excerpt = " ".join(reply.split())[:160]
            errors.append(f"{exc} (the reply began: {excerpt!r})")
            note = f"reply {parse_try + 1} could not be used: {exc}"
            if unchanged and focus_idea and (rotated := _next_idea(cognition)) is not cognition:
                note += f"; the idea '{_idea_name(cognition[0])}' is left for later, this try takes another"
                cognition = rotated
            turned_back.append(note)
            continue
        if repairs:
            log.info("round %s: the edit was repaired: %s", state.round, "; ".join(repairs))
        candidate = _candidate(proposal.name or f"candidate_r{state.round}", proposal.motivation, original_code, code,
                               mode, messages, reply, repairs)
        return {"candidate": candidate, "usage": usage, "cognition": cognition,
                "parse_failures": state.parse_failures + len(errors)}
    return {
        "candidate": None,
        "usage": usage,
        "cognition": cognition,
        "parse_failures": state.parse_failures + len(errors),
        "status": "parse_failed",
        "error": f"no usable reply after {len(errors)} attempts; last problem: {errors[-1]}",
    }
