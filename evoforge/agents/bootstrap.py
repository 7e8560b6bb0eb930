"""The first step of a run: register it, ingest the task's notes into cognition, evaluate the seed once."""

from __future__ import annotations

import logging
from typing import Any

from langgraph.runtime import Runtime

from evoforge.agents.engineer import evaluate_program
from evoforge.agents.recorder import node_id_for, outcome_fields, resource_totals, stop_reason
from evoforge.config import RunConfig
from evoforge.memory.nodes import NodeRecord
from evoforge.runtime.payloads import StageResult
from evoforge.runtime.services import Services, services_for, thread_run_id
from evoforge.runtime.state import State
from evoforge.tasks.spec import TaskError

log = logging.getLogger(__name__)
SEED_MOTIVATION = "The task's seed program, evaluated as given."


def seed_analysis(status: str, stage_results: list[StageResult]) -> str:
    parts = [f"Seed program: {status}."]
    for stage in stage_results:
        parts.append(f"Stage {stage['stage']}: {stage['status']}, score {stage.get('score')}.")
        if stage.get("feedback"):
            parts.append(str(stage["feedback"])[:400])
    return " ".join(parts)


def record_seed(res: Services, run_id: str) -> NodeRecord:
    """Evaluate the seed and record it as the run's round-0 node.

    An evaluator that fails on the seed would fail on every candidate: the run stops with a TaskError that says
    what to fix, and records nothing, so the resumed run evaluates the seed again.
    """
    code = res.task.seed_code()
    node_id = node_id_for(run_id, 0, 0)
    status, stage_results, error = evaluate_program(res, code, res.config.node_dir(run_id, node_id))
    if status == "evaluator_error":
        task, stage = res.task, stage_results[-1]["stage"]
        raise TaskError(f"the seed program of task {task.name!r} could not be evaluated: {error} Fix the evaluator "
                        f"({task.evaluator_path}), try it with `evoforge evaluate {task.root} {task.program_path} "
                        f"--stage {stage}`, then continue with `evoforge resume {run_id}`.")
    if status != "evaluated":
        log.warning("the seed program of %s did not evaluate cleanly: %s (%s)", res.task.name, status, error)
    node = NodeRecord(
        **outcome_fields(res, motivation=SEED_MOTIVATION, code=code, status=status, stage_results=stage_results),
        id=node_id, run_id=run_id, round=0, lane=0, parent_ids=[], inspiration_ids=[], name="seed", diff="",
        analysis=seed_analysis(status, stage_results), error=error, feedback=None, cognition_ids=[], tokens_in=0,
        tokens_out=0, llm_seconds=0.0, resources=resource_totals(stage_results), policy="seed", island=0,
    )
    res.nodes.record_node(node)
    return node


def prepare_run(state: State, runtime: Runtime[RunConfig]) -> dict[str, Any]:
    """Idempotent: a resumed or re-entered run finds its record, its notes and its seed already there."""
    run_id = state.run_id or thread_run_id()
    res = services_for(run_id, runtime)
    res.nodes.create_run(run_id, res.task.name, str(res.task.root), res.config.model_dump(mode="json"))
    res.nodes.update_run_status(run_id, "running")
    added, retired = res.cognition.sync_files(res.task.cognition_files(), task=res.task.name)
    if added or retired:
        log.info("cognition from %s: %d items ingested, %d retired", res.task.root / res.task.cognition_dir,
                 added, retired)
    # lanes start together: one evaluates the seed while the others wait on the run's lock
    with res.database.advisory_lock(f"seed:{run_id}"):
        if res.nodes.get_node(node_id_for(run_id, 0, 0)) is None:
            record_seed(res, run_id)
    best = res.nodes.best_node(run_id, res.task.score.direction)
    best_score = best.score if best else None
    reason = stop_reason(res, lane=state.lane, round_=state.round, best_score=best_score,
                         tokens_used=state.tokens_used, rounds_since_best=state.rounds_since_best)
    if reason:
        res.nodes.update_run_status(run_id, "finished", reason)
    return {"run_id": run_id, "best_node_id": best.id if best else None, "best_score": best_score,
            "stop_reason": reason}
