"""The Analyzer: reads everything the experiment produced and writes a compact report plus reusable insights."""

from __future__ import annotations

import logging
import re
from typing import Any

from langgraph.runtime import Runtime

from evoforge.agents.base import add_usage, ask, messages_from_records
from evoforge.agents.prompting import render_follow_up
from evoforge.agents.reply_grammar import ANALYZER_GRAMMAR
from evoforge.config import RunConfig
from evoforge.llm.usage import LLMCallError
from evoforge.runtime.services import services_for
from evoforge.runtime.state import State

log = logging.getLogger(__name__)
_INSIGHT = re.compile(r"^[\s*#>-]*insight[\s*]*[:：]\s*(?P<text>.+)$", re.IGNORECASE | re.MULTILINE)
MAX_REPORT_CHARS = 2500


def parse_report(reply: str) -> tuple[str, list[str]]:
    """The report (clipped) and the INSIGHT lines in it (at most two, each at least a few words)."""
    insights = [" ".join(m.group("text").split()) for m in _INSIGHT.finditer(reply)]
    insights = [text for text in insights if len(text.split()) >= 4][:2]
    return reply.strip()[:MAX_REPORT_CHARS], insights


def fallback_report(state: State) -> str:
    """A factual report from the stage results alone, for when the model cannot be reached."""
    lines = [f"RESULT: {state.status or 'unknown'}" + (f" - {state.error}" if state.error else "")]
    for stage in state.stage_results:
        lines.append(f"stage {stage.get('stage')}: {stage.get('status')}, score {stage.get('score')}")
    return "\n".join(lines)


def stage_views(stage_results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stage results as the Analyzer's prompt shows them: a later stage's metrics and feedback only where
    they differ from the stage before it, and the artifacts of the last stage that has any. A 2-stage
    circle_packing report had carried the full metrics of both stages, at 17 digits a float."""
    views: list[dict[str, Any]] = []
    previous: dict[str, Any] = {}
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
    # the conversation shows the reply's edit; a repaired or patched program needs its own diff
    changed_since_reply = (state.debug_attempts > 0 or bool((state.static_report or {}).get("repaired"))
                           or bool((state.candidate or {}).get("repairs")))
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
    analysis, insights = parse_report(reply)
    return {"analysis": analysis, "insights": insights, "usage": add_usage(state.usage, "analyzer", usage)}
