"""Routers of the research graph: each reads only the state its node wrote and names the next node."""

from __future__ import annotations

from typing import Literal

from evoforge.runtime.state import State


def route_after_prepare_run(state: State) -> Literal["sample_context", "__end__"]:
    return "__end__" if state.stop_reason else "sample_context"


def route_after_propose_candidate(state: State) -> Literal["check_candidate", "record_node"]:
    return "check_candidate" if state.candidate is not None else "record_node"


def route_after_check_candidate(state: State) -> Literal["check_novelty", "propose_candidate", "record_node"]:
    if state.static_report and state.static_report["ok"]:
        return "check_novelty"
    return "record_node" if state.status == "static_rejected" else "propose_candidate"


def route_after_check_novelty(state: State) -> Literal["run_evaluation", "propose_candidate", "record_node"]:
    if state.novelty_report and state.novelty_report["verdict"] == "novel":
        return "run_evaluation"
    return "record_node" if state.status == "duplicate" else "propose_candidate"


def route_after_run_evaluation(
    state: State,
) -> Literal["run_evaluation", "debug_candidate", "analyze_result", "record_node"]:
    if state.status == "":
        return "run_evaluation"
    if state.status == "needs_fix":
        return "debug_candidate"
    if state.status == "rejected_by_human":
        return "record_node"
    return "analyze_result"


def route_after_debug_candidate(state: State) -> Literal["run_evaluation", "debug_candidate", "analyze_result"]:
    if state.status == "":
        return "run_evaluation"
    return "debug_candidate" if state.status == "needs_fix" else "analyze_result"


def route_after_record_node(state: State) -> Literal["sample_context", "__end__"]:
    return "__end__" if state.stop_reason else "sample_context"
