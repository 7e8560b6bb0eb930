"""The Researcher: reads the parent, inspirations, cognition and feedback; writes a named, motivated candidate."""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from evoforge.agents.base import add_usage, ask_researcher, message_records
from evoforge.agents.code_view import edit_and_view
from evoforge.agents.constant_tuning import TUNED_CONSTANT, first_new_tuning
from evoforge.agents.editing import (
    Edit,
    EditError,
    UnchangedEdit,
    parse_edit,
    require_change,
    unified_diff,
)
from evoforge.agents.prior_code import binding_sources, prior_code_candidate
from evoforge.agents.prompting import render
from evoforge.agents.repairs import apply_repaired_edit
from evoforge.agents.reply_grammar import researcher_grammar
from evoforge.agents.tree_researcher import propose_tree_candidate
from evoforge.agents.unbound_names import bind_unbound_names, unbound_names
from evoforge.config import RunConfig
from evoforge.memory.fingerprint import code_hash
from evoforge.runtime.payloads import Candidate, CognitionView, MessageRecord
from evoforge.runtime.services import Services, services_for
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
               reply: str, repairs: list[str] | None = None,
               conversation: list[MessageRecord] | None = None) -> Candidate:
    """The candidate as the graph state holds it; `conversation` (message records) where the prompt and reply
    that led to it were an earlier visit's, else `messages` and `reply`."""
    return {
        "name": name,
        "motivation": motivation,
        "code": code,
        "diff": unified_diff(original_code, code),
        "edit_mode": mode,
        "repairs": repairs or [],
        # the Analyzer continues this conversation, so a server's prompt cache serves its whole prefix
        "conversation": conversation if conversation is not None else message_records([*messages, AIMessage(reply)]),
    }


@dataclass(frozen=True)
class BuiltCandidate:
    """A candidate the loop built without the model, when the Researcher's reply echoed its parent."""

    name: str
    motivation: str
    code: str
    mode: str
    """`prior_code` or `tuned_constant`."""
    change: str
    """What it changed in the parent, in a few words, for its report (analyzer.built_candidate_report)."""
    cognition: list[CognitionView]
    """The round's cognition, the prior whose code it ran put first."""
    repairs: list[str]

    def as_candidate(self, original_code: str, messages: list[Any], reply: str,
                     conversation: list[MessageRecord] | None = None) -> Candidate:
        return {**_candidate(self.name, self.motivation, original_code, self.code, self.mode, messages, reply,
                             self.repairs, conversation),
                "change": self.change}


def _idea_name(item: CognitionView) -> str:
    """A cognition item's own heading: the last part of a title such as 'Layouts that work / Staggered rows'."""
    return str(item["title"]).split(" / ")[-1]


def _prior_code_fallback(config: RunConfig, cognition: list[CognitionView], parent_code: str,
                         required: list[str], sources: list[str], is_known: Callable[[str], bool],
                         ) -> tuple[str, str, list[CognitionView], list[str]] | None:
    """(title, code, cognition, repairs) for the first retrieved human prior, the focused one first, whose complete
    functions merged into the parent change it (see prior_code.py) into a program node memory does not hold, with
    `cognition` reordered to put that prior in focus; None where the config does not allow it or no prior gives
    such code. The names the merge leaves unbound are bound again from `sources`, as for any edit
    (unbound_names.py); a prior whose code still reads a name nothing binds is passed over.

    Not only the focused prior: measured on circle_packing (2026-12-03), the focus was often an idea without code
    that the 1.5B model would not write, and the rounds went to echoes of the parent while a retrieved prior held
    a complete function nobody ran. Not a program already evaluated, nor one with a name left unbound: in a run of
    2026-12-04 (19:28) two rounds ran the grid prior's code into a duplicate of the round-1 node, three times over
    each, and one merged it into a parent that had renamed the `compute_radii` it calls."""
    if not (config.cognition.focus and config.cognition.prior_code_fallback):
        return None
    for position, item in enumerate(cognition):
        code = prior_code_candidate(parent_code, item)
        if code is None:
            continue
        code, repairs = bind_unbound_names(parent_code, code, sources, required)
        if not unbound_names(code) and not is_known(code):
            return _idea_name(item), code, [item, *cognition[:position], *cognition[position + 1:]], repairs
    return None


