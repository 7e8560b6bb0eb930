"""What the graph's payloads hold, key by key: the parent, the inspirations, the cognition, the candidate and
the verdicts on it, the Engineer's stages and tool calls, a person's decision, the round's model usage.

TypedDicts, not dataclasses or pydantic models: at run time they are the plain dicts the nodes always built, so
checkpoints stay plain JSON and read back as before. A key is required where every producer sets it,
`NotRequired` where only some do. From typing_extensions, not typing: pydantic, which builds the state's JSON
schema for Studio (`graph.get_output_jsonschema()`), refuses typing.TypedDict before Python 3.12.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypeAlias, get_args

from typing_extensions import TypedDict

from evoforge.memory.status import NodeStatus
from evoforge.tools.evaluation import StageResult

__all__ = ["APPROVAL_ACTIONS", "Approval", "ApprovalAction", "Candidate", "CognitionView", "MessageRecord",
           "NodeView", "NoveltyReport", "NoveltyVerdict", "ParentView", "RoleUsage", "StageResult", "StaticReport",
           "ToolCall"]


class NodeView(TypedDict):
    """A node of memory as the prompts (and Studio) show it: an inspiration (agents/base.py:node_view)."""

    id: str
    name: str
    score: float | None
    status: NodeStatus
    motivation: str
    analysis: str


class ParentView(NodeView):
    """The round's parent: a node view with the node's program."""

    code: str


class CognitionView(TypedDict):
    """A retrieved cognition item (agents/sampler.py)."""

    id: str
    kind: str
    """"prior" (human knowledge) or "insight" (an Analyzer's lesson), as cognition/store.py keeps it."""
    title: str
    content: str
    source: str
    similarity: float
    """Cosine similarity to the best-matching query, at 4 digits."""


class MessageRecord(TypedDict):
    """A chat message as plain JSON (agents/base.py:message_records)."""

    type: str
    """LangChain's message type: system, human or ai."""
    content: str


class Candidate(TypedDict):
    """The program a round evaluates: the Researcher's proposal (agents/researcher.py, tree_researcher.py), or
    one the loop built when the reply echoed its parent (researcher.BuiltCandidate); the Static-Checker and the
    Debugger replace its code and diff."""

    name: str
    motivation: str
    code: str
    diff: str
    """Unified diff from the parent's code."""
    edit_mode: str
    """How the code was made: diff, rewrite, definitions (editing.py), prior_code, tuned_constant
    (constant_tuning.py), files (a tree task's reply)."""
    repairs: list[str]
    """Names the edit left unbound, bound again (agents/unbound_names.py), one note each."""
    conversation: list[MessageRecord]
    """The Researcher's prompt and reply that led to it; the Analyzer continues this conversation."""
    change: NotRequired[str]
    """A candidate the loop built: what it changed in the parent, in a few words (analyzer.built_candidate_report)."""
    files: NotRequired[dict[str, str]]
    """A tree candidate: what happened to each changed path (diff, rewrite, definitions, new, deleted)."""


class StaticReport(TypedDict):
    """The Static-Checker's verdict on the candidate (agents/static_checker.py)."""

    ok: bool
    reasons: list[str]
    """Why it was rejected; empty when ok."""
    repaired: str | None
    """What was repaired (edits outside the evolvable region discarded), or None."""
    deferred_to_debugger: str | None
    """The candidate raised under the task's check script: the Engineer's run reproduces it for the Debugger."""


NoveltyVerdict: TypeAlias = Literal["novel", "duplicate"]


class NoveltyReport(TypedDict):
    """The Novelty-Checker's verdict on the candidate (agents/novelty_checker.py)."""

    verdict: NoveltyVerdict
    nearest_id: str | None
    """The nearest node of memory, None when none was compared."""
    nearest_name: str | None
    similarity: float
    """1.0 for the same fingerprint, else the embedding similarity to the nearest node (0.0 without one)."""
    reason: str


class ToolCall(TypedDict):
    """One of the Engineer's tool calls (agents/engineer.py:run_one_stage)."""

    tool: str
    args: dict[str, Any]
    result: str | dict[str, Any]
    """A summary: text, or the part of the metrics a person judges a stage by."""


ApprovalAction: TypeAlias = Literal["approve", "reject", "edit"]
APPROVAL_ACTIONS: tuple[ApprovalAction, ...] = get_args(ApprovalAction)


class Approval(TypedDict):
    """A person's decision on a costly stage (agents/engineer.py:parse_decision)."""

    action: ApprovalAction
    settings: dict[str, Any]
    """For edit: the stage settings to change."""
    reason: str


class RoleUsage(TypedDict):
    """What one role's model calls of a round cost (agents/base.py:add_usage, llm/usage.py:Usage)."""

    tokens_in: int
    tokens_out: int
    seconds: float
    calls: int
    tokens_cached: int
    """Of `tokens_in`, those the server took from its prompt cache."""
