"""Input, state and output schemas of the research graph.

Every value is plain JSON (dicts, lists, strings, numbers) so checkpoints stay portable and readable in
LangGraph Studio. Fields under "one round" are reset by `sample_context` at the start of each round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from evoforge.memory.status import RoundStatus


def extend_or_reset(left: list[Any], right: list[Any] | None) -> list[Any]:
    """Reducer for lists that grow within a round: an update appends, `None` empties the list."""
    if right is None:
        return []
    return [*left, *right]


@dataclass
class InputState:
    run_id: str = ""
    """The run to start or continue; empty means the thread id."""
    lane: int = 0
    """Which of the run's concurrent lanes this thread drives (0 when there is one)."""


@dataclass
class OutputState:
    """The run's summary, first in State; not the graph's output_schema (see build_graph for why)."""

    run_id: str = ""
    """The run this thread drives."""
    lane: int = 0
    """The lane this thread drives."""
    round: int = 0
    """Rounds completed or in progress (the seed is round 0)."""
    best_node_id: str | None = None
    """The best valid node so far."""
    best_score: float | None = None
    """Its score."""
    stop_reason: str | None = None
    """Why the run stopped (rounds, target, budget, patience); None while it goes on."""


@dataclass
class State(OutputState):
    rounds_since_best: int = 0
    """Rounds since the best score last improved (for the patience stop)."""
    tokens_used: int = 0
    """LLM tokens (prompt + completion) spent by the run so far."""

    # --- one round ---
    node_id: str = ""
    """Id the node of this round will be recorded under (deterministic, so a resumed round reuses it)."""
    policy: str = ""
    """Sampling policy that chose the parent."""
    island: int = 0
    """MAP-Elites island the parent came from (and the node joins); 0 for policies without islands."""
    parent: dict[str, Any] | None = None
    """The parent node: id, name, score, motivation, analysis, code."""
    inspirations: list[dict[str, Any]] = field(default_factory=list)
    """Other nodes shown to the Researcher: id, name, score, motivation, analysis."""
    cognition: list[dict[str, Any]] = field(default_factory=list)
    """Retrieved cognition items: id, kind (prior | insight), title, content, source, similarity."""
    candidate: dict[str, Any] | None = None
    """The Researcher's proposal: name, motivation, code, diff, edit_mode (diff | rewrite | definitions |
    prior_code | tuned_constant), repairs (names the edit left unbound, bound again: agents/unbound_names.py)."""
    feedback: Annotated[list[str], extend_or_reset] = field(default_factory=list)
    """Why earlier attempts this round were turned back (parse errors, static reasons, duplicates)."""
    static_report: dict[str, Any] | None = None
    """The Static-Checker's verdict: ok, reasons, repaired."""
    novelty_report: dict[str, Any] | None = None
    """The Novelty-Checker's verdict: verdict, nearest_id, similarity, reason."""
    next_stage: int = 0
    """Index of the task stage the Engineer runs next."""
    stage_results: Annotated[list[dict[str, Any]], extend_or_reset] = field(default_factory=list)
    """Every stage the Engineer ran this round (including runs before a Debugger patch)."""
    tool_calls: Annotated[list[dict[str, Any]], extend_or_reset] = field(default_factory=list)
    """The Engineer's tool calls: tool, args, result summary."""
    approval: dict[str, Any] | None = None
    """The human decision on a costly stage: action (approve | reject | edit), settings, reason."""
    status: RoundStatus = ""
    """Outcome of the round so far: "" while it goes on, `needs_fix` while a failed stage waits for the Debugger,
    else final, the node's status (memory/status.py)."""
    error: str | None = None
    """The failure that ended the round, in one sentence."""
    analysis: str = ""
    """The Analyzer's report."""
    insights: list[str] = field(default_factory=list)
    """Reusable lessons the Analyzer extracted (written back to cognition)."""
    usage: dict[str, dict[str, float]] = field(default_factory=dict)
    """LLM usage this round per role: tokens_in, tokens_out, seconds, calls."""
    parse_failures: int = 0
    """Unparseable Researcher replies this round (bounded by bounds.max_parse_retries)."""
    static_retries: int = 0
    """Static-check rejections this round (bounded by bounds.max_static_retries)."""
    novelty_retries: int = 0
    """Duplicate verdicts this round (bounded by bounds.max_novelty_retries)."""
    debug_attempts: int = 0
    """Debugger patches this round (bounded by bounds.max_debug_attempts)."""


ROUND_RESET: dict[str, Any] = {
    "node_id": "",
    "policy": "",
    "island": 0,
    "parent": None,
    "inspirations": [],
    "cognition": [],
    "candidate": None,
    "feedback": None,
    "static_report": None,
    "novelty_report": None,
    "next_stage": 0,
    "stage_results": None,
    "tool_calls": None,
    "approval": None,
    "status": "",
    "error": None,
    "analysis": "",
    "insights": [],
    "usage": {},
    "parse_failures": 0,
    "static_retries": 0,
    "novelty_retries": 0,
    "debug_attempts": 0,
}
"""The update `sample_context` applies so each round starts clean."""
