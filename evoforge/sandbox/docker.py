"""The `docker` sandbox: one container per job on a Docker engine, through the docker SDK.

Each container runs with --network none (unless the stage asks for network), a read-only root, the work
dir bind-mounted read-write at its own path, private size-capped /tmp and /dev/shm, memory (no swap), CPU
and pids limits, no capabilities, no-new-privileges, and GPU device requests from the stage's resources.
As root the job runs under its own unprivileged uid (the local backend's uid slots), so files it leaves
are handed back the same way. stdout/stderr are read from the attach stream into bounded captures (the
engine's own log driver is off, so a flood never reaches the engine's disk). The framework's timeout kills
the container; every container is removed when its job ends, whatever happened.

The limits hold without evoforge: the job runs under `timeout -s KILL` inside its container (a backstop
`BACKSTOP_GRACE_S` past the stage timeout; the image needs coreutils' or busybox's `timeout`), and the engine
removes a container as soon as it stops (auto_remove). So a SIGKILL of evoforge leaves no container
running past its deadline, and none behind once it ends. A container that never started is removed by the
next backend start on the engine, once its owner is dead or its deadline (a label) has passed.

The engine must see this machine's paths (a local socket, or a Ray worker's own engine): the work dir is
bind-mounted, not copied.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from evoforge.sandbox.base import FLOOD_FACTOR, Job, Limits, SandboxResult
from evoforge.sandbox.capture import StreamCapture
from evoforge.sandbox.docker_usage import CgroupUsage
from evoforge.sandbox.ending import PIDS_GRACE_S, JobEnd, end_reason
from evoforge.sandbox.identity import JobIdentity, SandboxError
from evoforge.sandbox.images import ensure_host_runtime_image, host_runtime_mounts, minimal_cover
from evoforge.sandbox.local import job_env

log = logging.getLogger(__name__)

LABEL = "org.evoforge.sandbox"
OWNER_LABEL = "org.evoforge.owner"
"""host:pid of the evoforge process that created the container (orphans of dead owners are swept)."""
DEADLINE_LABEL = "org.evoforge.deadline"
"""Unix time after which the container has no reason to exist, whoever owns it (swept at backend start)."""
BACKSTOP_GRACE_S = 2.0
"""The in-container timeout fires this long after the stage timeout: the supervisor normally kills first."""
START_ALLOWANCE_S = 60.0
"""Between creating a container and its start; part of the deadline label."""
_SAMPLE_S = 0.1


def gpu_device_requests(limits: Limits) -> list[Any]:
    """The engine's GPU requests for `limits`: every GPU (gpu_ids ("all",)), specific ids, or a count."""
    from docker.types import DeviceRequest

    if limits.gpu_ids == ("all",):
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if limits.gpu_ids:
        return [DeviceRequest(device_ids=list(limits.gpu_ids), capabilities=[["gpu"]])]
    if limits.gpus:
        return [DeviceRequest(count=limits.gpus, capabilities=[["gpu"]])]
    return []


def gpus_held(limits: Limits) -> int:
    if limits.gpu_ids == ("all",):
        return len(glob.glob("/dev/nvidia[0-9]*"))
    return len(limits.gpu_ids) or limits.gpus


