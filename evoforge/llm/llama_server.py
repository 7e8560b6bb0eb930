"""llama.cpp's own OpenAI-compatible server (`llama-server`) as a managed child process.

`scripts/install.sh` compiles `llama-server` from the llama.cpp sources that ship inside the pinned
llama-cpp-python sdist, for the instruction sets this CPU has (evoforge/llm/cpu_build.py), into the venv's
`bin/`. llama.cpp's server rather than llama-cpp-python's, because of three things it does that the local loop
needs, each measured on 2 cores with the 1.5B model (benchmarks/results/server.json):

- parallel slots decoded in one batch (continuous batching): generation is memory-bound, so several lanes'
  replies cost little more per step than one; the run's lanes share one server instead of queueing on it;
- a prompt cache in host RAM across slots (`--cache-ram`): a conversation continued later (the Analyzer after
  the Researcher, a retry after a novelty verdict) reuses its prefix's KV state instead of reading it again;
- grammar-constrained decoding that draws from the unconstrained distribution first and consults the grammar
  only for the drawn token, so a constrained reply costs what an unconstrained one does.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. LangGraph runs
# nodes on short-lived pool threads, so every server is forked from this one thread, which lives until
# the interpreter exits.
_LAUNCHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evoforge-llama-launcher")
# The server is on loopback: a proxy from the environment must never be asked for it.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SERVER_BINARY_ENV = "EVOFORGE_LLAMA_SERVER"
PROMPT_CACHE_MIB = 1024
"""The server's host-RAM prompt cache: a 1.5B model's KV state takes ~28 KB a token, so 1 GiB holds a dozen
3k-token conversations beside the ones the slots hold."""


class ServerBinaryMissing(FileNotFoundError):
    """llama.cpp's `llama-server` is not installed where EvoForge looks for it."""


