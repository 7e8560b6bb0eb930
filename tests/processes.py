"""Finding processes by their command line, to prove a test left none behind."""

from __future__ import annotations

from pathlib import Path


def processes_mentioning(marker: str) -> list[str]:
    """`pid: command line` of every process whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # the process ended while we looked
                continue
            if marker in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found
