"""The routers of the research graph as pure functions: a state in, the next node out (no database, no model)."""

from __future__ import annotations

from typing import Any

import pytest

from evoforge.graph import routing
from evoforge.runtime.state import State


def state(**fields: Any) -> State:
    return State(run_id="r", **fields)


@pytest.mark.parametrize(("fields", "expected"), [
    ({"static_report": {"ok": True}}, "check_novelty"),
    ({"static_report": {"ok": False}}, "propose_candidate"),
    ({"static_report": {"ok": False}, "status": "static_rejected"}, "record_node"),
])
def test_after_the_static_check(fields: dict[str, Any], expected: str) -> None:
    assert routing.route_after_check_candidate(state(**fields)) == expected


@pytest.mark.parametrize(("fields", "expected"), [
    ({"novelty_report": {"verdict": "novel"}}, "run_evaluation"),
    ({"novelty_report": {"verdict": "duplicate"}}, "propose_candidate"),
    ({"novelty_report": {"verdict": "duplicate"}, "status": "duplicate"}, "record_node"),
])
def test_after_the_novelty_check(fields: dict[str, Any], expected: str) -> None:
    assert routing.route_after_check_novelty(state(**fields)) == expected


@pytest.mark.parametrize(("status", "expected"), [
    ("", "run_evaluation"),  # a stage passed and another follows
    ("needs_fix", "debug_candidate"),  # a crash or an invalid result, Debugger attempts left
    ("rejected_by_human", "record_node"),
    ("evaluated", "analyze_result"),
    ("invalid", "analyze_result"),
    ("runtime_failed", "analyze_result"),
    ("early_rejected", "analyze_result"),
])
def test_after_a_stage(status: str, expected: str) -> None:
    assert routing.route_after_run_evaluation(state(status=status)) == expected


@pytest.mark.parametrize(("status", "expected"), [
    ("", "run_evaluation"),  # patched: the cascade starts again
    ("needs_fix", "debug_candidate"),
    ("runtime_failed", "analyze_result"),
    ("invalid", "analyze_result"),
])
def test_after_the_debugger(status: str, expected: str) -> None:
    assert routing.route_after_debug_candidate(state(status=status)) == expected


def test_a_round_without_a_candidate_is_recorded_at_once() -> None:
    assert routing.route_after_propose_candidate(state(candidate=None, status="parse_failed")) == "record_node"
    assert routing.route_after_propose_candidate(state(candidate={"code": "x = 1"})) == "check_candidate"


@pytest.mark.parametrize("router", [routing.route_after_prepare_run, routing.route_after_record_node])
def test_a_stop_reason_ends_the_thread(router: Any) -> None:
    assert router(state(stop_reason="4 rounds done")) == "__end__"
    assert router(state()) == "sample_context"