def server_binary() -> Path:
    """`$EVOFORGE_LLAMA_SERVER`, else `llama-server` in this interpreter's venv, else on PATH."""
    explicit = os.environ.get(SERVER_BINARY_ENV)
    candidates = [Path(explicit)] if explicit else [Path(sys.prefix) / "bin" / "llama-server"]
    on_path = None if explicit else shutil.which("llama-server")
    for candidate in [*candidates, *([Path(on_path)] if on_path else [])]:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServerBinaryMissing(
        f"llama.cpp's llama-server is not at {candidates[0]}"
        + ("" if explicit else " nor on PATH")
        + "; run `bash scripts/install.sh`, which compiles it for this CPU"
        + ("" if explicit else f", or point ${SERVER_BINARY_ENV} at a build of it")
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]  # (host, port) for AF_INET
        return port


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec: ask the kernel for SIGKILL when the parent goes.

    SIGKILL, not SIGTERM: on SIGTERM the server first finishes the request in flight, which for a long
    generation whose client is gone can take minutes (seen: an orphaned server still generating).
    """
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


SPECULATIVE = "ngram-simple"
"""llama.cpp's speculative decoding by n-gram lookup in the context: no draft model, and the reply keeps the
target model's distribution (each drafted token is kept only where the model samples it). A Researcher's reply
copies much of its prompt (the parent's lines into SEARCH, whole functions it rewrites). Measured on 8 recorded
Researcher calls of a circle_packing run (Qwen2.5-Coder-1.5B, 2 cores, under the reply grammar, 2026-12-04): 70%
of drafted tokens accepted, generation 28.2 tokens/s against 22.5 without, 304 s against 332 s for the 8 calls."""


class LocalModelServer:
    """One `llama-server` process serving a GGUF file on 127.0.0.1 with `slots` parallel sequences.

    Each slot may use the whole `n_ctx`; the slots share one KV pool of `n_ctx * slots` tokens (llama.cpp's
    unified KV cache), so one long conversation never runs out of room because other slots are idle. The
    process runs in its own process group, logs to `<log_dir>/llama-<alias>-<port>.log`, and is stopped by
    `stop()`, at interpreter exit, or by the kernel if this process dies. The chat template is the one stored
    in the GGUF file (Qwen2.5's ChatML template).
    """

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int,
        log_dir: Path,
        alias: str | None = None,
        n_threads: int = 2,
        slots: int = 1,
        speculative: str | None = SPECULATIVE,
        startup_timeout_s: float = 180.0,
    ) -> None:
        if n_ctx < 512:
            raise ValueError(f"n_ctx: expected at least 512, got {n_ctx}")
        if slots < 1:
            raise ValueError(f"slots: expected at least 1, got {slots}")
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.log_dir = Path(log_dir)
        self.alias = alias or self.model_path.stem
        self.n_threads = n_threads
        self.slots = slots
        self.speculative = speculative
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (`http://127.0.0.1:PORT/v1`)."""
        if self.port is None:
            raise RuntimeError("the local model server has not been started")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> LocalModelServer:
        """Start the server and wait until `/v1/models` answers."""
        if self.running:
            return self
        if not self.model_path.is_file():
            raise FileNotFoundError(f"model_path: no GGUF file at {self.model_path}")
        # imported here, not with the package, so `python -m evoforge.llm.cpu_build` (the install script) runs
        # a module the package has not loaded yet
        from evoforge.llm.cpu_build import check_build

        check_build()  # a build for wider instructions than this CPU has would die with SIGILL mid-run
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.log_path = self.log_dir / f"llama-{self.alias}-{self.port}.log"
        command = [
            str(server_binary()),
            "--model", str(self.model_path),
            "--alias", self.alias,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--ctx-size", str(self.n_ctx * self.slots),
            "--parallel", str(self.slots),
            "--kv-unified",
            "--threads", str(self.n_threads),
            "--threads-batch", str(self.n_threads),
            # a KV state per recent prompt, beyond the one each slot holds: the roles' prompts differ (a novelty
            # verdict, a report), and without it each would make the next Researcher call re-read its prompt
            "--cache-ram", str(PROMPT_CACHE_MIB),
            "--no-webui",
            *(["--spec-type", self.speculative] if self.speculative else []),
        ]  # fmt: skip
        parent_pid = os.getpid()
        with self.log_path.open("ab") as log:
            self._process = _LAUNCHER.submit(
                subprocess.Popen,
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: _die_with_parent(parent_pid),
            ).result()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(
                    f"the llama.cpp server for {self.model_path.name} exited during startup:\n{self.log_tail()}"
                )
            try:
                # /health answers 503 while the model loads and 200 once it can serve
                with _DIRECT.open(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or still loading
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(
            f"the llama.cpp server for {self.model_path.name} did not answer within "
            f"{self.startup_timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Kill the server's process group and reap it (no zombie is left).

        SIGKILL at once: on SIGTERM the server first finishes the generation in flight (see
        `_die_with_parent`), so a stop while a model call runs would wait for that call; the server holds
        nothing that needs a clean shutdown.
        """
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            logger.debug("llama.cpp server %s had exited already; reaping it", process.pid)
        process.wait()


_SERVERS: dict[tuple[Path, int, int, int, str | None], LocalModelServer] = {}
_SERVERS_LOCK = threading.Lock()


def get_local_server(
    model_path: Path, *, n_ctx: int, log_dir: Path, alias: str | None = None, n_threads: int = 2, slots: int = 1,
    speculative: str | None = SPECULATIVE,
) -> LocalModelServer:
    """The process-wide server for (model file, context size, threads, slots, speculative decoding), started
    (again) if not running."""
    key = (Path(model_path).resolve(), n_ctx, n_threads, slots, speculative)
    with _SERVERS_LOCK:
        server = _SERVERS.get(key)
        if server is None or not server.running:
            if server is not None:
                logger.warning(
                    "llama.cpp server for %s had exited; restarting:\n%s", key[0].name, server.log_tail()
                )
            server = LocalModelServer(
                key[0], n_ctx=n_ctx, log_dir=log_dir, alias=alias, n_threads=n_threads, slots=slots,
                speculative=speculative,
            ).start()
            _SERVERS[key] = server
        return server


def stop_all_servers() -> None:
    """Stop every server this process started (also runs at interpreter exit)."""
    with _SERVERS_LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for server in servers:
        server.stop()


atexit.register(stop_all_servers)
