"""What both Debuggers (a program's and a tree's) do with a patch once it is applied: refuse one that breaks a
rule of the task or gives back a program node memory holds, and send a usable one back to the Engineer."""

from __future__ import annotations

import re
from typing import Any

from evoforge.agents.editing import EditError
from evoforge.agents.static_checker import code_problems
from evoforge.memory.fingerprint import code_hash
from evoforge.runtime.payloads import Candidate
from evoforge.runtime.services import Services
from evoforge.runtime.state import State

_FIX = re.compile(r"^[\s*#>-]*fix[\s*]*[:：][\s*]*(?P<text>.+)$", re.IGNORECASE | re.MULTILINE)


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
