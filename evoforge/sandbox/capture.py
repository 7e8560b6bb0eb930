"""Bounded capture of a child's output stream: the head and the tail are kept, the middle is dropped.

A candidate may print gigabytes; the memory a capture holds never exceeds its limit (plus one read chunk).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import IO

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


class StreamCapture:
    """Drains one pipe on a daemon thread, keeping at most `limit` bytes (half head, half tail).

    `on_flood` is called once when the stream has produced more than `flood_bytes` in total, so the
    supervisor can stop a job that does nothing but print. With `stream` None nothing is drained: the owner
    pushes data with `feed()` (the docker backend demultiplexes one socket into two captures).
    """

    def __init__(self, stream: IO[bytes] | None, limit: int, flood_bytes: int, on_flood: Callable[[], None]):
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self._stream = stream
        self._head_cap = limit // 2
        self._tail_cap = limit - self._head_cap
        self._flood_bytes = flood_bytes
        self._on_flood = on_flood
        self._head = bytearray()
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self.total_bytes = 0
        self._flooded = False
        self._thread = threading.Thread(target=self._drain, name="sandbox-capture", daemon=True)

    def start(self) -> StreamCapture:
        self._thread.start()
        return self

    def join(self, timeout: float) -> bool:
        """Wait for end of stream; False if the pipe is still open after `timeout` seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def dropped_bytes(self) -> int:
        return self.total_bytes - len(self._head) - self._tail_size

    def text(self) -> str:
        """The captured text; a marker in the middle says how many bytes were dropped."""
        tail = b"".join(self._tail)
        if self.dropped_bytes <= 0:
            return (bytes(self._head) + tail).decode("utf-8", errors="replace")
        marker = f"\n[... {self.dropped_bytes} bytes dropped by the sandbox (output limit) ...]\n"
        return self._head.decode("utf-8", errors="replace") + marker + tail.decode("utf-8", errors="replace")

    def feed(self, chunk: bytes) -> None:
        """Count and keep `chunk`; calls `on_flood` the first time the total passes `flood_bytes`."""
        self.total_bytes += len(chunk)
        self._keep(chunk)
        if not self._flooded and self.total_bytes > self._flood_bytes:
            self._flooded = True
            self._on_flood()

    def _drain(self) -> None:
        assert self._stream is not None, "start() needs a stream to drain"
        fd = self._stream.fileno()
        try:
            while chunk := os.read(fd, _CHUNK):
                self.feed(chunk)
        except OSError as exc:
            log.warning("reading a sandboxed job's output failed: %s", exc)
        finally:
            self._stream.close()

    def _keep(self, chunk: bytes) -> None:
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if not chunk or self._tail_cap == 0:
            return
        self._tail.append(chunk)
        self._tail_size += len(chunk)
        while self._tail_size - len(self._tail[0]) >= self._tail_cap:
            self._tail_size -= len(self._tail.popleft())
        excess = self._tail_size - self._tail_cap
        if excess > 0:
            self._tail[0] = self._tail[0][excess:]
            self._tail_size -= excess
