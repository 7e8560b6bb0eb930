"""How a sandboxed job ended, named the same way by every backend: the limit it hit, or the signal it died of.

A backend reports what it saw (`JobEnd`); `end_reason` turns that into `SandboxResult.killed_reason`, and
`SandboxResult.describe_failure` words it with the limit's value. The limit is named even when the job's
first process survived it: an evaluator whose candidate child the kernel's OOM killer took still exits 0,
but the stage failed on memory, not on whatever the evaluator made of a child that vanished.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from evoforge.sandbox.base import Limits

RESOURCE_LIMITS = ("memory", "pids", "output", "signal:SIGXCPU", "signal:SIGXFSZ")
"""Reasons that are a limit of the stage's resources (the last two: the CPU-time and file-size rlimits)."""
PIDS_GRACE_S = 0.5
"""A job whose forks keep failing at its process limit this long is stopped ('pids'): it is a fork bomb, or
stuck, and would only spend the rest of its wall-clock limit."""
_MEMORY_TEXTS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")


@dataclass(frozen=True)
class JobEnd:
    """What a backend saw of the end of one job."""

    code: int | None
    """Exit status of the first process; negative: the signal that killed it; None: no status."""
    stopped_for: str | None
    """The limit the supervisor stopped the job for ('timeout' | 'output' | 'memory' | 'pids'), or None."""
    wall_s: float
    oom_killed: bool | None = None
    """Whether the kernel's OOM killer killed a process of the job; None when the backend cannot tell."""
    pids_limit_hit: bool = False
    """Whether the job reached its process limit (so some fork failed)."""
    stderr: str = ""
    peak_memory_mb: float = 0.0


def end_reason(end: JobEnd, limits: Limits) -> str | None:
    """The `killed_reason` of a job: the limit it hit, 'signal:<NAME>', or None (ended on its own)."""
    if end.stopped_for:
        return end.stopped_for
    if end.oom_killed:
        return "memory"  # also when the first process survived the kill and exited 0
    if end.code in (0, None):
        return None
    if end.code == -signal.SIGKILL and end.wall_s >= limits.timeout_s:
        return "timeout"  # the backend's own backstop (e.g. `timeout -s KILL` inside a container) fired
    if end.pids_limit_hit:
        return "pids"
    if _looks_like_memory(end, limits):
        return "memory"
    if end.code < 0:
        return f"signal:{signal.Signals(-end.code).name}"
    return None


def _looks_like_memory(end: JobEnd, limits: Limits) -> bool:
    """Running out of memory where no backend sees the OOM killer: RLIMIT_AS makes allocations fail inside
    the job, so it shows as an out-of-memory message in the stderr tail, a SIGKILL nobody else sent (when
    `oom_killed` is unknown), or a SIGSEGV/SIGABRT with the peak within 10 % of the limit."""
    if not limits.memory_mb:
        return False
    if any(text in end.stderr[-4000:] for text in _MEMORY_TEXTS):
        return True
    if end.code == -signal.SIGKILL and end.oom_killed is None:
        return True
    return end.code in (-signal.SIGSEGV, -signal.SIGABRT) and end.peak_memory_mb >= 0.9 * limits.memory_mb
