"""The research graph served by a real `langgraph dev` server (the repository's langgraph.json, Postgres
checkpoints) and driven through langgraph-sdk's thread API: a circle_packing run stops before its costly
stage, a person approves one candidate and rejects the next, and the records land in Postgres."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient
from processes import processes_mentioning

from evoforge.config import RunConfig
from evoforge.memory.database import Database
from evoforge.memory.embedded import CLUSTER_DIR_NAME, EmbeddedPostgres
from evoforge.memory.nodes import NodeStore
from evoforge.runtime.services import context_given

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).parent / "fixtures" / "scripts"
BIN = Path(sys.executable).parent


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


def wait_until_serving(server: subprocess.Popen[Any], probe_url: str, log: Path, name: str,
                       timeout_s: float = 120, request_timeout_s: float = 2) -> None:
    """Wait until `probe_url` answers 200; fail with `server`'s log when it exits or `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            pytest.fail(f"{name} exited with {server.returncode}:\n{_log_tail(log)}", pytrace=False)
        try:
            if httpx.get(probe_url, timeout=request_timeout_s).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{name} did not answer on {probe_url} within {timeout_s:.0f} s:\n{_log_tail(log)}",
                        pytrace=False)
        time.sleep(0.5)


@contextmanager
def langgraph_dev(tmp_path: Path, env: dict[str, str], stop: signal.Signals = signal.SIGTERM) -> Iterator[str]:
    """`langgraph dev` on a free loopback port with `env`; its URL. Stopped with `stop` at the end.

    The server runs the repository's langgraph.json unchanged, from a directory holding only that file and
    the package (no `.env`, as in a fresh clone), so its `.langgraph_api/` state stays out of the repository.
    """
    langgraph = BIN / "langgraph"
    if not langgraph.is_file():
        pytest.fail(f"{langgraph} is missing: install the studio extra (langgraph-cli[inmem])", pytrace=False)
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(ROOT / "langgraph.json", app / "langgraph.json")
    (app / "evoforge").symlink_to(ROOT / "evoforge")
    port = free_loopback_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(langgraph), "dev", "--config", "langgraph.json", "--host", "127.0.0.1", "--port", str(port),
             "--no-browser", "--no-reload"],
            cwd=app, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(server, f"{url}/ok", log, "langgraph dev")
        yield url
    finally:
        os.killpg(server.pid, stop)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def server_env(**evoforge: str) -> dict[str, str]:
    """The environment of a dev server: no analytics or tracing, and only the given EVOFORGE_* settings."""
    base = {name: value for name, value in os.environ.items() if not name.startswith("EVOFORGE_")}
    return {**base, "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false",
            "LANGGRAPH_NO_VERSION_CHECK": "true", **{f"EVOFORGE_{k.upper()}": v for k, v in evoforge.items()}}


@pytest.fixture
def dev_server(database: Database, tmp_path: Path) -> Iterator[str]:
    """`langgraph dev` whose checkpoints and nodes go to the test's database."""
    with langgraph_dev(tmp_path, server_env(database_url=database.url, state_dir=str(tmp_path / "state"))) as url:
        yield url


def stream_until_pause(client: SyncLangGraphClient, thread_id: str,
                       **run: Any) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """Stream a run's node updates until it ends or stops at an interrupt: (node, update) pairs, interrupts."""
    steps: list[tuple[str, dict[str, Any]]] = []
    interrupts: list[dict[str, Any]] = []
    for part in client.runs.stream(thread_id, "research", stream_mode="updates", **run):
        assert part.event != "error", f"the run failed: {part.data}"
        if part.event != "updates":
            continue
        for node, update in part.data.items():
            if node == "__interrupt__":
                interrupts.extend(update)
            else:
                steps.append((node, update))
    return steps, interrupts


def run_errors(client: SyncLangGraphClient, context: dict[str, Any]) -> list[str]:
    thread = client.threads.create()
    parts = client.runs.stream(thread["thread_id"], "research", input={}, context=context, stream_mode="updates")
    return [part.data["message"] for part in parts if part.event == "error"]


