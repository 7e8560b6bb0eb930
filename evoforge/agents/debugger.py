"""The Debugger: reads a failure (a traceback, or the evaluator's reason for an invalid result) and patches the
candidate; bounded attempts.

A patch that turns the candidate into a program node memory already holds is not used. Measured
(benchmarks/search.py, circle_packing, Qwen2.5-Coder-1.5B, 2026-12-03): of the two patches in seven runs that
gave a valid program, both had undone the candidate's change and scored the seed's 0.9606, and one of them was
the seed's program to the byte, evaluated a second time."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from evoforge.agents.code_view import edit_and_view, short_paths
from evoforge.agents.editing import EditError, parse_edit, unified_diff
from evoforge.agents.patches import ask_debugger, patched, refuse_unusable_patch
from evoforge.agents.prior_code import binding_sources
from evoforge.agents.prompting import render
from evoforge.agents.repairs import apply_repaired_edit
from evoforge.agents.reply_grammar import debugger_grammar
from evoforge.agents.tree_debugger import debug_tree_candidate
from evoforge.config import RunConfig
from evoforge.runtime.services import services_for
from evoforge.runtime.state import State


def debug_candidate(state: State, runtime: Runtime[RunConfig]) -> dict[str, Any]:
    """Patch the failing candidate; a usable patch goes back to the Engineer from the first stage."""
    res = services_for(state.run_id, runtime)
    if res.task.is_tree:  # file-addressed fixes, the traceback's file first
        return debug_tree_candidate(state, runtime)
    assert state.candidate is not None and state.parent is not None and state.stage_results
    failure = state.stage_results[-1]
    attempts = state.debug_attempts + 1
    exhausted = attempts >= res.config.bounds.max_debug_attempts
    earlier = [line for line in state.feedback if line.startswith("debugger:")]
    candidate_code, shown_code = edit_and_view(state.candidate["code"], compact=res.config.compact_parent)
    if trace := failure.get("traceback"):
        failure = {**failure, "traceback": short_paths(trace)}
    messages = render(res.task, "debugger", candidate=dict(state.candidate, code=shown_code), failure=failure,
                      feedback=earlier,
                      changes=unified_diff(state.parent["code"], state.candidate["code"], context=1))
    update: dict[str, Any] = {"debug_attempts": attempts}
    grammar = debugger_grammar(candidate_code, evolve_block=res.task.evolve_block)
    if (reply := ask_debugger(res, messages, state, attempts, grammar, update)) is not None:
        try:
            code, _, _ = apply_repaired_edit(
                candidate_code, parse_edit(reply), fixed_from=state.parent["code"], evolve_block=res.task.evolve_block,
                sources=[state.parent["code"], *binding_sources(res, state.cognition)], required=res.task.entry_points)
            refuse_unusable_patch(res, state, code)
        except EditError as exc:
            update["feedback"] = [f"debugger: attempt {attempts}: the patch could not be used: {exc}"]
        else:
            return patched(state, update, reply, code, unified_diff(state.parent["code"], code), attempts)
    if exhausted:
        update["status"] = "invalid" if failure["status"] == "invalid" else "runtime_failed"
    return update
