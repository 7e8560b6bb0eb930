"""Finding processes by their command line, to prove a test left none behind."""

from __future__ import annotations

import os
from pathlib import Path


def _command_lines(marker: str) -> dict[int, str]:
    """The command line of every process but this one that contains `marker`, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # the process ended while we looked
                continue
            if marker in cmdline:
                found[int(entry.name)] = cmdline
    return found


def processes_mentioning(marker: str) -> list[str]:
    """`pid: command line` of every process whose command line contains `marker`."""
    return [f"{pid}: {cmdline}" for pid, cmdline in _command_lines(marker).items()]


def pids_mentioning(marker: str) -> list[int]:
    """The pids of the processes whose command line contains `marker`."""
    return list(_command_lines(marker))
