"""The `local` sandbox: a subprocess on this machine, inside bubblewrap when bubblewrap works.

Every job runs as `prlimit ... -- setpriv ... -- argv` (both from util-linux): prlimit sets the rlimits
(address space, CPU seconds, processes, file size, no core dumps) while still privileged, then setpriv drops
to the job's own uid (see identity.py), forbids privilege gain (no_new_privs, no capabilities) and asks for
SIGKILL when its parent dies. Under bubblewrap that chain runs inside fresh namespaces (no network, own PID
namespace, a filesystem view holding only what the job needs, see bubblewrap.py).

Parent death: under bubblewrap, --die-with-parent takes the whole PID namespace down with evoforge.
Without it, only the job's first process gets the parent-death signal; processes it forked keep running
until the next job that claims the same uid slot kills them (root), or until they end (not root).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

from evoforge.sandbox import bubblewrap
from evoforge.sandbox.base import FLOOD_FACTOR, Job, Limits, SandboxResult
from evoforge.sandbox.capture import StreamCapture
from evoforge.sandbox.ending import PIDS_GRACE_S, JobEnd, end_reason
from evoforge.sandbox.identity import DEFAULT_UID_BASE, SLOTS, JobIdentity, SandboxError, status_number

log = logging.getLogger(__name__)

Isolation = Literal["auto", "bubblewrap", "none"]
ISOLATIONS: tuple[str, ...] = ("auto", "bubblewrap", "none")
_POLL_S = 0.02
_MEMORY_SAMPLE_S = 0.25
_FIRST_SAMPLE_S = 0.05

NOT_ISOLATED = (
    "not isolated: the job shares the host network, sees the whole host filesystem with the permissions of "
    "its uid (it can write to world-writable places such as /tmp and /dev/shm), shares the host PID and IPC "
    "namespaces, and processes it forks can outlive a SIGKILL of evoforge"
)


class LocalSandbox:
    """Runs jobs as local processes under hard limits; see the module docstring for the mechanism."""

    name = "local"

    def __init__(self, isolation: Isolation = "auto", uid_base: int = DEFAULT_UID_BASE):
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.isolation = isolation
        self.uid_base = uid_base
        self._prlimit = _require("prlimit")
        self._setpriv = _require("setpriv")
        self._bwrap = shutil.which("bwrap")
        if isolation == "bubblewrap":
            self.use_bubblewrap()  # fail at construction, not at the first candidate

    def use_bubblewrap(self) -> tuple[bool, list[str]]:
        """Whether jobs run under bubblewrap, and warnings to attach to results when they do not."""
        if self.isolation == "none":
            return False, []
        # the probe runs as the uid just past the job slots, so it never counts against (or is swept with) a job
        probe_uid = self.uid_base + SLOTS
        probe_identity = JobIdentity(probe_uid, probe_uid, switch=os.geteuid() == 0)
        reason = bubblewrap.usable(self._bwrap, self._setpriv_argv(probe_identity))
        if reason is None:
            return True, []
        if self.isolation == "bubblewrap":
            raise SandboxError(f"isolation='bubblewrap' was requested but {reason}")
        return False, [f"bubblewrap unavailable ({reason}); job {NOT_ISOLATED}"]

    def run(self, job: Job) -> SandboxResult:
        """Run `job` to completion or to a limit; never leaves a process of the job behind."""
        workdir = job.checked_workdir()
        isolated, warnings = self.use_bubblewrap()
        identity = JobIdentity.claim(self.uid_base)
        try:
            identity.give_workdir(workdir, keep=job.readonly_within)
            if not isolated and identity.switch:
                _check_reachable(job, workdir, identity.uid)
            if not identity.switch and not isolated:
                warnings.append("running as the current (non-root) user without bubblewrap: processes that "
                                "leave the job's process group (setsid) escape the cleanup")
            result = self._supervise(job, workdir, identity, isolated)
            result.warnings = warnings + result.warnings
            return result
        finally:
            survivors = identity.kill_all()  # a no-op scan unless we got here by an exception
            if survivors:
                log.error("sandbox uid %d still has processes %s after cleanup", identity.uid, survivors)
            identity.reclaim_workdir(workdir)
            identity.release()

    def _supervise(self, job: Job, workdir: Path, identity: JobIdentity, isolated: bool) -> SandboxResult:
        limits = job.limits
        argv = [*self._prlimit_argv(limits, identity), *self._setpriv_argv(identity), *job.argv]
        if isolated:
            readonly = [*job.readonly_paths, *bubblewrap.python_roots(), *_program_dirs(job.argv[0])]
            argv = bubblewrap.bwrap_prefix(str(self._bwrap), workdir, limits, readonly,
                                           as_root=os.geteuid() == 0, readonly_within=job.readonly_within) + argv
        flooded = threading.Event()
        flood_bytes = FLOOD_FACTOR * max(limits.max_output_bytes, 1)
        own_peak_kb = _own_peak_rss_kb()
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=workdir, env=job_env(job, workdir), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        assert proc.stdout is not None and proc.stderr is not None
        out = StreamCapture(proc.stdout, limits.max_output_bytes, flood_bytes, flooded.set).start()
        err = StreamCapture(proc.stderr, limits.max_output_bytes, flood_bytes, flooded.set).start()
        killed_by_us, sampled = None, _Usage(identity, limits.max_processes)
        try:
            killed_by_us = _watch(proc.pid, start + limits.timeout_s, limits, sampled, flooded)
        finally:
            # The first process has exited (not yet reaped, so its pid and group id cannot be reused) or a
            # limit was hit: kill whatever of the job is left, then reap with the tree's resource usage.
            survivors = identity.kill_all(group_leader=proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - start
        warnings = [f"processes {survivors} of uid {identity.uid} survived SIGKILL"] if survivors else []
        for capture, stream in ((out, "stdout"), (err, "stderr")):
            if not capture.join(timeout=2.0):
                warnings.append(f"{stream} was still held open by a process outside the job after it ended")
        code = proc.returncode
        if isolated and code > 128 and (code - 128) in signal.valid_signals():
            code = -(code - 128)  # bubblewrap reports a signal death of the job as 128 + signal
        stderr = err.text()
        # The first process of the job is a fork of this one, and the kernel carries our own peak RSS into
        # its ru_maxrss at exec: the figure says something about the job only when it is above ours.
        tree_peak_kb = usage.ru_maxrss if usage.ru_maxrss > own_peak_kb else 0
        peak_mb = max(tree_peak_kb, sampled.peak_kb) / 1024
        end = JobEnd(code, killed_by_us, wall, pids_limit_hit=sampled.pids_limit_hit, stderr=stderr,
                     peak_memory_mb=peak_mb)  # oom_killed unknown: no cgroup of our own to ask
        return SandboxResult(
            returncode=None if killed_by_us else code,
            stdout=out.text(), stderr=stderr, wall_s=wall, cpu_s=max(usage.ru_utime + usage.ru_stime, sampled.cpu_s),
            peak_memory_mb=peak_mb, gpu_seconds=wall * limits.gpus,  # GPUs are held for the whole run
            killed_reason=end_reason(end, limits), backend=f"{self.name}/{'bubblewrap' if isolated else 'plain'}",
            warnings=warnings, limits=limits,
        )

    def _prlimit_argv(self, limits: Limits, identity: JobIdentity) -> list[str]:
        cpu_seconds = math.ceil(limits.timeout_s * max(1.0, limits.cpus)) + 1
        argv = [self._prlimit, "--core=0", f"--cpu={cpu_seconds}"]
        if limits.memory_mb:
            argv.append(f"--as={limits.memory_mb * 1024 * 1024}")
        if limits.max_file_mb:
            argv.append(f"--fsize={limits.max_file_mb * 1024 * 1024}")
        if limits.max_processes and identity.switch:  # RLIMIT_NPROC counts per uid: only a job uid is ours
            argv.append(f"--nproc={limits.max_processes}")
        return [*argv, "--"]

    def _setpriv_argv(self, identity: JobIdentity) -> list[str]:
        argv = [self._setpriv, "--no-new-privs", "--pdeathsig", "KILL"]
        if identity.switch:
            argv += ["--reuid", str(identity.uid), "--regid", str(identity.gid), "--clear-groups",
                     "--inh-caps=-all", "--bounding-set=-all"]
        return [*argv, "--"]


def job_env(job: Job, workdir: Path) -> dict[str, str]:
    """The whole environment of the job: a minimal base, then `job.env`; nothing from our own."""
    threads = str(max(1, int(job.limits.cpus)))
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",  # output written before a timeout kill is not lost in a buffer
        **{name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }
    if job.limits.gpu_ids or not job.limits.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(job.limits.gpu_ids)
    env.update(job.env)
    return env


class _Usage:
    """What sampling /proc saw of the job: its peak memory, its task count against the process limit, and
    the CPU time of processes that are killed without being reaped by a parent (their rusage never reaches
    us)."""

    def __init__(self, identity: JobIdentity, max_processes: int | None):
        self._identity = identity
        # RLIMIT_NPROC counts the tasks of a uid: it limits the job only when the job has a uid of its own
        self._max_tasks = max_processes if identity.switch else None
        self.peak_kb = 0
        self.pids_limit_hit = False
        self.at_pids_limit_since: float | None = None
        self._cpu_by_pid: dict[int, float] = {}

    def sample(self) -> int:
        """Take a sample; returns the summed proportional resident memory of the job's processes in kB."""
        live = self._identity.live_processes()
        self._cpu_by_pid.update({pid: p.cpu_s for pid, p in live.items()})
        procs = live.values()
        rss_kb = sum(p.rss_kb for p in procs)
        self.peak_kb = max(self.peak_kb, rss_kb, *(p.peak_rss_kb for p in procs))
        if self._max_tasks and sum(p.threads for p in procs) >= self._max_tasks:
            self.pids_limit_hit = True  # the next fork fails
            self.at_pids_limit_since = self.at_pids_limit_since or time.monotonic()
        else:
            self.at_pids_limit_since = None
        return rss_kb

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu_by_pid.values())


