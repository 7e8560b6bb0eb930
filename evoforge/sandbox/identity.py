"""Who a sandboxed job runs as, and how every one of its processes is found and killed.

As root, each job gets its own unprivileged uid/gid (`uid_base + slot`, no /etc/passwd entry needed). That
makes RLIMIT_NPROC a per-job limit and lets the reaper find every process of the job through /proc, even
ones that called setsid() or daemonized. Slots are claimed with flock() on a lock file, so concurrent
jobs in this process and in other evoforge processes on the machine never share a uid.

Not root, the job runs as the current user: the process group (plus the PID namespace under bubblewrap)
is all there is to find its processes by.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

DEFAULT_UID_BASE = 200_000
SLOTS = 1000
_KILL = shutil.which("kill") or "/usr/bin/kill"


class SandboxError(RuntimeError):
    """The sandbox cannot run jobs as configured (not something the job did)."""


class ProcessSample(NamedTuple):
    rss_kb: int
    """Proportional resident memory (Pss): a page shared by n processes counts 1/n to each, so the sum over
    a job's processes counts it once (forked children share most of their parent's pages)."""
    peak_rss_kb: int
    """VmHWM: the process's own high-water mark since its last exec."""
    cpu_s: float
    threads: int
    """Tasks of the process: what RLIMIT_NPROC and a cgroup's pids limit count."""


_TICKS = os.sysconf("SC_CLK_TCK")


def processes_of(uid: int) -> dict[int, ProcessSample]:
    """Live (non-zombie) processes whose real uid is `uid`, with their memory and CPU time so far.

    The real uid from /proc/<pid>/status is used, not the owner of /proc/<pid>: a process can make
    itself non-dumpable, which makes its /proc entry root-owned.
    """
    found: dict[int, ProcessSample] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                status = f.read()
            if status_number(status, b"Uid") != uid or status_word(status, b"State") in (b"Z", b"X"):
                continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                times = f.read().rsplit(b")", 1)[1].split()[11:13]  # utime, stime (fields 14 and 15)
        except (OSError, IndexError):
            continue  # exited while we looked
        cpu_s = sum(int(t) for t in times) / _TICKS
        found[int(entry)] = ProcessSample(_pss_kb(entry) or status_number(status, b"VmRSS") or 0,
                                          status_number(status, b"VmHWM") or 0, cpu_s,
                                          status_number(status, b"Threads") or 1)
    return found


def _pss_kb(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            return status_number(b"\n" + f.read(), b"Pss")
    except OSError:  # exited, or a kernel without smaps_rollup: VmRSS stands in
        return None


def status_word(status: bytes, name: bytes) -> bytes | None:
    """First word of a /proc status field; None when absent."""
    at = status.find(b"\n" + name + b":")
    if at < 0:
        return None
    return status[at + len(name) + 2 : at + len(name) + 40].split(None, 1)[0]


def status_number(status: bytes, name: bytes) -> int | None:
    """First word of a numeric /proc status field (a count, kB, a uid); None when absent or not a number."""
    word = status_word(status, name)
    return int(word) if word is not None and word.isdigit() else None


class JobIdentity:
    """The uid/gid a job runs as; `switch` says whether the launcher must change to it."""

    def __init__(self, uid: int, gid: int, switch: bool, lock_fd: int | None = None):
        self.uid = uid
        self.gid = gid
        self.switch = switch
        self._lock_fd = lock_fd

    @classmethod
    def claim(cls, uid_base: int = DEFAULT_UID_BASE) -> JobIdentity:
        """A free per-job uid when root (release() gives it back), else the current user."""
        if os.geteuid() != 0:
            return cls(os.getuid(), os.getgid(), switch=False)
        lock_dir = _lock_dir()
        for slot in range(SLOTS):
            fd = os.open(lock_dir / f"uid-{uid_base + slot}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            identity = cls(uid_base + slot, uid_base + slot, switch=True, lock_fd=fd)
            identity.kill_all()  # leftovers of an evoforge process that was SIGKILLed mid-job
            return identity
        raise SandboxError(f"all {SLOTS} sandbox uid slots under {lock_dir} are in use")

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def live_processes(self) -> dict[int, ProcessSample]:
        """The job's processes ({} when not switching: then the uid is shared with others)."""
        return processes_of(self.uid) if self.switch else {}

    def kill_all(self, group_leader: int | None = None, settle_s: float = 1.0) -> list[int]:
        """SIGKILL every process of the job; returns the pids still alive after `settle_s`.

        With a per-job uid, a helper running as that uid calls kill(-1, SIGKILL): the kernel signals
        every process of the uid under the tasklist lock, so a fork bomb cannot outrun it. The loop
        repeats until /proc shows none left (processes in uninterruptible sleep take a moment).
        """
        if group_leader is not None:
            with contextlib.suppress(ProcessLookupError):  # the group has already gone
                os.killpg(group_leader, signal.SIGKILL)
        if not self.switch:
            return []
        deadline = time.monotonic() + settle_s
        while True:
            alive = processes_of(self.uid)
            if not alive or time.monotonic() > deadline:
                return sorted(alive)
            subprocess.run(
                [_KILL, "-9", "-1"],
                user=self.uid, group=self.gid, extra_groups=[],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
            )
            time.sleep(0.005)

    def give_workdir(self, workdir: Path, keep: tuple[str, ...] = ()) -> None:
        """Make `workdir` and what we put in it owned by the job (no-op when not switching), but the files `keep`
        names (relative to `workdir`): those stay ours, so their 0444 mode binds the job.

        Only entries we own with a single link are handed over: a hard link planted by an earlier job
        must not turn into ownership of the file it points at.
        """
        if self.switch:
            kept = {os.path.join(workdir, relative) for relative in keep}
            _chown_tree(workdir, frm=os.geteuid(), to=(self.uid, self.gid), single_link_only=True, kept=kept)

    def reclaim_workdir(self, workdir: Path) -> None:
        """Give the job's files back to us, so a later job with the same uid cannot alter them."""
        if self.switch:
            _chown_tree(workdir, frm=self.uid, to=(os.geteuid(), os.getegid()), single_link_only=False)


def _lock_dir() -> Path:
    base = Path("/run") if os.access("/run", os.W_OK) else Path("/tmp")
    path = base / "evoforge-sandbox-slots"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not path.is_dir() or path.is_symlink() or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise SandboxError(f"{path} must be a directory owned by uid {os.geteuid()} and not group/world-writable")
    return path


def _chown_tree(root: Path, frm: int, to: tuple[int, int], single_link_only: bool,
                kept: set[str] | None = None) -> None:
    """lchown every entry under `root` owned by `frm` but those in `kept`; never follows a symlink."""

    def fix(path: str, is_dir: bool) -> None:
        if kept and path in kept:
            return
        try:
            info = os.lstat(path)
            if info.st_uid == frm and (is_dir or not single_link_only or info.st_nlink == 1):
                os.lchown(path, *to)
        except FileNotFoundError:
            pass  # removed while we walked; nothing to hand over

    fix(str(root), True)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames:
            fix(os.path.join(dirpath, name), True)
        for name in filenames:
            fix(os.path.join(dirpath, name), False)
