"""The Debugger on a tree task: shown the failing candidate's files, the file and line its traceback points into
(that file first and in full), and the candidate's change; it replies with file-addressed fixes."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from evoforge.agents.editing import EditError
from evoforge.agents.patches import ask_debugger, patched, refuse_unusable_patch
from evoforge.agents.prompting import render
from evoforge.agents.reply_grammar import tree_reply_grammar
from evoforge.agents.tree_editing import apply_tree_reply
from evoforge.agents.tree_researcher import bind_tree_names, tree_diff
from evoforge.agents.tree_view import shown_files, traceback_location, tree_paths
from evoforge.config import RunConfig
from evoforge.runtime.services import services_for
from evoforge.runtime.state import State
from evoforge.tasks.tree import decode_bundle


def debug_tree_candidate(state: State, runtime: Runtime[RunConfig]) -> dict[str, Any]:
    """Patch the failing tree candidate; a usable patch goes back to the Engineer from the first stage."""
    res = services_for(state.run_id, runtime)
    assert state.candidate is not None and state.parent is not None and state.stage_results
    failure = state.stage_results[-1].copy()
    attempts = state.debug_attempts + 1
    candidate_code: str = state.candidate["code"]
    files = decode_bundle(candidate_code)
    trace = failure.get("traceback")
    location = traceback_location(trace or "")
    if trace:
        failure["traceback"] = tree_paths(trace)
    messages = render(res.task, "debugger_tree", candidate=state.candidate, failure=failure,
                      files=shown_files(files, first=location[0] if location else res.task.program or None),
                      location=location, evolvable=sorted(files),
                      feedback=[line for line in state.feedback if line.startswith("debugger:")],
                      changes=tree_diff(state.parent["code"], candidate_code))
    update: dict[str, Any] = {"debug_attempts": attempts}
    grammar = tree_reply_grammar(files, first_line="FIX")
    if (reply := ask_debugger(res, messages, state, attempts, grammar, update)) is not None:
        try:
            code, _ = apply_tree_reply(res.task.program_tree, candidate_code, reply)
            parent_sources = [text for path, text in decode_bundle(state.parent["code"]).items() if path.endswith(".py")]
            code, _ = bind_tree_names(candidate_code, code, parent_sources, res.task.program, res.task.entry_points)
            refuse_unusable_patch(res, state, code, parent_code=candidate_code)
        except EditError as exc:
            update["feedback"] = [f"debugger: attempt {attempts}: the patch could not be used: {exc}"]
        else:
            return patched(state, update, reply, code, tree_diff(state.parent["code"], code), attempts)
    if attempts >= res.config.bounds.max_debug_attempts:
        update["status"] = "invalid" if failure["status"] == "invalid" else "runtime_failed"
    return update
