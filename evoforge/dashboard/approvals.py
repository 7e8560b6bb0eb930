"""Answering a run's pending approval from the dashboard, through the runner's `approve` — the function
`evoforge approve` calls — so the answer is a resume of the lane's checkpoint like any other.

`approve` drives the lane on to its end or its next interrupt, which takes as long as the rest of the round,
so each answer runs in a thread of its own and the page returns at once; the desk remembers how each answer
went so the pages can say so.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import yaml

from evoforge.agents.engineer import parse_decision
from evoforge.config import RunConfig
from evoforge.graph.runner import approve, pending_approvals
from evoforge.runtime.payloads import APPROVAL_ACTIONS, Approval

log = logging.getLogger(__name__)

ACTIONS = APPROVAL_ACTIONS


class StaleApproval(LookupError):
    """The question the person answered is no longer the one the lane waits on (answered elsewhere, or
    the lane moved on)."""


class AnswerInProgress(RuntimeError):
    """An earlier answer for this lane is still being applied."""


@dataclass
class Answer:
    run_id: str
    lane: int
    node_id: str
    decision: Approval
    state: str = "applying"
    """applying (the lane is being driven on), done, or failed."""
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "lane": self.lane, "node_id": self.node_id, "action": self.decision["action"],
                "state": self.state, "error": self.error}


def decision_from_form(action: str, reason: str, settings: dict[str, str], current: dict[str, Any]) -> dict[str, Any]:
    """The decision a submitted form means. The form shows each setting as JSON; a setting whose text was changed
    is read as YAML, as `evoforge approve --set` reads it, and only those make an edit (reading an unchanged text
    back could change its type: YAML reads JSON's 1e-06 as a string)."""
    if action not in ACTIONS:
        raise ValueError(f"action: expected one of {ACTIONS}, got {action!r}")
    changed: dict[str, Any] = {}
    for key, text in settings.items():
        if key in current and text.strip() == json.dumps(current[key]):
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"setting {key}: not a YAML value: {text!r} ({exc})") from exc
        changed[key] = value
    if action == "edit" and not changed:
        raise ValueError("edit: change at least one setting (or approve as it is)")
    return {"action": action, "settings": changed if action == "edit" else {}, "reason": reason.strip()}


class ApprovalDesk:
    """Starts and remembers the answers given through the dashboard, one at a time per lane."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._answers: dict[tuple[str, int], Answer] = {}
        self._threads: dict[tuple[str, int], threading.Thread] = {}

    def request_for(self, run_id: str, lane: int) -> dict[str, Any] | None:
        for request in pending_approvals(run_id, self.config):
            if request["lane"] == lane:
                return request
        return None

    def answer(self, run_id: str, lane: int, node_id: str, decision: dict[str, Any]) -> Answer:
        """Check the answer against the question the lane waits on and start applying it.

        StaleApproval when the lane no longer waits on `node_id`'s question, AnswerInProgress while an earlier
        answer for the lane is still applied, ValueError for an answer the stage refuses (an unknown setting).
        """
        key = (run_id, lane)
        with self._lock:
            thread = self._threads.get(key)
            if thread is not None and thread.is_alive():
                raise AnswerInProgress(f"run {run_id!r} lane {lane}: the previous answer is still being applied")
            request = self.request_for(run_id, lane)
            if request is None or request.get("node_id") != node_id:
                raise StaleApproval(f"run {run_id!r} lane {lane} no longer waits on a decision about {node_id!r}"
                                    " (answered already?)")
            answer = Answer(run_id, lane, node_id, parse_decision(decision, request.get("settings") or {}))
            thread = threading.Thread(target=self._apply, args=(answer,), name=f"approve-{run_id}-{lane}",
                                      daemon=True)
            self._answers[key], self._threads[key] = answer, thread
            thread.start()
        return answer

    def _apply(self, answer: Answer) -> None:
        try:
            approve(answer.run_id, answer.decision, lane=answer.lane, base=self.config)
        except Exception as exc:  # the runner has marked the run failed with the reason; the page shows it too
            log.warning("answer to run %s lane %d failed", answer.run_id, answer.lane, exc_info=exc)
            answer.state, answer.error = "failed", f"{type(exc).__name__}: {exc}"
            return
        answer.state = "done"

    def answers(self, run_id: str | None = None) -> list[Answer]:
        """The answers given here, of one run or of all."""
        with self._lock:
            return [answer for answer in self._answers.values() if run_id is None or answer.run_id == run_id]

    def applying(self, run_id: str, lane: int) -> bool:
        with self._lock:
            thread = self._threads.get((run_id, lane))
            return thread is not None and thread.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for every answer being applied (the server's shutdown lets them finish their step)."""
        for thread in list(self._threads.values()):
            thread.join(timeout)
