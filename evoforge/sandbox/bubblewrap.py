"""The bubblewrap command line for a job, and a cached probe of whether bubblewrap works here.

The sandbox sees a fresh root: read-only system directories, the Python installation, the paths the job
may read, its work dir read-write, a private size-capped /tmp, its own /proc and a minimal /dev. Everything
else (/root, /home, the repository and its `.env`, other jobs' work dirs, the state database) is absent.
Directories created by bubblewrap on the way to a bound path are world-traversable, so a work dir or an
interpreter below a mode-700 directory (/root, /tmp/pytest-of-root) stays reachable for the job's uid.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from evoforge.sandbox.base import Limits

log = logging.getLogger(__name__)

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
_CPU_INFO = "/sys/devices/system/cpu"  # read by sysconf(_SC_NPROCESSORS_ONLN), OpenMP and torch


def python_roots() -> list[Path]:
    """The running interpreter's installation and virtualenv (jobs are Python programs)."""
    roots = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    return sorted(Path(r) for r in roots)


def bwrap_prefix(
    bwrap: str, workdir: Path, limits: Limits, readonly: list[Path], *, as_root: bool,
    readonly_within: tuple[str, ...] = (),
) -> list[str]:
    """bwrap options up to and including `--`; the launcher and the job's argv follow. `readonly_within` (paths
    relative to `workdir`) are bound read-only over the writable work dir: a job can neither change nor replace
    them (a mount point cannot be unlinked)."""
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox"]
    if not limits.network:
        args.append("--unshare-net")
    if not as_root:
        args.append("--unshare-user")  # the namespaces above need it without privileges
    for top in SYSTEM_DIRS:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--ro-bind-try", _CPU_INFO, _CPU_INFO, "--proc", "/proc", "--dev", "/dev"]
    for device in glob.glob("/dev/nvidia*") if limits.gpus else []:
        args += ["--dev-bind", device, device]
    # tmpfs pages count neither towards RLIMIT_AS nor towards the sampled RSS: cap them separately, half
    # the memory limit each for /tmp and /dev/shm (POSIX semaphores of multiprocessing live there)
    tmpfs_bytes = str(max(64, (limits.memory_mb or 2048) // 2) * 1024 * 1024)
    for mount in ("/tmp", "/dev/shm"):
        args += ["--perms", "1777", "--size", tmpfs_bytes, "--tmpfs", mount]
    binds = {p.resolve(): "--ro-bind" for p in readonly if p.exists() and not _under_system_dir(p.resolve())}
    binds[workdir] = "--bind"
    mounted: list[Path] = []
    created = {Path("/"), Path("/tmp")}
    for path in sorted(binds, key=lambda p: len(p.parts)):  # parents before what is mounted inside them
        if binds[path] == "--ro-bind" and any(path.is_relative_to(m) and binds[m] == "--ro-bind" for m in mounted):
            continue  # already visible through a read-only parent
        for parent in reversed(path.parents):
            # bwrap would copy the host's mode (e.g. 700 of /root) onto the parents it creates: make them 755
            if parent in created or _under_system_dir(parent) or any(parent.is_relative_to(m) for m in mounted):
                continue
            args += ["--perms", "0755", "--dir", str(parent)]
            created.add(parent)
        args += [binds[path], str(path), str(path)]
        mounted.append(path)
    for relative in readonly_within:
        inside = workdir / relative
        if inside.exists() and not inside.is_symlink():
            args += ["--ro-bind", str(inside), str(inside)]
    return [*args, "--chdir", str(workdir), "--"]


def _under_system_dir(path: Path) -> bool:
    return any(path.is_relative_to(top) for top in SYSTEM_DIRS)


def usable(bwrap: str | None, launcher: list[str]) -> str | None:
    """None if bubblewrap can run `launcher true` here, else the reason it cannot (probed once)."""
    if bwrap is None:
        return "the `bwrap` executable is not on PATH (apt-get install bubblewrap)"
    return _probe(bwrap, tuple(launcher))


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str, launcher: tuple[str, ...]) -> str | None:
    try:
        with tempfile.TemporaryDirectory(prefix="evoforge-bwrap-probe-") as probe_dir:
            argv = bwrap_prefix(bwrap, Path(probe_dir), Limits(timeout_s=5), [], as_root=os.geteuid() == 0)
            argv += [*launcher, shutil.which("true") or "/bin/true"]
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("bubblewrap probe failed: %s", exc)
        return f"running bwrap failed: {exc}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        log.warning("bubblewrap probe failed: %s", reason)
        return f"bwrap does not work here: {reason}"
    return None