def _watch(pid: int, deadline: float, limits: Limits, usage: _Usage, flooded: threading.Event) -> str | None:
    """Wait for the first process to exit (None) or a limit to be hit (the killed_reason).

    Memory is sampled as the summed proportional RSS of the job's processes, which bounds the total even
    when each process stays under RLIMIT_AS; the peak also takes each process's own high-water mark (VmHWM),
    but a short-lived process that comes and goes between samples is not seen. A job that stays at its
    process limit for PIDS_GRACE_S is stopped ('pids').
    """
    limit_kb = (limits.memory_mb or 0) * 1024
    next_sample = time.monotonic() + _FIRST_SAMPLE_S
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        now = time.monotonic()
        if now >= deadline or flooded.is_set():
            usage.sample()  # the last look at CPU time before the kill
            return "timeout" if now >= deadline else "output"
        if now >= next_sample:
            if usage.sample() > limit_kb > 0:
                return "memory"
            if usage.at_pids_limit_since is not None and time.monotonic() - usage.at_pids_limit_since >= PIDS_GRACE_S:
                return "pids"
            next_sample = now + _MEMORY_SAMPLE_S
        time.sleep(min(_POLL_S, max(deadline - now, 0.001)))
    return None


def _own_peak_rss_kb() -> int:
    with open("/proc/self/status", "rb") as f:
        return status_number(f.read(), b"VmHWM") or 0


