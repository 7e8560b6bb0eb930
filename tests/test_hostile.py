"""Hostile candidates through the local (bubblewrap) and docker sandboxes: each is contained, comes back as a
failed evaluation with a clear reason, and leaves no process or container behind. Two of them also go
through the real research graph (scripted model, embedded Postgres), which records them and carries on."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from processes import processes_mentioning

from evoforge.config import RunConfig
from evoforge.graph.runner import start_run
from evoforge.memory.database import Database
from evoforge.runtime import services
from evoforge.sandbox import Sandbox, close_sandboxes
from evoforge.sandbox.docker import LABEL, DockerSandbox
from evoforge.sandbox.local import LocalSandbox
from evoforge.tasks.spec import TaskSpec, load_task
from evoforge.tools.evaluation import EVOFORGE_PACKAGE, StageResult, run_stage, stage_failed

pytestmark = pytest.mark.integration
HOSTILE = Path(__file__).parent / "fixtures" / "hostile"
BACKENDS = ["local", "docker"]
OUTPUT_LIMIT = 64 * 1024  # a flood is stopped after 16x this


@pytest.fixture(scope="module")
def docker_sandbox(docker_engine: str) -> DockerSandbox:
    return DockerSandbox(base_url=docker_engine)


@pytest.fixture(params=BACKENDS)
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """Each hostile test runs once per backend: local (bubblewrap required) and docker."""
    assert os.geteuid() == 0, "these tests check per-job uids and must run as root"
    if request.param == "local":
        return LocalSandbox(isolation="bubblewrap")
    return request.getfixturevalue("docker_sandbox")


def evaluate_hostile(sandbox: Sandbox, candidate: str, tmp_path: Path, **settings: Any) -> StageResult:
    """Run a hostile candidate through `run_stage`; every process of it carries a fresh marker (the stage
    name is on the evaluator's command line) so leftovers can be found on the host afterwards."""
    marker = f"hostile{uuid.uuid4().hex[:12]}"
    base = load_task(HOSTILE / "task")
    stage = base.stages[0].model_copy(update={"name": marker})
    task: TaskSpec = base.model_copy(update={"stages": [stage]})
    code = (HOSTILE / f"{candidate}.py").read_text()
    outcome = run_stage(task, stage, code, tmp_path / "work", sandbox, settings_override={"marker": marker, **settings},
                        max_output_bytes=OUTPUT_LIMIT)
    assert processes_mentioning(marker) == [], f"{candidate} left processes behind"
    if isinstance(sandbox, DockerSandbox):
        assert sandbox.client.containers.list(all=True, filters={"label": LABEL}) == []
    assert stage_failed(outcome) and outcome["error"], outcome
    return outcome


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on 127.0.0.1 recording what any connection sends."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                received.append(conn.recv(1024) or b"<connected>")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join()
    server.close()


def test_network_connection_to_the_host_is_refused(sandbox: Sandbox, tmp_path: Path,
                                                   listener: tuple[int, list[bytes]]) -> None:
    port, received = listener
    outcome = evaluate_hostile(sandbox, "net_connect", tmp_path, port=port)
    assert received == []
    assert outcome["status"] == "runtime_error" and "ConnectionRefusedError" in outcome["error"]


def test_writes_outside_the_work_dir_fail(sandbox: Sandbox, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o777)
    outside.chmod(0o777)  # tempting: anyone may write here on the host
    outcome = evaluate_hostile(sandbox, "write_outside", tmp_path, outside_dir=str(outside),
                               package_dir=str(EVOFORGE_PACKAGE))
    assert outcome["status"] == "runtime_error" and "every write outside the work dir failed" in outcome["error"]
    for path in (outside / "pwned", EVOFORGE_PACKAGE / "pwned", Path("/pwned"), Path("/etc/pwned"),
                 tmp_path / "pwned"):
        assert not path.exists(), f"the candidate wrote {path}"


def test_the_parents_api_keys_are_invisible(sandbox: Sandbox, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"sk-hostile-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    outcome = evaluate_hostile(sandbox, "read_env", tmp_path)
    assert outcome["status"] == "runtime_error" and "no API key" in outcome["error"]
    everything = outcome["stdout_tail"] + outcome["stderr_tail"] + str(outcome)
    assert secret not in everything and "STOLEN" not in everything


def test_a_fork_bomb_is_stopped_at_the_process_limit(sandbox: Sandbox, tmp_path: Path) -> None:
    outcome = evaluate_hostile(sandbox, "fork_bomb", tmp_path)
    # 64 processes at most; their shared pages count once, so it is the process limit, not memory, that stops it
    assert outcome["status"] == "resource_limit", outcome["error"]
    assert "killed at the process limit (64 processes and threads)" in outcome["error"]
    assert outcome["peak_memory_mb"] < 256


def test_a_child_killed_by_the_oom_killer_is_named_a_memory_kill(docker_sandbox: DockerSandbox,
                                                                 tmp_path: Path) -> None:
    # on docker the kernel's OOM killer takes the child and the evaluator goes on to report that the child
    # died; the stage still failed on memory. (Locally RLIMIT_AS makes the child raise MemoryError instead.)
    outcome = evaluate_hostile(docker_sandbox, "child_memory_hog", tmp_path)
    assert outcome["status"] == "resource_limit", outcome["error"]
    assert "hit the memory limit (256 MB" in outcome["error"] and "killed a process of it" in outcome["error"]


def test_unbounded_memory_hits_the_limit(sandbox: Sandbox, tmp_path: Path) -> None:
    outcome = evaluate_hostile(sandbox, "memory_hog", tmp_path)
    assert outcome["status"] == "resource_limit" and ("memory limit (256 MB" in outcome["error"]
                                                   or "MemoryError under the 256 MB limit" in outcome["error"])
    assert outcome["peak_memory_mb"] <= 256 * 1.1


def test_a_loop_ignoring_sigterm_is_killed_at_the_timeout(sandbox: Sandbox, tmp_path: Path) -> None:
    outcome = evaluate_hostile(sandbox, "ignore_sigterm", tmp_path)
    assert outcome["status"] == "timeout" and 3 <= outcome["wall_s"] < 3 + 1
    assert outcome["cpu_s"] > 0.5, "the spinning CPU time should be accounted"


def test_an_output_flood_is_stopped_and_capped(sandbox: Sandbox, tmp_path: Path) -> None:
    outcome = evaluate_hostile(sandbox, "flood_stdout", tmp_path)
    assert outcome["status"] == "resource_limit" and f"flooding its output (more than {16 * OUTPUT_LIMIT} bytes" in outcome["error"]
    assert outcome["wall_s"] < 3
    stdout = (Path(outcome["results_dir"]) / "stdout.txt").read_text()
    assert len(stdout) < 2 * OUTPUT_LIMIT and "bytes dropped by the sandbox" in stdout


def test_a_daemonized_child_is_reported_and_killed(sandbox: Sandbox, tmp_path: Path) -> None:
    outcome = evaluate_hostile(sandbox, "daemon_child", tmp_path)
    assert outcome["status"] == "invalid" and "left 1 process(es) running" in outcome["error"]


def graph_config(database: Database, tmp_path: Path, backend: str, docker_engine: str | None,
                 candidates: list[str]) -> RunConfig:
    """A scripted run of the hostile task whose Researcher proposes `candidates`, one per round."""
    replies = [f"NAME: {name}\nMOTIVATION: see what the sandbox does.\n```python\n"
               f"{(HOSTILE / f'{name}.py').read_text()}```\n" for name in candidates]
    analysis = "RESULT: it failed as reported.\nWORKED: nothing.\nFAILED: the sandbox stopped it.\nNEXT: behave."
    script = tmp_path / "script.yaml"
    script.write_text(yaml.safe_dump({"researcher": replies, "analyzer": {"cycle": True, "replies": [analysis]}}))
    return RunConfig(
        task=str(HOSTILE / "task"), rounds=len(candidates), database_url=database.url,
        llm={"provider": "scripted", "script": str(script)}, state_dir=tmp_path / "state",
        sampling={"policy": "greedy", "inspirations": 0},
        novelty={"duplicate_similarity": 0.9999, "judge_similarity": 0.9999},
        sandbox={"backend": backend, "isolation": "bubblewrap", "max_output_bytes": OUTPUT_LIMIT,
                 "docker": {"base_url": docker_engine}},
    )


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "candidates", "statuses"), [
    ("local", ["ignore_sigterm", "flood_stdout"], ["timeout", "resource_limit"]),
    ("docker", ["memory_hog", "daemon_child"], ["resource_limit", "invalid"]),
])
def test_the_graph_records_hostile_candidates_as_failed_nodes_and_carries_on(
        backend: str, candidates: list[str], statuses: list[str], database: Database, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    engine = request.getfixturevalue("docker_engine") if backend == "docker" else None
    config = graph_config(database, tmp_path, backend, engine, candidates)
    try:
        outcome = start_run(config, f"hostile-{backend}")
        nodes = {node.round: node for node in services.get_services(config).nodes.list_nodes(f"hostile-{backend}")}
    finally:
        services.clear_services()
        close_sandboxes()
    assert outcome.state["stop_reason"] == f"{len(candidates)} rounds done"
    assert nodes[0].status == "evaluated" and nodes[0].score == 1.0  # the seed
    assert [nodes[r].name for r in (1, 2)] == candidates
    assert [nodes[r].status for r in (1, 2)] == statuses
    for node in (nodes[1], nodes[2]):
        assert node.error and node.analysis.startswith("RESULT:")
        assert node.stage_results[0]["backend"].startswith(backend)