def test_an_empty_context_counts_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dev server sends `{}` for a resume without context; the run's recorded settings must then apply."""
    for name in [name for name in os.environ if name.startswith("EVOFORGE_")]:
        monkeypatch.delenv(name)
    assert not context_given(None)
    assert not context_given(RunConfig(**{}))
    assert context_given(RunConfig(task="linear_attention"))
    monkeypatch.setenv("EVOFORGE_ROUNDS", "3")
    assert not context_given(RunConfig())
    assert context_given(RunConfig(rounds=5))


@pytest.mark.integration
@pytest.mark.slow
def test_thread_api_run_with_human_approval(dev_server: str, database: Database, tmp_path: Path) -> None:
    client = get_sync_client(url=dev_server)

    # the run settings are the run's context, validated with the key and the value named
    assert any("rounds" in message and "greater than or equal to 0" in message
               for message in run_errors(client, {"task": "circle_packing", "rounds": -1}))
    assert any("'no_such_task'" in message for message in run_errors(client, {"task": "no_such_task"}))

    context = {
        "task": "circle_packing",
        "rounds": 2,
        "llm": {"provider": "scripted", "script": str(SCRIPTS / "approval.yaml")},
        "state_dir": str(tmp_path / "state"),
        "sampling": {"policy": "greedy", "inspirations": 1},
        "novelty": {"duplicate_similarity": 0.9999, "judge_similarity": 0.9999},
        "approval_cost_threshold": 0.005,  # below the `full` stage's declared cost (0.01)
    }
    thread_id = client.threads.create()["thread_id"]
    steps, interrupts = stream_until_pause(client, thread_id, input={}, context=context)
    assert [node for node, _ in steps] == ["prepare_run", "sample_context", "propose_candidate", "check_candidate",
                                           "check_novelty", "run_evaluation"]
    updates = dict(steps)  # each step streams what the agent decided, not just the run's summary
    assert updates["propose_candidate"]["candidate"]["name"] == "square_grid"
    assert updates["check_candidate"]["static_report"]["ok"] is True
    assert updates["check_novelty"]["novelty_report"]["verdict"] == "novel"
    assert updates["run_evaluation"]["stage_results"][0]["stage"] == "quick"
    assert updates["run_evaluation"]["tool_calls"][1]["result"]["valid"] is True
    assert len(interrupts) == 1

    state = client.threads.get_state(thread_id)
    assert state["next"] == ["run_evaluation"]
    (pending,) = state["interrupts"]
    request = pending["value"]
    assert request["kind"] == "approve_stage" and request["run_id"] == thread_id
    assert request["candidate"] == "square_grid" and request["motivation"].startswith("A 5x5 grid")
    assert request["stage"] == "full" and request["cost"] == 0.01 and request["diff_lines"] > 0
    assert request["static_check"]["ok"] is True
    assert [s["stage"] for s in request["stages_so_far"]] == ["quick"]

    # the CLI sees the thread's run and its pending approval in the same database
    status = subprocess.run([str(BIN / "evoforge"), "status", thread_id], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "EVOFORGE_DATABASE_URL": database.url, "COLUMNS": "200"})
    assert status.returncode == 0, status.stderr
    assert "circle_packing" in status.stdout and "pending approval" in status.stdout
    assert "'square_grid'" in status.stdout and f"evoforge approve {thread_id}" in status.stdout

    # the same server serves the dashboard (langgraph.json's http.app) over the same database
    live = httpx.get(f"{dev_server}/dashboard/api/runs/{thread_id}", timeout=60, trust_env=False)
    assert live.status_code == 200, live.text[:500]
    assert live.json()["run"]["status"] == "waiting for approval"
    assert [request["candidate"] for request in live.json()["approvals"]] == ["square_grid"]

    # approve round 1 (the resume carries no context: the run's recorded settings apply)
    steps, interrupts = stream_until_pause(client, thread_id, command={"resume": {"action": "approve"}})
    assert [node for node, _ in steps][:4] == ["run_evaluation", "analyze_result", "record_node", "sample_context"]
    assert dict(steps)["analyze_result"]["analysis"].startswith("RESULT: the grid")
    assert [i["value"]["candidate"] for i in interrupts] == ["far_corner_gap"]

    # reject round 2
    reason = "the same grid with one circle moved: not worth the full stage"
    steps, interrupts = stream_until_pause(
        client, thread_id, command={"resume": {"action": "reject", "reason": reason}})
    assert [node for node, _ in steps] == ["run_evaluation", "record_node"] and not interrupts
    final = client.threads.get_state(thread_id)
    assert final["next"] == [] and final["values"]["stop_reason"] == "2 rounds done"

    store = NodeStore(database)
    nodes = {node.round: node for node in store.list_nodes(thread_id)}
    assert sorted(nodes) == [0, 1, 2]
    approved, rejected = nodes[1], nodes[2]
    assert approved.status == "evaluated" and approved.name == "square_grid" and approved.valid
    assert [r["stage"] for r in approved.stage_results] == ["quick", "full"]
    assert approved.analysis.startswith("RESULT: the grid")
    assert rejected.status == "rejected_by_human" and rejected.name == "far_corner_gap"
    assert reason in (rejected.error or "") and [r["stage"] for r in rejected.stage_results] == ["quick"]
    run = store.get_run(thread_id)
    assert run is not None and run.status == "finished" and run.config["approval_cost_threshold"] == 0.005
    assert run.config["database_url"] == database.url  # from the server's EVOFORGE_DATABASE_URL

    # the checkpoint history the server shows is the one in Postgres, with both decisions in it
    history = client.threads.get_history(thread_id, limit=500)
    with database.pool.connection() as conn:
        row = conn.execute("SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = ''",
                           (thread_id,)).fetchone()
    assert row is not None and row["n"] == len(history) >= 16
    asked = [h for h in history if h["interrupts"]]
    assert sorted(h["values"]["round"] for h in asked) == [1, 2]
    decisions = [task["result"]["approval"]["action"] for h in asked for task in h["tasks"]]
    assert sorted(decisions) == ["approve", "reject"]
    before_analysis = next(h for h in history if h["next"] == ["analyze_result"])
    assert before_analysis["tasks"][0]["result"]["analysis"].startswith("RESULT: the grid")