def _unchanged_fallback(state: State, res: Services, cognition: list[CognitionView],
                        parent_code: str) -> BuiltCandidate | None:
    """The candidate a round runs when the Researcher's reply left its parent unchanged: the code of a retrieved
    prior that changes the parent into a new program, else one of the parent's constants tuned
    (constant_tuning.py); None where the config allows neither or neither gives a program node memory does not
    hold."""

    def is_known(code: str) -> bool:
        return res.nodes.find_by_code_hash(state.run_id, code_hash(code)) is not None

    prior = _prior_code_fallback(res.config, cognition, parent_code, res.task.entry_points,
                                 binding_sources(res, cognition), is_known)
    if prior is not None:
        title, code, cognition, repairs = prior
        motivation = (f"The code the prior '{title}' gives, merged into the parent (the Researcher's reply "
                      "left the program unchanged).")
        return BuiltCandidate(f"prior_{_snake(title)}"[:60], motivation, code, "prior_code",
                              f"the code of the prior '{title}'", cognition, repairs)
    if not res.config.tune_constants_on_echo:
        return None
    tuning = first_new_tuning(parent_code, evolve_block=res.task.evolve_block,
                              seed=zlib.crc32(str(state.node_id).encode()), is_known=is_known)
    if tuning is None:
        return None
    return BuiltCandidate(tuning.name, tuning.motivation, tuning.code, TUNED_CONSTANT,
                          f"{tuning.setting} from {tuning.old} to {tuning.new}", cognition, [])


def _model_echoed_parent(state: State) -> bool:
    """Whether the Novelty-Checker turned the round's last candidate back as its parent again (an embedding at or
    above the duplicate threshold: a rename or a reworded line), where that candidate was the model's own edit.

    Such a reply is an echo the fingerprint missed, and is answered like one, without another model call:
    measured (2026-12-04 19:36, circle_packing), 3 of the 12 Researcher retries of a 20-minute run followed one,
    and each gave another echo or a near one."""
    # each read as a mapping, empty when the round has none yet
    report: Mapping[str, Any] = state.novelty_report or {}
    candidate: Mapping[str, Any] = state.candidate or {}
    parent: Mapping[str, Any] = state.parent or {}
    # the novelty report is the last candidate's only when that candidate passed the static check (which runs
    # first); after a static rejection it is an earlier candidate's
    passed_static = bool(state.static_report and state.static_report.get("ok"))
    return (passed_static and report.get("verdict") == "duplicate" and report.get("nearest_id") is not None
            and report.get("nearest_id") == parent.get("id")
            and candidate.get("edit_mode") not in ("prior_code", TUNED_CONSTANT))


def _next_idea(cognition: list[CognitionView]) -> list[CognitionView]:
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
    if _model_echoed_parent(state) and state.candidate is not None:
        fallback = _unchanged_fallback(state, res, cognition, parent_code)
        if fallback is not None:
            log.info("round %s: the candidate was the parent again (by its embedding); the candidate is %s (%s)",
                     state.round, fallback.name, fallback.mode)
            candidate = fallback.as_candidate(original_code, [], "",
                                              conversation=state.candidate.get("conversation", []))
            return {"candidate": candidate, "usage": usage, "cognition": fallback.cognition}
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
        if (asked := ask_researcher(res, messages, state, parse_try, grammar, errors)) is None:
            continue
        reply, call_usage = asked
        usage = add_usage(usage, "researcher", call_usage)
        try:
            proposal = parse_proposal(reply)
            code, mode, repairs = apply_repaired_edit(
                parent_code, proposal.edit, fixed_from=parent_code, evolve_block=res.task.evolve_block,
                sources=binding_sources(res, cognition), required=res.task.entry_points)
            require_change(parent_code, code)  # a renamed copy of the parent's function, named back, is the parent
        except EditError as exc:
            unchanged = isinstance(exc, UnchangedEdit)
            fallback = _unchanged_fallback(state, res, cognition, parent_code) if unchanged else None
            if fallback is not None:
                log.info("round %s: the reply left the parent unchanged; the candidate is %s (%s)",
                         state.round, fallback.name, fallback.mode)
                return {"candidate": fallback.as_candidate(original_code, messages, reply), "usage": usage,
                        "cognition": fallback.cognition, "parse_failures": state.parse_failures + len(errors)}
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
