"""The `ray` sandbox: each job becomes a Ray task that runs it in the local or docker sandbox of its worker.

The work dir travels with the task (a tar archive there, the work dir's final content back), so workers need
not share a filesystem with the driver; they do need the same Python environment (a local cluster has it; a
real cluster gets it from its image or runtime_env). The task asks Ray for the stage's CPUs, GPUs and custom
resources. A worker that dies mid-task is retried `max_retries` times, then the job fails as `worker_lost`; a
job no node could ever run fails at once as `unschedulable`; nothing waits forever (`queue_timeout_s`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import stat
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from evoforge.sandbox.base import Job, Limits, SandboxResult

if TYPE_CHECKING:
    from evoforge.config import SandboxConfig

log = logging.getLogger(__name__)

MAX_ARCHIVE_BYTES = 256 * 2**20
"""Work-dir content sent back per job; larger files are left out with a warning."""
RESULT_GRACE_S = 60.0
"""Beyond the job's own timeout: worker start, archive transfer, the inner sandbox's cleanup."""
_init_lock = threading.Lock()


class RaySandbox:
    """Runs jobs as Ray tasks on a local or remote cluster; safe to call from several threads at once."""

    name = "ray"

    def __init__(self, settings: SandboxConfig):
        import ray

        self.settings = settings
        options = settings.ray
        self._owns_ray = False
        with _init_lock:
            if not ray.is_initialized():
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                local = options.address is None  # only a Ray instance started here takes a size
                ray.init(address=options.address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, num_cpus=options.num_cpus if local else None,
                         resources=options.resources if local else None)
                self._owns_ray = True
        self._remote = ray.remote(evaluate_on_worker)

    @property
    def capacity(self) -> int:
        """How many one-CPU evaluations the cluster runs at once (its CPUs now)."""
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def run(self, job: Job) -> SandboxResult:
        """Run `job` on a worker; the work dir's final content is copied back into `job.workdir`."""
        import ray
        from ray.exceptions import GetTimeoutError, RayError, RayTaskError

        workdir = job.checked_workdir()
        demand = resource_demand(job.limits)
        start = time.monotonic()
        missing = unschedulable(demand, [n["Resources"] for n in ray.nodes() if n.get("Alive")])
        if missing:
            return _failure("unschedulable", f"no node of the Ray cluster has {missing}", start)
        archive, skipped = pack_dir(workdir)
        options = {"num_cpus": demand.pop("CPU"), "num_gpus": demand.pop("GPU"), "resources": demand,
                   "max_retries": self.settings.ray.max_retries, "retry_exceptions": False}
        ref = self._remote.options(**options).remote(
            self.settings.model_dump_json(), self.settings.ray.worker_backend, job, archive)
        budget = self.settings.ray.queue_timeout_s + job.limits.timeout_s + RESULT_GRACE_S
        try:
            result, returned, worker_skipped = ray.get(ref, timeout=budget)
        except GetTimeoutError:
            ray.cancel(ref, force=True)
            return _failure("timeout", f"no result from Ray within {budget:.0f} s (queued or stuck)", start)
        except RayTaskError:
            raise  # an error of the sandbox on the worker (e.g. SandboxError), not of the job
        except RayError as exc:  # WorkerCrashedError, NodeDiedError, ...: the worker is gone
            log.warning("a Ray worker was lost running %s after %d retries: %s", job.argv[:2],
                        self.settings.ray.max_retries, exc)
            return _failure("worker_lost", f"the Ray worker running the job died ({type(exc).__name__}), "
                                           f"also on {self.settings.ray.max_retries} retries", start)
        result.warnings += [*skipped, *worker_skipped, *unpack_into(returned, workdir)]
        result.backend = f"{self.name}/{result.backend}"
        return result

    def close(self) -> None:
        """Shut down the Ray instance this sandbox started (a connected cluster keeps running)."""
        import ray

        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False


def evaluate_on_worker(settings_json: str, backend: str, job: Job, archive: bytes) -> tuple[SandboxResult, bytes,
                                                                                               list[str]]:
    """The Ray task: unpack the work dir, run the job in this worker's `backend` sandbox, pack the result."""
    import ray

    from evoforge.config import SandboxConfig
    from evoforge.sandbox import sandbox_for

    sandbox = sandbox_for(SandboxConfig.model_validate_json(settings_json), backend)
    limits = job.limits
    if limits.gpus and not limits.gpu_ids:  # the devices Ray assigned to this task
        limits = dataclasses.replace(limits, gpu_ids=tuple(str(i) for i in ray.get_gpu_ids()))
    with tempfile.TemporaryDirectory(prefix="evoforge-ray-") as scratch:
        os.chmod(scratch, 0o755)  # a job uid must reach its work dir inside
        workdir = Path(scratch) / "work"
        workdir.mkdir()
        problems = unpack_into(archive, workdir)
        result = sandbox.run(dataclasses.replace(job, workdir=workdir, limits=limits))
        returned, skipped = pack_dir(workdir)
    return result, returned, problems + skipped


def resource_demand(limits: Limits) -> dict[str, float]:
    """What a job asks of the cluster: CPU, GPU and custom resources."""
    gpus = len(limits.gpu_ids) if limits.gpu_ids and limits.gpu_ids != ("all",) else limits.gpus
    return {"CPU": limits.cpus, "GPU": float(gpus), **dict(limits.custom)}


def unschedulable(demand: dict[str, float], nodes: list[dict[str, float]]) -> str | None:
    """None if some node has every resource of `demand`, else what the best node lacks (e.g. "GPU: 1")."""
    needed = {name: amount for name, amount in demand.items() if amount > 0}
    if any(all(node.get(name, 0) >= amount for name, amount in needed.items()) for node in nodes):
        return None
    return ", ".join(f"{name}: {amount:g}" for name, amount in needed.items()
                     if not any(node.get(name, 0) >= amount for node in nodes)) or str(needed)


def pack_dir(root: Path, limit: int = MAX_ARCHIVE_BYTES) -> tuple[bytes, list[str]]:
    """A tar archive of the directory `root` (after the job ended, so nothing changes under us).

    Symlinks are stored as links and never followed; FIFOs, sockets, devices and files with several hard
    links (which could be another file of the host) are left out, as are files beyond `limit` bytes in total.
    """
    buffer, skipped, total = io.BytesIO(), [], 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in sorted(dirnames) + sorted(filenames):
                path = Path(dirpath, name)
                info = path.lstat()
                relative = str(path.relative_to(root))
                if stat.S_ISREG(info.st_mode) and (info.st_nlink > 1 or total + info.st_size > limit):
                    skipped.append(f"{relative} was not copied back ({info.st_size} bytes, {info.st_nlink} links)")
                    continue
                if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                    skipped.append(f"{relative} was not copied back (not a file, directory or symlink)")
                    continue
                total += info.st_size if stat.S_ISREG(info.st_mode) else 0
                tar.add(path, arcname=relative, recursive=False)
    return buffer.getvalue(), skipped


def unpack_into(archive: bytes, root: Path) -> list[str]:
    """Extract `archive` into `root` with tarfile's "data" filter (nothing outside `root`, no devices, no
    owners or set-id bits); returns a note per member it refused."""
    refused = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
        for member in tar:
            try:
                tar.extract(member, root, filter="data")
            except (tarfile.FilterError, OSError) as exc:
                refused.append(f"{member.name} was not extracted: {exc}")
    return refused


def _failure(reason: str, message: str, start: float) -> SandboxResult:
    return SandboxResult(returncode=None, stdout="", stderr=message, wall_s=time.monotonic() - start,
                         killed_reason=reason, backend="ray", warnings=[message])
