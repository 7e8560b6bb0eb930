"""How a round stands, and so the status its node is recorded with.

A `Literal` rather than an `Enum`: the status lives in the graph's checkpoints, which stay plain JSON-like values
(LangGraph stores an enum member as its class, to be imported again on every read, and warns that it will refuse
classes it was not told of). A typo in a status is still a type error wherever a status is typed.
"""

from __future__ import annotations

from typing import Literal, TypeAlias, get_args

NodeStatus: TypeAlias = Literal[
    "evaluated",
    "early_rejected",
    "invalid",
    "runtime_failed",
    "timeout",
    "resource_limit",
    "static_rejected",
    "duplicate",
    "parse_failed",
    "evaluator_error",
    "rejected_by_human",
]
"""A round's final status: the status of the node it records."""

PendingStatus: TypeAlias = Literal["", "needs_fix"]
"""A round that goes on: `""` on its way through the loop, `needs_fix` while a failed stage waits for the Debugger."""

RoundStatus: TypeAlias = PendingStatus | NodeStatus

NODE_STATUSES: tuple[NodeStatus, ...] = get_args(NodeStatus)


def is_final(status: RoundStatus) -> bool:
    """Whether the round ends with this status (it is then the node's)."""
    return status not in get_args(PendingStatus)
