"""Wording shared by the messages a person reads (terminal, reports, stop reasons)."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`count` with `noun` in the right number: "1 round", "2 rounds", "0 rounds"; give `plural` where adding
    an "s" is wrong ("1 query", "2 queries")."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
