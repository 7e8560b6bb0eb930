"""Stopping the embedded model server while it is busy: no wait for the generation in flight, no zombie.

A stand-in process plays the llama.cpp server's observed behaviour (no real model is started): on SIGTERM it
first finishes the "generation" it is running, then exits 0.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from evoforge.llm.llama_server import LocalModelServer

BUSY_SERVER = """
import signal, sys, time
finishing = []
signal.signal(signal.SIGTERM, lambda *_: finishing.append(True))
print("generating", flush=True)
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    time.sleep(0.05)
    if finishing:
        time.sleep(3)  # the request in flight is finished first, as llama.cpp's server does
        sys.exit(0)
"""


def test_stop_kills_a_busy_server_at_once_and_reaps_it(tmp_path: Path) -> None:
    server = LocalModelServer(tmp_path / "model.gguf", n_ctx=512, log_dir=tmp_path)
    process = subprocess.Popen([sys.executable, "-c", BUSY_SERVER], stdout=subprocess.PIPE,
                               start_new_session=True)
    assert process.stdout is not None and process.stdout.readline() == b"generating\n"
    server._process = process  # what start() holds after launching the real server
    server.stop()
    # killed, not left to finish its generation (which would end it with status 0), and reaped: no zombie
    assert process.returncode == -9
    assert not Path(f"/proc/{process.pid}").exists()
    assert not server.running and server.pid is None