class DockerSandbox:
    """Runs jobs in containers on one engine; safe to call from several threads at once."""

    name = "docker"

    def __init__(self, base_url: str | None = None, image: str | None = None, python: str = "python3",
                 network: str = "bridge", capacity: int | None = None):
        import docker

        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            self.client = docker.DockerClient(base_url=where, timeout=120, max_pool_size=64)
            info = self.client.info()
        except docker.errors.DockerException as exc:
            raise SandboxError(f"cannot reach the Docker engine at {where}: {exc}. Start one "
                               "(scripts/start-dockerd.sh start DIR) or set sandbox.docker.base_url") from exc
        self.base_url = where
        self.capacity: int = capacity or int(info.get("NCPU") or os.cpu_count() or 1)
        """How many evaluations this backend runs at once (the engine's CPUs unless configured)."""
        self.network = network
        self.host_runtime = image is None
        self.python = python
        self.image = ensure_host_runtime_image(self.client) if image is None else image
        if image is not None:
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound as exc:
                raise SandboxError(f"image {image!r} is not on the engine at {where}: build it, e.g. "
                                   f"`docker build -f evoforge/sandbox/Dockerfile -t {image} .`") from exc
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._cgroup_v2 = str(info.get("CgroupVersion")) == "2"
        self.remove_orphans()

    def run(self, job: Job) -> SandboxResult:
        """Run `job` in a fresh container until it exits or hits a limit; the container is always removed."""
        workdir = job.checked_workdir()
        identity = JobIdentity.claim()
        container = None
        try:
            identity.give_workdir(workdir, keep=job.readonly_within)
            container = self._create(job, workdir, identity)
            return self._supervise(container, job.limits)
        finally:
            if container is not None:
                self._remove(container)
            identity.reclaim_workdir(workdir)
            identity.release()

    def container_settings(self, job: Job, workdir: Path, identity: JobIdentity) -> dict[str, Any]:
        """Keyword arguments of `containers.create` for `job` (everything the engine enforces)."""
        from docker.types import Mount, Ulimit

        limits = job.limits
        argv = list(job.argv)
        readonly = [*job.readonly_paths]
        backstop_s = limits.timeout_s + BACKSTOP_GRACE_S
        if self.host_runtime:
            program = shutil.which(argv[0])
            readonly += [Path(program).resolve().parent] if program else []
            binds = host_runtime_mounts(readonly)
        else:
            if argv[0] in (sys.executable, os.path.realpath(sys.executable)):
                argv[0] = self.python  # our interpreter's path means "the image's Python"
            binds = [(str(p), str(p)) for p in minimal_cover(readonly)]
        # PID 1 of the container (or the engine's init's only child): when it ends, the kernel kills the rest
        argv = ["timeout", "-s", "KILL", f"{backstop_s:.3f}", *argv]
        mounts = [Mount(target, source, type="bind", read_only=True) for source, target in binds]
        mounts.append(Mount(str(workdir), str(workdir), type="bind", read_only=False))
        # a tree task's fixed files, over the writable work dir (the engine mounts parents first)
        mounts += [Mount(str(workdir / relative), str(workdir / relative), type="bind", read_only=True)
                   for relative in job.readonly_within if (workdir / relative).is_file()]
        env = job_env(job, workdir)
        if not self.host_runtime:
            env.pop("PATH")  # the image's own PATH finds its interpreter
        device_requests = gpu_device_requests(limits)
        if device_requests:
            env.pop("CUDA_VISIBLE_DEVICES", None)  # the runtime exposes exactly the requested devices
        tmpfs_bytes = max(64, (limits.memory_mb or 2048) // 2) * 1024 * 1024
        ulimits = [Ulimit(name="core", soft=0, hard=0)]
        if limits.max_file_mb:
            ulimits.append(Ulimit(name="fsize", soft=limits.max_file_mb << 20, hard=limits.max_file_mb << 20))
        settings: dict[str, Any] = dict(
            image=self.image, command=argv, working_dir=str(workdir), environment=env, mounts=mounts,
            # the host-runtime image has no place for the engine's init binary (/sbin is a read-only host mount)
            user=f"{identity.uid}:{identity.gid}", hostname="sandbox", init=not self.host_runtime,
            network_mode=self.network if limits.network else "none", read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={tmpfs_bytes},mode=1777"}, shm_size=tmpfs_bytes,
            nano_cpus=int(limits.cpus * 1e9), cap_drop=["ALL"], security_opt=["no-new-privileges"],
            ulimits=ulimits, device_requests=device_requests or None, log_config={"type": "none"},
            labels={LABEL: "1", OWNER_LABEL: self._owner,
                    DEADLINE_LABEL: f"{time.time() + START_ALLOWANCE_S + backstop_s:.0f}"},
            stdin_open=False, detach=True, auto_remove=True,
        )
        if limits.memory_mb:
            settings.update(mem_limit=f"{limits.memory_mb}m", memswap_limit=f"{limits.memory_mb}m")
        if limits.max_processes:
            settings["pids_limit"] = limits.max_processes
        return settings

    def _create(self, job: Job, workdir: Path, identity: JobIdentity) -> Any:
        import docker

        try:
            return self.client.containers.create(**self.container_settings(job, workdir, identity))
        except docker.errors.DockerException as exc:
            raise SandboxError(f"the engine at {self.base_url} refused to create the container: {exc}") from exc

    def _supervise(self, container: Any, limits: Limits) -> SandboxResult:
        import docker

        flooded = threading.Event()
        flood_bytes = FLOOD_FACTOR * max(limits.max_output_bytes, 1)
        out = StreamCapture(None, limits.max_output_bytes, flood_bytes, flooded.set)
        err = StreamCapture(None, limits.max_output_bytes, flood_bytes, flooded.set)
        stream = container.attach_socket(params={"stdout": 1, "stderr": 1, "stream": 1})
        reader = threading.Thread(target=_demultiplex, args=(stream, out, err), name="docker-capture", daemon=True)
        reader.start()
        exit_status: dict[str, Any] = {}
        exited = threading.Event()
        started_at = time.time()
        try:
            container.start()
        except docker.errors.DockerException as exc:
            raise SandboxError(f"the engine at {self.base_url} could not start the container: {exc}") from exc
        start = time.monotonic()
        waiter = threading.Thread(target=self._wait, args=(container, exit_status, exited), name="docker-wait",
                                  daemon=True)
        waiter.start()
        usage = CgroupUsage(container.id, self._cgroup_v2)
        killed_by_us = None
        deadline = start + limits.timeout_s
        while not exited.wait(max(0.0, min(_SAMPLE_S, deadline - time.monotonic()))):
            now = time.monotonic()
            if flooded.is_set() or now >= deadline or usage.forks_keep_failing(now, PIDS_GRACE_S):
                killed_by_us = "output" if flooded.is_set() else "timeout" if now >= deadline else "pids"
                self._kill(container)
                break
            usage.sample()
        if not exited.wait(30):
            log.error("container %s did not stop within 30 s of its end or kill", container.short_id)
        wall = time.monotonic() - start
        reader.join(2.0)
        warnings = ["the output stream was still open 2 s after the container ended"] if reader.is_alive() else []
        code = exit_status.get("StatusCode")
        if isinstance(code, int) and code > 128 and (code - 128) in signal.valid_signals():
            code = -(code - 128)  # the engine reports a signal death as 128 + signal
        stderr = err.text()
        if code is None and killed_by_us is None:
            reason: str | None = f"engine: {exit_status.get('Error') or 'no exit status'}"
        else:
            oom = killed_by_us is None and self._oom_killed(container, started_at)
            reason = end_reason(JobEnd(code, killed_by_us, wall, oom_killed=oom, stderr=stderr,
                                       pids_limit_hit=usage.forks_refused > 0, peak_memory_mb=usage.peak_mb), limits)
        return SandboxResult(
            returncode=None if killed_by_us else code, stdout=out.text(), stderr=stderr, wall_s=wall,
            cpu_s=usage.cpu_s, peak_memory_mb=usage.peak_mb, gpu_seconds=wall * gpus_held(limits),
            killed_reason=reason, backend=self.name, warnings=warnings, limits=limits,
        )

    def _wait(self, container: Any, exit_status: dict[str, Any], exited: threading.Event) -> None:
        import docker

        try:
            exit_status.update(self.client.api.wait(container.id, timeout=None))
        except docker.errors.DockerException as exc:
            log.warning("waiting for container %s failed: %s", container.short_id, exc)
            exit_status["Error"] = str(exc)
        finally:
            exited.set()

    def _kill(self, container: Any) -> None:
        import docker

        try:
            container.kill()
        except docker.errors.DockerException as exc:  # it may have exited on its own meanwhile
            log.info("killing container %s: %s", container.short_id, exc)

    def _oom_killed(self, container: Any, since: float) -> bool:
        """Whether the kernel's OOM killer killed a process of the (ended) container, e.g. a child the
        evaluator survived. Asked of the engine's event log: the container itself is already auto-removed."""
        import docker

        try:
            # whole seconds, as docker's stubs type them: the window only widens, and the filter names the container
            events = self.client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                                        filters={"container": container.id, "event": "oom"})
            return any(True for _ in events)
        except docker.errors.DockerException as exc:
            log.warning("reading the engine's events of container %s failed: %s", container.short_id, exc)
            return False

    def _remove(self, container: Any) -> None:
        import docker

        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass  # already gone
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                log.error("could not remove container %s: %s", container.short_id, exc)
                return
            try:  # 409: the engine is auto-removing it already; the job ends when it is gone
                self.client.api.wait(container.id, timeout=30, condition="removed")
            except docker.errors.NotFound:
                pass  # removed meanwhile
            except Exception as wait_exc:  # a timeout surfaces from requests, not as a DockerException
                log.warning("container %s was still being removed after 30 s: %s", container.short_id, wait_exc)
        except docker.errors.DockerException as exc:
            log.error("could not remove container %s: %s", container.short_id, exc)

    def close(self) -> None:
        """Close the connections to the engine (containers of finished jobs are already gone)."""
        self.client.close()

    def remove_orphans(self) -> list[str]:
        """Remove containers left by evoforge processes on this host that no longer exist, and any past
        its deadline (whichever host made it); their ids."""
        import docker

        host = socket.gethostname()
        removed = []
        for container in self.client.containers.list(all=True, filters={"label": LABEL}):
            owner_host, _, pid = container.labels.get(OWNER_LABEL, "").rpartition(":")
            orphan = owner_host == host and pid.isdigit() and not _alive(int(pid))
            deadline = container.labels.get(DEADLINE_LABEL, "")
            if not orphan and not (deadline.isdigit() and int(deadline) < time.time()):
                continue
            try:
                container.remove(force=True, v=True)
                removed.append(container.short_id)
            except docker.errors.NotFound:
                pass  # it ended and the engine removed it meanwhile
            except docker.errors.DockerException as exc:
                log.warning("could not remove orphaned container %s: %s", container.short_id, exc)
        if removed:
            log.warning("removed containers left by dead evoforge processes or past their deadline: %s", removed)
        return removed


def _demultiplex(stream: Any, out: StreamCapture, err: StreamCapture) -> None:
    """Split the engine's multiplexed attach stream (8-byte frame headers) into the two captures."""
    from docker.utils.socket import frames_iter

    try:
        for stream_id, data in frames_iter(stream, tty=False):
            (err if stream_id == 2 else out).feed(data)
    except OSError as exc:
        log.warning("reading a container's output failed: %s", exc)
    finally:
        stream.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
