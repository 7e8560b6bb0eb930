"""Which way a score improves: the one spelling the task contract, node memory and the report share."""

from __future__ import annotations

from typing import Literal, get_args

Direction = Literal["maximize", "minimize"]
"""A task's `score.direction` (and each objective's): whether a higher or a lower score is better."""
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
