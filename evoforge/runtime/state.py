"""Input, state and output schemas of the research graph.

Every value is plain JSON (dicts, lists, strings, numbers) so checkpoints stay portable and readable in
LangGraph Studio; the dicts are typed by the TypedDicts of payloads.py. Fields under "one round" are reset by
`sample_context` at the start of each round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from typing_extensions import TypedDict

from evoforge.memory.status import RoundStatus
from evoforge.runtime.payloads import (
    Approval,
    Candidate,
    CognitionView,
    NodeView,
    NoveltyReport,
    ParentView,
    RoleUsage,
    StageResult,
    StaticReport,
    ToolCall,
)

Item = TypeVar("Item")


def extend_or_reset(left: list[Item], right: list[Item] | None) -> list[Item]:
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
    parent: ParentView | None = None
    """The parent node: id, name, score, status, motivation, analysis, code."""
    inspirations: list[NodeView] = field(default_factory=list)
    """Other nodes shown to the Researcher: id, name, score, status, motivation, analysis."""
    cognition: list[CognitionView] = field(default_factory=list)
    """Retrieved cognition items: id, kind (prior | insight), title, content, source, similarity."""
    candidate: Candidate | None = None
    """The Researcher's proposal: name, motivation, code, diff, edit_mode (diff | rewrite | definitions |
    prior_code | tuned_constant | files), repairs (names the edit left unbound, bound again:
    agents/unbound_names.py), conversation; `change` on a candidate the loop built, `files` on a tree's."""
    feedback: Annotated[list[str], extend_or_reset] = field(default_factory=list)
    """Why earlier attempts this round were turned back (parse errors, static reasons, duplicates)."""
    static_report: StaticReport | None = None
    """The Static-Checker's verdict: ok, reasons, repaired, deferred_to_debugger."""
    novelty_report: NoveltyReport | None = None
    """The Novelty-Checker's verdict: verdict, nearest_id, nearest_name, similarity, reason."""
    next_stage: int = 0
    """Index of the task stage the Engineer runs next."""
    stage_results: Annotated[list[StageResult], extend_or_reset] = field(default_factory=list)
    """Every stage the Engineer ran this round (including runs before a Debugger patch)."""
    tool_calls: Annotated[list[ToolCall], extend_or_reset] = field(default_factory=list)
    """The Engineer's tool calls: tool, args, result summary."""
    approval: Approval | None = None
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
    usage: dict[str, RoleUsage] = field(default_factory=dict)
    """LLM usage this round per role: tokens_in, tokens_out, seconds, calls, tokens_cached."""
    parse_failures: int = 0
    """Unparseable Researcher replies this round (bounded by bounds.max_parse_retries)."""
    static_retries: int = 0
    """Static-check rejections this round (bounded by bounds.max_static_retries)."""
    novelty_retries: int = 0
    """Duplicate verdicts this round (bounded by bounds.max_novelty_retries)."""
    debug_attempts: int = 0
    """Debugger patches this round (bounded by bounds.max_debug_attempts)."""


class RoundReset(TypedDict):
    """The per-round fields of `State`, each of its type, as `sample_context` resets them; `None` for a list
    with the `extend_or_reset` reducer, which it empties."""

    node_id: str
    policy: str
    island: int
    parent: ParentView | None
    inspirations: list[NodeView]
    cognition: list[CognitionView]
    candidate: Candidate | None
    feedback: list[str] | None
    static_report: StaticReport | None
    novelty_report: NoveltyReport | None
    next_stage: int
    stage_results: list[StageResult] | None
    tool_calls: list[ToolCall] | None
    approval: Approval | None
    status: RoundStatus
    error: str | None
    analysis: str
    insights: list[str]
    usage: dict[str, RoleUsage]
    parse_failures: int
    static_retries: int
    novelty_retries: int
    debug_attempts: int


ROUND_RESET: RoundReset = {
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
