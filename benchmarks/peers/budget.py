"""Running a peer as a subprocess under a wall-clock budget, and making sure nothing of it survives the budget.

A peer is started in its own session (so its process group is its own), waited for up to the budget, then
SIGKILLed: the group first, then every descendant found under /proc, because a peer's evaluations run in
sandboxes that may start their own sessions and so leave the group.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REAP_WAIT_S = 10.0
"""How long killed processes get to disappear (SIGKILL is immediate; zombies need their parent to reap)."""


@dataclass(frozen=True)
class BudgetRun:
    """How a budgeted run ended: `killed` when the budget ran out first; `survivors` lists pids still alive
    after the kill (empty when everything is gone)."""

    returncode: int | None
    killed: bool
    seconds: float
    survivors: tuple[int, ...]


def run_under_budget(argv: list[str], budget_s: float, log_path: Path, *, cwd: Path,
                     env: dict[str, str] | None = None) -> BudgetRun:
    """Run `argv` with stdout and stderr to `log_path`; SIGKILL it and all its descendants at `budget_s`."""
    if budget_s <= 0:
        raise ValueError(f"budget_s must be positive, got {budget_s}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log_path.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        killed = False
        try:
            proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            killed = True
        finally:
            # Even a peer that exited by itself may have left evaluations running.
            survivors = kill_tree(proc.pid)
            proc.wait()
    return BudgetRun(proc.returncode, killed, round(time.monotonic() - start, 3), survivors)


def kill_tree(pid: int) -> tuple[int, ...]:
    """SIGKILL process group `pid` and every descendant of `pid`; return the pids still alive afterwards."""
    victims = descendants(pid)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        log.debug("process group %d already gone", pid)
    for child in victims:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            log.debug("process %d already gone", child)
    deadline = time.monotonic() + REAP_WAIT_S
    alive = [p for p in [*victims, *_group_members(pid)] if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _alive(p)]
    return tuple(alive)


def descendants(pid: int) -> list[int]:
    """Every living descendant of `pid` (children first found through /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[1], []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found.extend(kids)
        frontier.extend(kids)
    return found


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[2] == pgid:
                members.append(int(entry.name))
    return members


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of `pid` from /proc/PID/stat, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")
