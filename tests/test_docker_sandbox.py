"""The docker sandbox against a real dockerd started by the test session (see conftest.docker_engine)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import docker
import pytest

from evoforge.sandbox import Job, Limits, SandboxError, get_sandbox, sandbox_capacity
from evoforge.sandbox.docker import (
    DEADLINE_LABEL,
    LABEL,
    OWNER_LABEL,
    DockerSandbox,
    gpu_device_requests,
    gpus_held,
)
from evoforge.sandbox.identity import JobIdentity
from evoforge.sandbox.local import LocalSandbox
from evoforge.tasks.spec import load_task
from evoforge.tools.evaluation import run_stage


def test_gpu_requests_ask_for_all_a_count_or_specific_devices() -> None:
    [every] = gpu_device_requests(Limits(timeout_s=1, gpu_ids=("all",)))
    assert (every.count, every.device_ids, every.capabilities) == (-1, [], [["gpu"]])
    [counted] = gpu_device_requests(Limits(timeout_s=1, gpus=2))
    assert (counted.count, counted.device_ids) == (2, [])
    [chosen] = gpu_device_requests(Limits(timeout_s=1, gpus=1, gpu_ids=("0", "GPU-3f2a")))
    assert (chosen.count, chosen.device_ids) == (0, ["0", "GPU-3f2a"])
    assert gpu_device_requests(Limits(timeout_s=1)) == []
    assert gpus_held(Limits(timeout_s=1, gpu_ids=("1", "3"))) == 2 and gpus_held(Limits(timeout_s=1, gpus=3)) == 3


def test_an_unreachable_engine_is_a_clear_sandbox_error(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match=r"cannot reach the Docker engine at unix://.*scripts/start-dockerd.sh"):
        DockerSandbox(base_url=f"unix://{tmp_path}/absent.sock")


@pytest.fixture(scope="module")
def sandbox(docker_engine: str) -> DockerSandbox:
    return DockerSandbox(base_url=docker_engine)


def running(marker: str) -> bool:
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                return True
        except OSError:
            continue  # exited while we looked
    return False


def run_py(sandbox: DockerSandbox, workdir: Path, code: str, **limits) -> tuple:
    limits.setdefault("timeout_s", 20)
    start = time.monotonic()
    result = sandbox.run(Job([sys.executable, "-c", textwrap.dedent(code)], workdir, Limits(**limits)))
    return result, time.monotonic() - start


@pytest.mark.integration
def test_container_settings_carry_every_limit(sandbox: DockerSandbox, docker_engine: str, tmp_path: Path) -> None:
    limits = Limits(timeout_s=5, memory_mb=300, cpus=1.5, max_processes=32, max_file_mb=10, gpus=1, gpu_ids=("2",))
    job = Job([sys.executable, "evaluate.py"], tmp_path, limits, env={"A": "1"}, readonly_paths=(Path("/opt"),))
    settings = sandbox.container_settings(job, tmp_path, JobIdentity(200_123, 200_123, switch=True))
    assert settings["network_mode"] == "none" and settings["read_only"] and settings["user"] == "200123:200123"
    assert (settings["mem_limit"], settings["memswap_limit"], settings["pids_limit"]) == ("300m", "300m", 32)
    assert settings["nano_cpus"] == 1_500_000_000 and settings["cap_drop"] == ["ALL"]
    assert settings["device_requests"][0].device_ids == ["2"] and "CUDA_VISIBLE_DEVICES" not in settings["environment"]
    assert {u.name: u.hard for u in settings["ulimits"]} == {"core": 0, "fsize": 10 << 20}
    mounts = {m["Target"]: m["ReadOnly"] for m in settings["mounts"]}
    assert mounts[str(tmp_path)] is False and mounts["/usr"] is True and mounts[sys.prefix] is True
    # the container's own command enforces the wall-clock limit (plus a grace) even if evoforge dies
    assert settings["command"] == ["timeout", "-s", "KILL", "7.000", sys.executable, "evaluate.py"]
    assert settings["labels"][LABEL] == "1" and settings["auto_remove"]
    assert time.time() + 5 < int(settings["labels"][DEADLINE_LABEL]) < time.time() + 5 + 2 + 61
    # a task's own image runs its own interpreter with its own PATH, and gets no host directories
    own = DockerSandbox(base_url=docker_engine, image=sandbox.image, python="/opt/venv/bin/python")
    settings = own.container_settings(job, tmp_path, JobIdentity(1, 1, switch=True))
    assert settings["command"][4:] == ["/opt/venv/bin/python", "evaluate.py"] and "PATH" not in settings["environment"]
    assert {m["Target"] for m in settings["mounts"]} == {"/opt", str(tmp_path)} and settings["init"]
    with pytest.raises(SandboxError, match="'no-such-image:1' is not on the engine.*sandbox/Dockerfile"):
        DockerSandbox(base_url=docker_engine, image="no-such-image:1")


@pytest.mark.integration
def test_a_job_runs_as_its_own_uid_with_a_read_only_root_and_no_network(sandbox: DockerSandbox,
                                                                        tmp_path: Path) -> None:
    result, _ = run_py(sandbox, tmp_path, """
        import os, socket, sys
        print(os.getuid(), os.getcwd() == os.environ["HOME"], sys.executable)
        open("made.txt", "w").write("kept")
        for path in ("/usr/evil", "/evil"):
            try:
                open(path, "w")
            except OSError as exc:
                print("refused", path, exc.strerror)
        print("interfaces", sorted(name for _, name in socket.if_nameindex()))
    """)
    assert result.ok and result.backend == "docker", result.stderr
    uid, home_is_workdir, python = result.stdout.split("\n")[0].split()
    assert int(uid) >= 200_000 and home_is_workdir == "True" and python == sys.executable
    assert "refused /usr/evil Read-only file system" in result.stdout and "refused /evil Read-only" in result.stdout
    assert "interfaces ['lo']" in result.stdout
    made = tmp_path / "made.txt"
    assert made.read_text() == "kept" and made.stat().st_uid == os.geteuid()  # handed back after the job


@pytest.mark.integration
def test_memory_and_process_limits_are_enforced(sandbox: DockerSandbox, tmp_path: Path) -> None:
    result, _ = run_py(sandbox, tmp_path, """
        blocks = []
        while True:
            blocks.append(bytearray(b"x" * (16 << 20)))
    """, memory_mb=128)
    assert (result.killed_reason, result.returncode) == ("memory", -9)
    assert "memory limit" in (result.describe_failure() or "")
    result, _ = run_py(sandbox, tmp_path, """
        import subprocess
        children = []
        try:
            for _ in range(100):
                children.append(subprocess.Popen(["sleep", "30"]))
        except OSError as exc:
            print("stopped at", len(children), type(exc).__name__)
    """, max_processes=20, timeout_s=10)
    started = int(result.stdout.split()[2])
    assert result.ok and 10 <= started < 20, result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["local", "docker"])
def test_the_timeout_kill_lands_within_a_second_of_the_limit(backend: str, sandbox: DockerSandbox,
                                                             tmp_path: Path) -> None:
    marker = f"{uuid.uuid4().hex}"
    code = textwrap.dedent("""
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(time.time(), flush=True)
        while True:
            pass
    """)
    chosen = sandbox if backend == "docker" else LocalSandbox(isolation="bubblewrap")
    vanished: list[float] = []
    seen = threading.Event()

    def watch() -> None:
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up:
            if running(marker):
                seen.set()
            elif seen.is_set():
                vanished.append(time.time())
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = chosen.run(Job([sys.executable, "-c", code, marker], tmp_path, Limits(timeout_s=1.5)))
    watcher.join(5)
    assert result.killed_reason == "timeout" and 1.5 <= result.wall_s < 2.5
    started = float(result.stdout.split()[0])
    assert seen.is_set() and vanished and vanished[0] - started < 1.5 + 1.0


@pytest.mark.integration
def test_concurrent_jobs_overlap_on_separate_uids(sandbox: DockerSandbox, tmp_path: Path) -> None:
    results: dict[int, tuple] = {}

    def one(index: int) -> None:
        workdir = tmp_path / str(index)
        workdir.mkdir()
        code = "import os, time\nprint(os.getuid(), time.time())\ntime.sleep(1.5)\nprint(time.time())"
        results[index] = run_py(sandbox, workdir, code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result.ok for result, _ in results.values())
    (uid_a, start_a, end_a), (uid_b, start_b, end_b) = (result.stdout.split() for result, _ in results.values())
    assert uid_a != uid_b, "two jobs shared a uid"
    assert float(start_a) < float(end_b) and float(start_b) < float(end_a), "the jobs did not run at the same time"
    assert sandbox_capacity(sandbox) == sandbox.capacity >= 1


@pytest.mark.integration
def test_containers_of_dead_owners_are_removed(sandbox: DockerSandbox) -> None:
    host = sandbox._owner.rpartition(":")[0]
    orphan = sandbox.client.containers.create(sandbox.image, ["/usr/bin/true"],
                                              labels={LABEL: "1", OWNER_LABEL: f"{host}:999999999"})
    alive = sandbox.client.containers.create(sandbox.image, ["/usr/bin/true"],
                                             labels={LABEL: "1", OWNER_LABEL: sandbox._owner})
    expired = sandbox.client.containers.create(sandbox.image, ["/usr/bin/true"], labels={
        LABEL: "1", OWNER_LABEL: f"elsewhere:{os.getpid()}", DEADLINE_LABEL: str(int(time.time()) - 1)})
    try:
        assert sorted(sandbox.remove_orphans()) == sorted([orphan.short_id, expired.short_id])
        for gone in (orphan, expired):
            with pytest.raises(docker.errors.NotFound):
                gone.reload()
    finally:
        alive.remove(force=True)


CHILD_RUNS_A_DOCKER_JOB = """
import sys, time
from pathlib import Path
from evoforge.sandbox import Job, Limits
from evoforge.sandbox.docker import DockerSandbox