@pytest.mark.integration
def test_stopping_langgraph_dev_stops_the_embedded_postgres_it_started(tmp_path: Path) -> None:
    """No database URL: the server starts the embedded Postgres of its state dir, and Ctrl-C stops both."""
    state_dir = tmp_path / "state"
    data_dir: Path | None = None
    try:
        with langgraph_dev(tmp_path, server_env(state_dir=str(state_dir)), stop=signal.SIGINT):
            data_dir = (state_dir / CLUSTER_DIR_NAME).resolve()
            assert processes_mentioning(str(data_dir)), f"no postgres serves {data_dir} while the server runs"
        assert processes_mentioning(str(data_dir)) == []
    finally:
        if data_dir is not None:  # a server left behind by a failed check must not outlive the test
            if processes_mentioning(str(data_dir)):
                EmbeddedPostgres.start(state_dir).stop()
            shutil.rmtree(data_dir, ignore_errors=True)


def stream_steps_and_errors(client: SyncLangGraphClient, thread_id: str,
                            context: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """A new run of a thread streamed to its end: the (node, update) pairs and the error messages."""
    steps: list[tuple[str, dict[str, Any]]] = []
    errors: list[str] = []
    for part in client.runs.stream(thread_id, "research", input={}, context=context, stream_mode="updates"):
        if part.event == "error":
            errors.append(part.data["message"])
        elif part.event == "updates":
            steps.extend((node, update) for node, update in part.data.items() if node != "__interrupt__")
    return steps, errors


@pytest.mark.integration
def test_thread_contexts_are_checked_like_config_files_and_threads_do_not_share_a_script(
        dev_server: str, tmp_path: Path) -> None:
    client = get_sync_client(url=dev_server)
    toy = {"task": str(Path(__file__).parent / "fixtures" / "tasks" / "toy"), "rounds": 1,
           "state_dir": str(tmp_path / "state"), "sampling": {"policy": "greedy"}}
    scripted = {**toy, "llm": {"provider": "scripted", "script": str(SCRIPTS / "slow_toy.yaml")}}

    # a key a config file could not hold fails the run, as `evoforge run --config` would (it is not dropped)
    steps, errors = stream_steps_and_errors(client, client.threads.create()["thread_id"],
                                            {**scripted, "hyperparams": {"lr": 0.1}})
    assert steps == [] and any("hyperparams: Extra inputs are not permitted" in e for e in errors), errors

    # a script that does not exist is reported before the first step does anything
    missing = tmp_path / "no_such_script.yaml"
    steps, errors = stream_steps_and_errors(client, client.threads.create()["thread_id"],
                                            {**toy, "llm": {"provider": "scripted", "script": str(missing)}})
    assert steps == [] and any(f"cannot read {missing}" in e for e in errors), errors

    # two threads served by the same scripted model each read the script from its start
    for _ in range(2):
        steps, errors = stream_steps_and_errors(client, client.threads.create()["thread_id"], scripted)
        assert not errors and dict(steps)["propose_candidate"]["candidate"]["name"] == "v2"


class _HangingChatEndpoint:
    """An OpenAI-compatible /v1/chat/completions that holds every request until `release` is set, and notes
    when a client gave up on its request (closed the connection)."""

    def __init__(self) -> None:
        import http.server
        import json
        import select
        import threading

        self.called = threading.Event()
        self.disconnected = threading.Event()
        self.release = threading.Event()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                endpoint.called.set()
                while not endpoint.release.is_set():
                    readable, _, _ = select.select([self.connection], [], [], 0.1)
                    if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                        endpoint.disconnected.set()
                        return
                body = json.dumps({
                    "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "NAME: v2\nMOTIVATION: larger\n"
                                             "```python\ndef solve():\n    return 2.0\n```"}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.integration
def test_cancelling_a_run_that_waits_on_a_model_call_frees_the_thread_at_once(database: Database,
                                                                             tmp_path: Path) -> None:
    endpoint = _HangingChatEndpoint()
    env = {**server_env(database_url=database.url, state_dir=str(tmp_path / "state")), "FAKE_MODEL_KEY": "k"}
    try:
        with langgraph_dev(tmp_path, env) as url:
            client = get_sync_client(url=url)
            thread_id = client.threads.create()["thread_id"]
            context = {"task": str(Path(__file__).parent / "fixtures" / "tasks" / "toy"), "rounds": 3,
                       "state_dir": str(tmp_path / "state"), "sampling": {"policy": "greedy"},
                       "llm": {"provider": "openai", "base_url": endpoint.url, "model": "m",
                               "api_key_env": "FAKE_MODEL_KEY", "timeout_s": 600}}
            run = client.runs.create(thread_id, "research", input={}, context=context)
            assert endpoint.called.wait(120), "the Researcher never called the model"
            client.runs.cancel(thread_id, run["run_id"], action="interrupt")
            deadline = time.monotonic() + 30
            while client.runs.get(thread_id, run["run_id"])["status"] in ("pending", "running"):
                assert time.monotonic() < deadline, "the cancelled run still runs 30 s later"
                time.sleep(0.2)
            assert client.runs.get(thread_id, run["run_id"])["status"] == "interrupted"
            # The dev server writes the run's status before the thread's, so the thread may read busy for a
            # moment after the run reads interrupted; a thread still busy seconds later is the defect.
            freed_by = time.monotonic() + 5
            while client.threads.get(thread_id)["status"] == "busy":
                assert time.monotonic() < freed_by, "the thread is still busy 5 s after its run was interrupted"
                time.sleep(0.1)
            assert endpoint.disconnected.wait(10), "the model call was left waiting"
            assert [node.round for node in NodeStore(database).list_nodes(thread_id)] == [0], \
                "the cancelled round went on and recorded a node"
    finally:
        endpoint.close()
