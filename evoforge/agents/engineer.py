"""The Engineer: runs the task's evaluation cascade in the sandbox, one stage per step, through its tools.

One stage per graph step means every finished stage is checkpointed, and an approval `interrupt()` before a
costly stage never re-runs the stages before it when the graph resumes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, ClassVar

from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, Field, create_model, model_validator

from evoforge.config import RunConfig
from evoforge.memory.status import NodeStatus
from evoforge.runtime.payloads import APPROVAL_ACTIONS, Approval, ApprovalAction, StageResult, ToolCall
from evoforge.runtime.services import Services, services_for
from evoforge.runtime.state import State
from evoforge.sandbox import sandbox_for
from evoforge.tasks.spec import Stage
from evoforge.tools.evaluation import StageStatus, read_log_tail, read_metrics, run_stage, stage_failed

log = logging.getLogger(__name__)

STATUS_AFTER_STAGE: dict[StageStatus, NodeStatus] = {
    "below_threshold": "early_rejected",
    "invalid": "invalid",
    "runtime_error": "runtime_failed",
    "timeout": "timeout",
    "resource_limit": "resource_limit",
    "evaluator_error": "evaluator_error",
}
"""Round status when a stage ends the cascade; `ok` continues, and a crash (or an invalid result, see `fixable`)
may first go to the Debugger, with the pending status `needs_fix`."""


def needs_approval(config: RunConfig, stage: Stage) -> bool:
    return config.approval_cost_threshold is not None and stage.cost > config.approval_cost_threshold


def approval_request(state: State, stage: Stage) -> dict[str, Any]:
    """What a person sees before a costly stage: enough to judge without opening the run."""
    candidate: Mapping[str, Any] = state.candidate or {}
    diff = candidate.get("diff", "")
    return {
        "kind": "approve_stage",
        "run_id": state.run_id,
        "lane": state.lane,
        "node_id": state.node_id,
        "round": state.round,
        "candidate": candidate.get("name"),
        "motivation": candidate.get("motivation"),
        "diff_lines": sum(1 for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")),
        "static_check": state.static_report,
        "stages_so_far": [{k: r.get(k) for k in ("stage", "status", "score")} for r in state.stage_results],
        "stage": stage.name,
        "cost": stage.cost,
        "settings": stage.settings,
        "options": {"action": list(APPROVAL_ACTIONS), "settings": "for edit: stage settings to change",
                    "reason": "free text"},
    }


def parse_decision(value: Any, stage_settings: Collection[str] | None = None) -> Approval:
    """Normalise a resume value; a bare string is an action. Anything unusable is a ValueError naming it, and so is
    a setting the stage does not have when its `stage_settings` are given (the evaluator would take it for the
    candidate's fault)."""
    if isinstance(value, str):
        value = {"action": value}
    if not isinstance(value, dict) or value.get("action") not in APPROVAL_ACTIONS:
        raise ValueError(f"approval must be approve, reject or edit (optionally with settings/reason), got {value!r}")
    settings = value.get("settings") or {}
    if not isinstance(settings, dict):
        raise ValueError(f"approval settings must be a mapping, got {settings!r}")
    unknown = sorted(set(settings) - set(stage_settings)) if stage_settings is not None else []
    if unknown:
        raise ValueError(f"approval settings: the stage has no setting {', '.join(map(repr, unknown))}; its settings "
                         f"are {sorted(stage_settings or ()) or 'none'}")
    return {"action": value["action"], "settings": settings, "reason": str(value.get("reason") or "")}


class ApprovalDecision(BaseModel):
    """A person's answer to an approval request: the `response_schema` of its interrupt. LangGraph validates a
    resume value against it before saving it, so a malformed answer fails that resume and the interrupt stays
    open for the next one (raised from the node instead, it would be saved and replayed on every later resume)."""

    action: ApprovalAction
    settings: dict[str, Any] = Field(default_factory=dict, description="for edit: stage settings to change")
    reason: str = Field("", description="free text")
    stage_settings: ClassVar[frozenset[str]] = frozenset()
    """The settings of the stage asked about (set on the per-stage subclass)."""

    @model_validator(mode="before")
    @classmethod
    def _parsed(cls, value: Any) -> Approval:
        return parse_decision(value, cls.stage_settings)


def decision_schema(stage: Stage) -> type[ApprovalDecision]:
    """The answer a person may give about `stage`: an edit names only settings the stage has."""
    schema = create_model(f"ApprovalOf_{stage.name}", __base__=ApprovalDecision)
    schema.stage_settings = frozenset(stage.settings)
    return schema


def metrics_verdict(metrics_text: str) -> dict[str, Any]:
    """The part of read_metrics' JSON a person judges a stage by, as an object (Studio shows it as a tree, where
    clipped JSON text would be one opaque string); the full metrics are in the stage's result."""
    try:
        metrics = json.loads(metrics_text)
    except ValueError:
        return {"error": f"read_metrics returned no JSON: {metrics_text[:300]}"}
    return {key: metrics[key] for key in ("score", "valid", "error", "feedback") if key in metrics}


def stage_workdir(res: Services, state: State, stage: Stage) -> Path:
    return res.config.node_dir(state.run_id, state.node_id) / f"{stage.name}-try{state.debug_attempts}"


def run_one_stage(res: Services, stage: Stage, code: str, workdir: Path,
                  settings: dict[str, Any] | None) -> tuple[StageResult, list[ToolCall]]:
    """Run a stage and read its results the way a person would: metrics, then the log on failure."""
    sandbox = sandbox_for(res.config.sandbox, stage.backend)  # a stage may name its own backend
    with res.evaluation_slots:
        outcome = run_stage(res.task, stage, code, workdir, sandbox, settings_override=settings,
                            max_output_bytes=res.config.sandbox.max_output_bytes)
    calls: list[ToolCall] = [{"tool": "run_stage",
                              "args": {"stage": stage.name, "workdir": str(workdir), "settings": settings or {}},
                              "result": f"{outcome['status']}, score {outcome['score']}"}]
    metrics_text = read_metrics.invoke({"results_dir": outcome["results_dir"]})
    calls.append({"tool": "read_metrics", "args": {"results_dir": outcome["results_dir"]},
                  "result": metrics_verdict(metrics_text)})
    if stage_failed(outcome):
        tail = read_log_tail.invoke({"results_dir": outcome["results_dir"], "stream": "stderr", "lines": 30})
        calls.append({"tool": "read_log_tail", "args": {"results_dir": outcome["results_dir"], "stream": "stderr"},
                      "result": tail[-1500:]})
    return outcome, calls


def run_evaluation(state: State, runtime: Runtime[RunConfig]) -> dict[str, Any]:
    """Run the next stage; set the round status when the cascade ends."""
    res = services_for(state.run_id, runtime)
    assert state.candidate is not None
    stage = res.task.stages[state.next_stage]
    approval = state.approval
    settings = None
    if needs_approval(res.config, stage):
        answer = interrupt(approval_request(state, stage), response_schema=decision_schema(stage))
        approval = Approval(action=answer.action, settings=dict(answer.settings), reason=answer.reason)
        if approval["action"] == "reject":
            reason = approval["reason"] or "no reason given"
            return {"approval": approval, "status": "rejected_by_human",
                    "error": f"a person rejected stage {stage.name!r} (cost {stage.cost}): {reason}"}
        settings = approval["settings"] if approval["action"] == "edit" else None
    outcome, calls = run_one_stage(res, stage, state.candidate["code"], stage_workdir(res, state, stage), settings)
    update: dict[str, Any] = {"stage_results": [outcome], "tool_calls": calls, "approval": approval}
    if outcome["status"] == "ok":
        if state.next_stage + 1 < len(res.task.stages):
            update["next_stage"] = state.next_stage + 1
        else:
            update["status"] = "evaluated"
    else:
        exhausted = state.debug_attempts >= res.config.bounds.max_debug_attempts
        unchanged = state.debug_attempts > 0 and _same_failure_as_before_the_patch(state, outcome)
        fix = fixable(res.config, outcome) and not exhausted and not unchanged
        update["status"] = "needs_fix" if fix else STATUS_AFTER_STAGE[outcome["status"]]
        update["error"] = outcome["error"]
        if unchanged and not exhausted:
            update["feedback"] = [f"debugger: the patch left the same failure ({outcome['error']}); not asked again"]
    return update


def _same_failure_as_before_the_patch(state: State, outcome: StageResult) -> bool:
    """Whether a patched candidate failed the way it did before the Debugger's last patch (the same status and
    error): the Debugger made no progress, and a further patch of the same program rarely does. Measured
    (circle_packing, the embedded 1.5B model, 2026-12-04 23:02): in 2 of the 3 rounds the Debugger took, its
    second attempt faced the error its first had left, word for word, and no attempt fixed a program (20-30 s a
    call)."""
    before = next((stage for stage in reversed(state.stage_results) if stage.get("status") != "ok"), None)
    return (before is not None and outcome["error"] is not None
            and (before.get("status"), before.get("error")) == (outcome["status"], outcome["error"]))


def fixable(config: RunConfig, outcome: StageResult) -> bool:
    """Whether the Debugger may take this failed stage: a crash, or (`bounds.debug_invalid`) a result the evaluator
    marked invalid."""
    return outcome["status"] == "runtime_error" or (outcome["status"] == "invalid" and config.bounds.debug_invalid)


def evaluate_program(res: Services, code: str, node_dir: Path) -> tuple[NodeStatus, list[StageResult], str | None]:
    """The whole cascade without agents (the seed program): (status, stage results, error)."""
    results: list[StageResult] = []
    for stage in res.task.stages:
        outcome, _ = run_one_stage(res, stage, code, node_dir / stage.name, None)
        results.append(outcome)
        if outcome["status"] != "ok":
            return STATUS_AFTER_STAGE[outcome["status"]], results, outcome["error"]
    return "evaluated", results, None
