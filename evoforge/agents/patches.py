"""What both Debuggers (a program's and a tree's) share: the model call, then, once a patch is applied, refusing
one that breaks a rule of the task or gives back a program node memory holds, and sending a usable one back to
the Engineer."""

from __future__ import annotations

import logging
import re
from typing import Any

from langchain_core.messages import BaseMessage

from evoforge.agents.base import add_usage, ask
from evoforge.agents.editing import EditError
from evoforge.agents.static_checker import code_problems
from evoforge.llm.usage import LLMCallError
from evoforge.memory.fingerprint import code_hash
from evoforge.runtime.payloads import Candidate
from evoforge.runtime.services import Services
from evoforge.runtime.state import State

log = logging.getLogger(__name__)
_FIX = re.compile(r"^[\s*#>-]*fix[\s*]*[:：][\s*]*(?P<text>.+)$", re.IGNORECASE | re.MULTILINE)


def ask_debugger(res: Services, messages: list[BaseMessage], state: State, attempt: int, grammar: str,
                 update: dict[str, Any]) -> str | None:
    """The Debugger's reply to `messages`, its usage added to `update`; None when the call failed, which
    `update`'s feedback then says."""
    try:
        reply, usage = ask(res, "debugger", messages, state, attempt=attempt, grammar=grammar)
    except LLMCallError as exc:
        log.warning("debugger model call failed (round %s): %s", state.round, exc)
        update["feedback"] = [f"debugger: attempt {attempt}: the model call failed: {exc}"]
        return None
    update["usage"] = add_usage(state.usage, "debugger", usage)
    return reply


def refuse_unusable_patch(res: Services, state: State, code: str, *, parent_code: str | None = None) -> None:
    """Raise `EditError` when the patched `code` breaks a rule of the task, or is a program node memory holds
    (a patch that undoes the candidate's change, back to its parent or to an earlier node)."""
    problems = code_problems(res.task, code, parent_code=parent_code)
    if problems:
        raise EditError("; ".join(problems))
    if (same := res.nodes.find_by_code_hash(state.run_id, code_hash(code))) is not None:
        raise EditError(f"it makes the program the same as node '{same.name}', which was evaluated already "
                        "(it undoes the candidate's change): fix the error and keep the change")


def patched(state: State, update: dict[str, Any], reply: str, code: str, diff: str, attempt: int) -> dict[str, Any]:
    """The update that sends the patched candidate back to the Engineer from its first stage, with the reply's
    FIX line as the round's feedback."""
    assert state.candidate is not None
    fix = _FIX.search(reply)
    candidate: Candidate = {**state.candidate, "code": code, "diff": diff}
    note = f"debugger: {fix.group('text').strip() if fix else 'patched'} (attempt {attempt})"
    return {**update, "candidate": candidate, "next_stage": 0, "status": "", "error": None, "feedback": [note]}
