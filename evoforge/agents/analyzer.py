"""The Analyzer: reads everything the experiment produced and writes a compact report plus reusable insights."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from evoforge.agents.base import add_usage, ask, messages_from_records
from evoforge.agents.constant_tuning import TUNED_CONSTANT
from evoforge.agents.prompting import render_follow_up
from evoforge.agents.reply_grammar import ANALYZER_GRAMMAR
from evoforge.config import RunConfig
from evoforge.llm.usage import LLMCallError
from evoforge.runtime.payloads import StageResult
from evoforge.runtime.services import services_for
from evoforge.runtime.state import State
from evoforge.tasks.spec import TaskSpec

log = logging.getLogger(__name__)
_INSIGHT = re.compile(r"^[\s*#>-]*insight[\s*]*[:：]\s*(?P<text>.+)$", re.IGNORECASE | re.MULTILINE)
MAX_REPORT_CHARS = 2500


_INSTRUCTION_ECHOES = ("reusable lesson", "holds beyond this one candidate")
"""Words of the prompt's own instruction for the INSIGHT line, which a small model copies in place of a lesson."""


def parse_report(reply: str, *, node_names: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The report (clipped) and the INSIGHT lines in it: at most two, each at least a few words, none that names
    one of `node_names` (the candidate's, the parent's), none that copies the prompt's instruction.

    A lesson that names a node is about that node, not one that holds beyond it: measured (circle_packing, the
    embedded 1.5B model, 2026-12-04 21:21), every lesson of the run was "The <candidate> candidate is a good
    starting point for the search...", and the Researcher copied them into its motivations. On data_curation
    (2026-12-08 02:04) 2 of 3 lessons began "Holding a reusable lesson that holds beyond this one candidate",
    the instruction's words."""
    insights = [" ".join(m.group("text").split()) for m in _INSIGHT.finditer(reply)]
    names = [name.lower() for name in node_names if name]
    insights = [text for text in insights
                if len(text.split()) >= 4 and not any(name in text.lower() for name in names)
                and not any(echo in text.lower() for echo in _INSTRUCTION_ECHOES)][:2]
    return reply.strip()[:MAX_REPORT_CHARS], insights


def fallback_report(state: State) -> str:
    """A factual report from the stage results alone, for when the model cannot be reached."""
    lines = [f"RESULT: {state.status or 'unknown'}" + (f" - {state.error}" if state.error else "")]
    for stage in state.stage_results:
        lines.append(f"stage {stage.get('stage')}: {stage.get('status')}, score {stage.get('score')}")
    return "\n".join(lines)


BUILT_BY_THE_LOOP = ("prior_code", TUNED_CONSTANT)
"""Edit modes of the candidates the loop builds without the model when the Researcher's reply echoes its parent
(researcher.BuiltCandidate)."""


def built_candidate_report(state: State, task: TaskSpec) -> str:
    """The report on a candidate the loop built: what it changed, its score against its parent's and the best
    so far, and what that suggests next. Exact, where the model's report on such a candidate is not: the
    conversation the Analyzer continues is the echoed reply, not the program that ran. Measured (circle_packing,
    the embedded 1.5B model, 2026-12-04 21:21): on the 9 of 20 rounds that ran such a candidate, the model's
    reports restated the score and named the candidate as the next step, at 15-33 s each."""
    assert state.candidate is not None and state.parent is not None
    change = state.candidate.get("change") or state.candidate["motivation"]
    tuned = state.candidate.get("edit_mode") == TUNED_CONSTANT
    score, parent_score = (state.stage_results[-1].get("score") if state.stage_results else None,
                           state.parent.get("score"))
    if score is None:
        ended = f"ended {state.status or 'without a score'}" + (f": {state.error}" if state.error else "")
        return (f"RESULT: {change} {ended}.\n"
                "NEXT: this change breaks the program; take another idea, not this one again.")
    versus = (f"scored {score:.6g} against the parent's {parent_score:.6g} ({score - parent_score:+.3g})"
              if isinstance(parent_score, (int, float)) else f"scored {score:.6g}")
    valid = state.status in ("", "evaluated")
    if not valid:  # a score, yet not a valid result: invalid, rejected early
        versus += f" but ended {state.status}"
    if valid and isinstance(parent_score, (int, float)) and task.better(score, parent_score):
        best = state.best_score is None or task.better(score, state.best_score)
        result = f"RESULT: {change} {versus}: better{', a new best' if best else ''}."
        step = ("step this setting once more the same way, or build the next idea on this program." if tuned
                else "tune this prior's settings, or build the next idea on this program.")
    else:
        result = f"RESULT: {change} {versus}: no gain."
        step = ("leave this setting; change the method, not a constant." if tuned
                else "keep building on the parent's own method.")
    return f"{result}\nNEXT: {step}"


def stage_views(stage_results: list[StageResult]) -> list[dict[str, Any]]:
    """The stage results as the Analyzer's prompt shows them: a later stage's metrics and feedback only where
    they differ from the stage before it, and the artifacts of the last stage that has any. A 2-stage
    circle_packing report had carried the full metrics of both stages, at 17 digits a float."""
    views: list[dict[str, Any]] = []
    previous: Mapping[str, Any] = {}
    last_with_artifacts = max((i for i, stage in enumerate(stage_results) if stage.get("artifacts")), default=-1)
    for i, stage in enumerate(stage_results):
        metrics = stage.get("metrics") or {}
        earlier = previous.get("metrics") or {}
        changed = {key: value for key, value in metrics.items() if key not in earlier or earlier[key] != value}
        views.append({**stage,
                      "metrics": changed,
                      "metrics_since": previous.get("stage") if previous and changed != metrics else None,
                      "feedback": None if previous and stage.get("feedback") == previous.get("feedback")
                      else stage.get("feedback"),
                      "artifacts": stage.get("artifacts") if i == last_with_artifacts else None})
        previous = stage
    return views


def analyze_result(state: State, runtime: Runtime[RunConfig]) -> dict[str, Any]:
    """Write the node's analysis; a model failure (or `llm_analysis: false`) leaves a factual report."""
    res = services_for(state.run_id, runtime)
    assert state.candidate is not None and state.parent is not None
    if not res.config.llm_analysis:
        return {"analysis": fallback_report(state), "insights": []}
    if state.candidate.get("edit_mode") in BUILT_BY_THE_LOOP and not res.config.model_reports_on_built_candidates:
        return {"analysis": built_candidate_report(state, res.task), "insights": []}
    # the conversation shows the reply's edit; a repaired or patched program needs its own diff
    changed_since_reply = (state.debug_attempts > 0 or bool(state.static_report and state.static_report.get("repaired"))
                           or bool(state.candidate.get("repairs")))
    per_file = res.task.is_tree  # a tree candidate's change is shown file by file, whatever made it
    messages = render_follow_up(
        res.task,
        "analyzer",
        messages_from_records(state.candidate.get("conversation", [])),
        candidate=state.candidate,
        parent=state.parent,
        best_score=state.best_score,
        status=state.status,
        error=state.error,
        diff=state.candidate.get("diff", "") if changed_since_reply or per_file else "",
        per_file=per_file,
        stage_results=stage_views(state.stage_results),
    )
    try:
        reply, usage = ask(res, "analyzer", messages, state, attempt=0, grammar=ANALYZER_GRAMMAR)
    except LLMCallError as exc:
        log.warning("analyzer model call failed (round %s): %s", state.round, exc)
        return {"analysis": fallback_report(state) + f"\n(analyzer unavailable: {exc})", "insights": []}
    analysis, insights = parse_report(reply, node_names=(state.candidate["name"], state.parent.get("name", "")))
    return {"analysis": analysis, "insights": insights, "usage": add_usage(state.usage, "analyzer", usage)}
