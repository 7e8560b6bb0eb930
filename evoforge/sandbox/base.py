"""The one interface every sandbox backend implements: run a command under hard limits, report what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

FLOOD_FACTOR = 16
"""A stream producing more than FLOOD_FACTOR x max_output_bytes is stopped ('output'): it only prints."""


@dataclass(frozen=True)
class Limits:
    """Hard limits the framework enforces on one evaluation, whatever the candidate does."""

    timeout_s: float
    memory_mb: int | None = 4096
    cpus: float = 1.0
    max_processes: int | None = 256
    max_output_bytes: int = 2_000_000
    """Per stream; beyond it the middle is dropped (head and tail are kept)."""
    max_file_mb: int | None = 2048
    """Largest single file the job may write (RLIMIT_FSIZE), so one runaway write cannot fill the disk."""
    network: bool = False
    gpus: int = 0
    gpu_ids: tuple[str, ...] = ()
    """Specific devices; ("all",) asks the docker backend for every GPU of the host."""
    custom: tuple[tuple[str, float], ...] = ()
    """Custom scheduler resources (name, amount), e.g. ("a100", 1); the ray backend requests them."""


@dataclass(frozen=True)
class Job:
    """A command to run inside `workdir`; only `env` (plus a minimal PATH/HOME) reaches it."""

    argv: list[str]
    workdir: Path
    limits: Limits
    env: dict[str, str] = field(default_factory=dict)
    readonly_paths: tuple[Path, ...] = ()
    """Host paths the job may read (the interpreter, the task files); everything else is hidden where the
    backend can hide it."""
    readonly_within: tuple[str, ...] = ()
    """Paths relative to `workdir` (a tree task's fixed files) the job may read but not change: mounted read-only
    by bubblewrap and docker; elsewhere left owned by us with mode 0444, so only their directory's owner could
    replace them."""

    def checked_workdir(self) -> Path:
        """The job's work dir, resolved; a ValueError, before any backend does anything, for a job that names no
        command or no existing directory."""
        if not self.argv:
            raise ValueError("job.argv must name a command, got []")
        workdir = self.workdir.resolve()
        if not workdir.is_dir():
            raise ValueError(f"job.workdir must be an existing directory, got {self.workdir}")
        return workdir


@dataclass
class SandboxResult:
    returncode: int | None
    """None when the process was killed by the framework (timeout, memory, output)."""
    stdout: str
    stderr: str
    wall_s: float
    cpu_s: float = 0.0
    peak_memory_mb: float = 0.0
    gpu_seconds: float = 0.0
    killed_reason: str | None = None
    """The limit the job hit ('timeout' | 'memory' | 'pids' | 'output'), 'signal:<NAME>', a backend's own
    failure ('worker_lost', ...), or None; set by `ending.end_reason`. A limit may be named with a
    returncode: a process of the job was killed by it, and the job's first process went on to exit."""
    backend: str = ""
    warnings: list[str] = field(default_factory=list)
    limits: Limits | None = None
    """The limits the job ran under, so a failure can name the value it hit."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_reason is None

    def describe_failure(self) -> str | None:
        """One sentence a person (or the Debugger) can act on, or None if the job succeeded."""
        limits = self.limits
        if self.killed_reason == "timeout":
            limit = f"{limits.timeout_s:g} s, " if limits else ""
            return f"killed after exceeding the wall-clock limit ({limit}ran {self.wall_s:.1f}s)"
        if self.killed_reason == "memory":
            limit = f"{limits.memory_mb} MB, " if limits and limits.memory_mb else ""
            if self.returncode is None or self.returncode < 0:
                return f"killed by the memory limit ({limit}peak ≈ {self.peak_memory_mb:.0f} MB)"
            return (f"hit the memory limit ({limit}peak ≈ {self.peak_memory_mb:.0f} MB): the kernel killed a "
                    f"process of it, and it exited with status {self.returncode}")
        if self.killed_reason == "pids":
            limit = f" ({limits.max_processes} processes and threads)" if limits and limits.max_processes else ""
            if self.returncode is None:
                return f"killed at the process limit{limit}: its forks kept failing"
            return f"hit the process limit{limit} (a fork failed) and exited with status {self.returncode}"
        if self.killed_reason == "output":
            limit = f" (more than {FLOOD_FACTOR * limits.max_output_bytes} bytes on one stream)" if limits else ""
            return f"killed for flooding its output{limit}"
        if self.killed_reason == "signal:SIGXFSZ":
            limit = f" ({limits.max_file_mb} MB)" if limits and limits.max_file_mb else ""
            return f"killed for writing a file beyond the file-size limit{limit} (SIGXFSZ)"
        if self.killed_reason == "signal:SIGXCPU":
            return "killed at the CPU-time limit (SIGXCPU)"
        if self.killed_reason == "worker_lost":
            return "killed when the Ray worker running it died (on every retry)"
        if self.killed_reason == "unschedulable":
            return "killed before it started: no Ray node has the resources it asks for"
        if self.killed_reason:
            return f"killed ({self.killed_reason})"
        if self.returncode != 0:
            return f"exited with status {self.returncode}"
        return None


class Sandbox(Protocol):
    """A backend: `local` (subprocess, bubblewrap when available), `docker`, `ray`."""

    name: str

    def run(self, job: Job) -> SandboxResult: ...
