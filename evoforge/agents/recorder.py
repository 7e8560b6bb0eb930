"""Recording, the last step of every round: the node goes into memory (idempotently), insights into
cognition, and the stop criteria are checked."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from langgraph.runtime import Runtime

from evoforge.agents.novelty_checker import embed_candidate
from evoforge.cognition.store import novel_lessons
from evoforge.config import RunConfig
from evoforge.memory.fingerprint import code_hash
from evoforge.memory.nodes import NodeRecord
from evoforge.memory.sampling import archive_node
from evoforge.memory.status import NodeStatus
from evoforge.runtime.payloads import StageResult
from evoforge.runtime.services import Services, services_for
from evoforge.runtime.state import State
from evoforge.ui.wording import counted

log = logging.getLogger(__name__)


def node_id_for(run_id: str, round_: int, lane: int) -> str:
    """Deterministic, so a round replayed after a crash writes the same node (and the insert is a no-op)."""
    return f"{run_id}-r{round_:04d}-l{lane}"


def resource_totals(stage_results: list[StageResult]) -> dict[str, float]:
    return {
        "wall_s": round(sum(r.get("wall_s", 0.0) for r in stage_results), 3),
        "cpu_s": round(sum(r.get("cpu_s", 0.0) for r in stage_results), 3),
        "peak_memory_mb": max((r.get("peak_memory_mb", 0.0) for r in stage_results), default=0.0),
        "gpu_seconds": round(sum(r.get("gpu_seconds", 0.0) for r in stage_results), 3),
    }


def lane_rounds(rounds: int, workers: int, lane: int) -> int:
    """This lane's share of the run's rounds (the first `rounds % workers` lanes take one more)."""
    return rounds // workers + (1 if lane < rounds % workers else 0)


def stop_reason(res: Services, *, lane: int, round_: int, best_score: float | None, tokens_used: int,
                rounds_since_best: int) -> str | None:
    config, task = res.config, res.task
    target = config.budget.target_score if config.budget.target_score is not None else task.score.target
    if best_score is not None and target is not None and not task.better(target, best_score):
        return f"target {target} reached"
    if config.budget.max_tokens is not None and tokens_used >= config.budget.max_tokens:
        return f"token budget {config.budget.max_tokens} spent"
    if config.budget.patience is not None and rounds_since_best >= config.budget.patience:
        return f"no improvement for {counted(rounds_since_best, 'round')}"
    if round_ >= lane_rounds(config.rounds, config.workers, lane):
        return f"{counted(config.rounds, 'round')} done"
    return None


def outcome_fields(res: Services, *, motivation: str, code: str, status: NodeStatus,
                   stage_results: list[StageResult]) -> dict[str, Any]:
    """The fields of a node record that follow from its program and its evaluation: the same for the seed's
    record and a round's."""
    last = stage_results[-1] if stage_results else None
    return {
        "motivation": motivation,
        "code": code,
        "status": status,
        "score": last.get("score") if last else None,
        "valid": status == "evaluated",
        "metrics": last.get("metrics", {}) if last else {},
        "stage_results": stage_results,
        "code_hash": code_hash(code) if code else "",
        "embedding": embed_candidate(res.embedder, motivation, code) if code else None,
        "eval_seconds": resource_totals(stage_results)["wall_s"],
    }


def build_node(res: Services, state: State) -> NodeRecord:
    # empty when no reply of the round could be used; read as a mapping, since a Candidate has no optional keys
    candidate: Mapping[str, Any] = state.candidate or {}
    # a round reaches the Recorder with a final status, or "" when it ran through (NodeRecord checks it)
    status = cast(NodeStatus, state.status or "evaluated")
    return NodeRecord(
        **outcome_fields(res, motivation=candidate.get("motivation", ""), code=candidate.get("code", ""),
                         status=status, stage_results=state.stage_results),
        id=state.node_id,
        run_id=state.run_id,
        round=state.round,
        lane=state.lane,
        parent_ids=[state.parent["id"]] if state.parent else [],
        inspiration_ids=[node["id"] for node in state.inspirations],
        name=candidate.get("name", f"failed_r{state.round}"),
        diff=candidate.get("diff", ""),
        analysis=state.analysis,
        error=state.error,
        feedback="\n".join(state.feedback) or None,
        cognition_ids=[item["id"] for item in state.cognition],
        tokens_in=int(sum(u.get("tokens_in", 0) for u in state.usage.values())),
        tokens_out=int(sum(u.get("tokens_out", 0) for u in state.usage.values())),
        llm_seconds=round(sum(u.get("seconds", 0.0) for u in state.usage.values()), 3),
        resources={**resource_totals(state.stage_results), "usage": state.usage,
                   "retries": {"parse": state.parse_failures, "static": state.static_retries,
                               "novelty": state.novelty_retries, "debug": state.debug_attempts},
                   "repairs": candidate.get("repairs", []), "edit_mode": candidate.get("edit_mode")},
        policy=state.policy,
        island=state.island,
        novelty=dict(state.novelty_report) if state.novelty_report else {},
    )


def record_node(state: State, runtime: Runtime[RunConfig]) -> dict[str, Any]:
    """Write the round's node and insights; decide whether the run goes on."""
    res = services_for(state.run_id, runtime)
    node = build_node(res, state)
    res.nodes.record_node(node)
    archive_node(res.nodes, node, res.config.sampling, res.task.score)
    held = [item.content for item in res.cognition.list(res.task.name, kind="insight")] if state.insights else []
    for insight in novel_lessons(res.embedder, held, state.insights, res.config.cognition.lesson_duplicate_similarity):
        res.cognition.add(res.task.name, insight, title=f"lesson from {node.name}", source=f"node:{node.id}",
                          kind="insight", node_id=node.id)
    # the run's best over every lane, so target and patience judge the whole search
    best = res.nodes.best_node(state.run_id, res.task.score.direction)
    best_id, best_score = (best.id, best.score) if best else (None, None)
    since_best = 0 if best_id == node.id else state.rounds_since_best + 1
    tokens_used = state.tokens_used + node.tokens_in + node.tokens_out
    reason = stop_reason(res, lane=state.lane, round_=state.round, best_score=best_score, tokens_used=tokens_used,
                         rounds_since_best=since_best)
    if reason:
        res.nodes.update_run_status(state.run_id, "finished", reason)
    return {"best_node_id": best_id, "best_score": best_score, "rounds_since_best": since_best,
            "tokens_used": tokens_used, "stop_reason": reason}