engine, workdir, marker = sys.argv[1:]
code = "import subprocess, time; subprocess.Popen(['sleep', '600']); time.sleep(600)  # " + marker
DockerSandbox(base_url=engine).run(Job([sys.executable, "-c", code], Path(workdir), Limits(timeout_s=3)))
"""


@pytest.mark.integration
def test_the_timeout_holds_when_evoforge_is_killed(sandbox: DockerSandbox, docker_engine: str,
                                                   tmp_path: Path) -> None:
    marker = f"orphan-{uuid.uuid4().hex[:12]}"
    tmp_path.chmod(0o755)
    child = subprocess.Popen([sys.executable, "-c", CHILD_RUNS_A_DOCKER_JOB, docker_engine, str(tmp_path), marker])
    try:
        owner = f"{sandbox._owner.rpartition(':')[0]}:{child.pid}"
        for _ in range(300):  # until the job's processes run in their container
            if sandbox.client.containers.list(filters={"label": f"{OWNER_LABEL}={owner}"}) and running(marker):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the child's container never ran its job")
    finally:
        child.kill()
        child.wait()
    # no other backend starts (it would sweep the orphan): the container's own deadline must end it
    for _ in range(300):
        if not sandbox.client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"}):
            break
        time.sleep(0.1)
    assert sandbox.client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"}) == []
    assert not running(marker), "the job's processes outlived their container"


@pytest.mark.integration
def test_docker_and_local_give_the_same_result_for_the_same_candidate(docker_engine: str, tmp_path: Path) -> None:
    from evoforge.config import SandboxConfig

    task = load_task("circle_packing")
    code = task.seed_code()
    stage = task.stages[0]
    local = run_stage(task, stage, code, tmp_path / "local", get_sandbox("local", "bubblewrap"))
    in_docker = run_stage(task, stage, code, tmp_path / "docker",
                          get_sandbox("docker", settings=SandboxConfig(docker={"base_url": docker_engine})))
    assert (local["backend"], in_docker["backend"]) == ("local/bubblewrap", "docker")
    assert local["status"] == in_docker["status"] == "ok"
    timings = ("program_seconds", "eval_seconds")
    assert in_docker["score"] == local["score"] and in_docker["valid"] and local["valid"]
    assert {k: v for k, v in local["metrics"].items() if k not in timings} == {
        k: v for k, v in in_docker["metrics"].items() if k not in timings}
    assert in_docker["wall_s"] > 0 and in_docker["peak_memory_mb"] > 10, "resource accounting came back empty"