def _program_dirs(program: str) -> list[Path]:
    """The directory of the executable (resolved) so it is visible in the sandbox."""
    found = shutil.which(program) if os.sep not in program else program
    return [Path(found).resolve().parent] if found else []


def _check_reachable(job: Job, workdir: Path, uid: int) -> None:
    """Without bubblewrap nothing remaps the filesystem: a path below a directory the job's uid cannot
    traverse (e.g. /root, mode 700) cannot be used, so refuse clearly instead of failing inside the job."""
    needed = [workdir, *job.readonly_paths, *_program_dirs(job.argv[0])]
    if _program_dirs(job.argv[0]) == [Path(sys.executable).resolve().parent]:
        needed += bubblewrap.python_roots()  # our interpreter needs its whole installation
    blocked = set()
    for path in needed:
        for candidate in {path, path.resolve()}:
            for parent in candidate.parents:
                info = parent.stat()
                if info.st_uid != uid and not info.st_mode & 0o001:
                    blocked.add(f"{parent} (mode {info.st_mode & 0o777:o}) on the way to {path}")
    if blocked:
        raise SandboxError(
            f"the job's uid {uid} cannot reach: {'; '.join(sorted(blocked))}. Use isolation='bubblewrap' "
            "(it remaps these paths) or keep the work dir and the interpreter below world-traversable dirs"
        )


def _require(tool: str) -> str:
    path = shutil.which(tool) or next((p for p in (f"/usr/bin/{tool}", f"/bin/{tool}") if os.path.exists(p)), None)
    if path is None:
        raise SandboxError(f"the local sandbox needs `{tool}` (util-linux) on PATH")
    return path
