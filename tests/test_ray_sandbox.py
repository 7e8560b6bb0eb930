"""The ray sandbox on a local Ray instance (2 CPUs and one `gpu_slot` custom resource standing in for a GPU)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import pids_mentioning

from evoforge.config import SandboxConfig
from evoforge.sandbox import Job, Limits, get_sandbox, sandbox_capacity
from evoforge.sandbox.ray_backend import RaySandbox, pack_dir, unpack_into, unschedulable
from evoforge.tasks.spec import load_task
from evoforge.tools.evaluation import run_stage

RAY_SETTINGS = {"num_cpus": 2, "resources": {"gpu_slot": 1}, "max_retries": 1}


def test_unschedulable_names_what_no_node_has() -> None:
    nodes = [{"CPU": 2.0, "gpu_slot": 1.0}, {"CPU": 8.0}]
    assert unschedulable({"CPU": 4, "GPU": 0}, nodes) is None
    assert unschedulable({"CPU": 1, "gpu_slot": 1}, nodes) is None
    assert unschedulable({"CPU": 1, "GPU": 1}, nodes) == "GPU: 1"
    assert unschedulable({"CPU": 4, "gpu_slot": 1}, nodes) == "{'CPU': 4, 'gpu_slot': 1}"  # no single node has both


def test_work_dir_transfer_keeps_files_and_refuses_escapes(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "results").mkdir(parents=True)
    (source / "results" / "metrics.json").write_text('{"score": 1}')
    (source / "inside").symlink_to("results/metrics.json")
    (source / "outside").symlink_to("/etc/passwd")
    os.mkfifo(source / "pipe")
    (tmp_path / "host-secret").write_text("secret")
    os.link(tmp_path / "host-secret", source / "hardlink")
    archive, skipped = pack_dir(source)
    assert sorted(s.split(" ")[0] for s in skipped) == ["hardlink", "pipe"]
    target.mkdir()
    refused = unpack_into(archive, target)
    assert (target / "results" / "metrics.json").read_text() == '{"score": 1}'
    assert (target / "inside").is_symlink() and not (target / "outside").exists()
    assert len(refused) == 1 and refused[0].startswith("outside was not extracted")


@pytest.fixture(scope="module")
def ray_sandbox() -> Iterator[RaySandbox]:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    sandbox = get_sandbox("ray", "bubblewrap", SandboxConfig(backend="ray", ray=RAY_SETTINGS))
    assert isinstance(sandbox, RaySandbox)
    yield sandbox
    sandbox.close()


def job(workdir: Path, code: str, *args: str, **limits) -> Job:
    limits.setdefault("timeout_s", 20)
    return Job([sys.executable, "-c", textwrap.dedent(code), *args], workdir, Limits(**limits))


def ray_worker_above(pid: int) -> int | None:
    """The Ray worker process (its title starts with 'ray::') that `pid` descends from."""
    while pid > 1:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
                return pid
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return None
    return None


@pytest.mark.integration
def test_a_stage_runs_on_a_worker_and_its_results_come_back(ray_sandbox: RaySandbox, tmp_path: Path) -> None:
    task = load_task("circle_packing")
    outcome = run_stage(task, task.stages[0], task.seed_code(), tmp_path / "work", ray_sandbox)
    assert outcome["status"] == "ok" and outcome["backend"] == "ray/local/bubblewrap"
    assert outcome["score"] == pytest.approx(0.96056, abs=1e-4)
    assert (tmp_path / "work" / "results" / "metrics.json").is_file() and outcome["cpu_s"] > 0
    assert sandbox_capacity(ray_sandbox) == 2


@pytest.mark.integration
def test_resource_requests_are_honoured(ray_sandbox: RaySandbox, tmp_path: Path) -> None:
    sleeper = "import time\ntime.sleep(1.5)\nprint('done')"

    def both(**limits) -> float:
        start = time.monotonic()
        results = []
        threads = []
        for index in range(2):
            workdir = tmp_path / f"{len(limits)}-{index}"
            workdir.mkdir()
            threads.append(threading.Thread(target=lambda w=workdir: results.append(
                ray_sandbox.run(job(w, sleeper, **limits)))))
            threads[-1].start()
        for thread in threads:
            thread.join()
        assert [r.stdout for r in results] == ["done\n", "done\n"], [r.stderr for r in results]
        return time.monotonic() - start

    assert both() < 2.9, "two 1-CPU jobs on 2 CPUs should overlap"
    assert both(custom=(("gpu_slot", 1.0),)) >= 3.0, "one gpu_slot: the second job must wait for the first"
    start = time.monotonic()
    no_gpu = ray_sandbox.run(job(tmp_path, "print('never')", gpus=1))
    assert no_gpu.killed_reason == "unschedulable" and "GPU: 1" in no_gpu.stderr
    assert time.monotonic() - start < 2, "an impossible request must fail at once, not hang"


@pytest.mark.integration
def test_the_timeout_kill_lands_within_a_second_of_the_limit(ray_sandbox: RaySandbox, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(time.time(), flush=True)
        while True:
            pass
    """
    result = ray_sandbox.run(job(tmp_path, code, marker, timeout_s=1.5))
    assert result.killed_reason == "timeout" and 1.5 <= result.wall_s < 2.5
    assert pids_mentioning(marker) == []


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return ""  # exited while we looked


def kill_worker_once(marker: str, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the Ray worker running the job that carries `marker`, once the job's Python has started
    (bubblewrap needs a moment to arm its --die-with-parent)."""
    while not stop.is_set():
        for pid in pids_mentioning(marker):
            worker = ray_worker_above(pid)
            if worker is not None and _command_name(pid).startswith("python"):
                time.sleep(0.2)
                os.kill(worker, signal.SIGKILL)
                killed.append(worker)
                return
        time.sleep(0.02)


@pytest.mark.integration
@pytest.mark.parametrize("retries", [1, 0])
def test_a_killed_worker_is_retried_or_reported_never_hung(ray_sandbox: RaySandbox, retries: int,
                                                           tmp_path: Path) -> None:
    sandbox = ray_sandbox if retries else RaySandbox(SandboxConfig(backend="ray", isolation="bubblewrap",
                                                                   ray={**RAY_SETTINGS, "max_retries": 0}))
    marker = uuid.uuid4().hex
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_worker_once, args=(marker, killed, stop), daemon=True)
    killer.start()
    start = time.monotonic()
    result = sandbox.run(job(tmp_path, "import time\ntime.sleep(2)\nprint('finished')", marker))
    stop.set()
    killer.join()
    assert killed, "the test never saw the job's worker"
    assert time.monotonic() - start < 30
    if retries:
        assert result.ok and result.stdout == "finished\n", result
    else:
        assert result.killed_reason == "worker_lost" and "Ray worker running it died" in result.describe_failure()
    # the worker's death reaches the job through bubblewrap's --die-with-parent, a moment later
    deadline = time.monotonic() + 2
    while pids_mentioning(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pids_mentioning(marker) == []


@pytest.mark.integration
def test_workers_can_run_jobs_in_docker(ray_sandbox: RaySandbox, docker_engine: str, tmp_path: Path) -> None:
    settings = SandboxConfig(backend="ray", ray={**RAY_SETTINGS, "worker_backend": "docker"},
                             docker={"base_url": docker_engine})
    result = RaySandbox(settings).run(job(tmp_path, "import socket\nprint(socket.gethostname())"))
    assert result.ok and result.backend == "ray/docker" and result.stdout == "sandbox\n", result
