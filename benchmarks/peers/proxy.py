"""A counting proxy in front of an OpenAI-compatible server: every model call of every system, logged alike.

Each system under benchmark (EvoForge, OpenEvolve, ShinkaEvolve) is pointed at the proxy instead of the model
server, so their calls are counted by one piece of code rather than by each system's own bookkeeping. Requests go
upstream byte for byte (the proxy never rewrites a body: a peer's `seed`, `temperature` or `stream` reach the
server as the peer sent them). For each `/chat/completions` or `/completions` call one JSON line is appended to
the log:

    {"t": start (unix s), "seconds", "system": label, "path", "status", "prompt_tokens", "completion_tokens",
     "estimated": bool, "reply": assistant text (clipped), "error": str | null}

Token counts come from the upstream reply's `usage`; a streamed reply without a usage chunk is counted at four
characters per token and marked `"estimated": true`.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

REPLY_CHARS = 4000
"""Replies are clipped in the log: enough to see what a model wrote, small enough for hours of calls."""
CHARS_PER_TOKEN = 4
UPSTREAM_TIMEOUT_S = 3600.0
"""A CPU model takes minutes per call; the proxy must never be the one to give up first."""
COUNTED_SUFFIXES = ("/chat/completions", "/completions")
# Hop-by-hop headers belong to one connection, not to the message; the proxy frames its own replies.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                        "upgrade", "content-length", "host"})
# Asking upstream for an uncompressed body lets the proxy read the usage out of it.
REQUEST_DROPPED = HOP_BY_HOP | {"accept-encoding"}


class CountingProxy:
    """A threaded HTTP proxy to `upstream` (e.g. ``http://127.0.0.1:8080/v1``) logging each completion call.

    `start()` returns the base URL to give a system in place of `upstream`; `set_label()` names the system the
    following calls belong to (a call keeps the label it started with); `records()` reads the log back;
    `wait_idle()` waits out calls still running; `stop()` shuts the proxy down.
    """

    def __init__(self, upstream: str, log_path: Path) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http(s) URL such as http://127.0.0.1:8080/v1, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.log_path = Path(log_path)
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self._label = "unlabelled"
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Listen on a free local port and return the base URL that stands for `upstream`."""
        if self._server is not None:
            raise RuntimeError("the proxy is already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="counting-proxy", daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}{self._prefix}"

    def set_label(self, system: str) -> None:
        """Attribute the calls that start from now on to `system`."""
        with self._lock:
            self._label = system

    @property
    def in_flight(self) -> int:
        """How many requests are being served right now."""
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight (True) or `timeout_s` passed (False).

        A peer killed at its budget may leave a call running on the model server; the next system should not
        start while that call still holds the server's cores.
        """
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def records(self) -> list[dict[str, Any]]:
        """Every call logged so far (all labels), oldest first."""
        if not self.log_path.is_file():
            return []
        with self._lock:
            lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def stop(self) -> None:
        """Stop listening; requests already being served finish in their daemon threads."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def _begin(self) -> str:
        with self._lock:
            self._in_flight += 1
            return self._label

    def _end(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=UPSTREAM_TIMEOUT_S)

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        with self._lock, self.log_path.open("a", encoding="utf-8") as out:
            out.write(line)


def _handler_for(proxy: CountingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        owner = proxy

    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: CountingProxy
    # One request per connection: the proxy closes after each reply, so a streamed reply needs no re-framing.
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches on)
        self._forward()

    def do_POST(self) -> None:  # noqa: N802
        self._forward()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("proxy: " + format, *args)

    def _forward(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        counted = self.command == "POST" and self.path.split("?")[0].endswith(COUNTED_SUFFIXES)
        label = proxy._begin()
        started, wall = time.time(), time.monotonic()
        reply = _Reply()
        try:
            self._relay(body, reply)
        finally:
            proxy._end()
            if counted:
                proxy._append(reply.record(label, self.path, body, started, time.monotonic() - wall))

    def _relay(self, body: bytes, reply: _Reply) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in REQUEST_DROPPED}
        conn = self.owner._connect()
        try:
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                upstream = conn.getresponse()
            except OSError as exc:
                reply.status, reply.error = 502, f"upstream {self.owner.upstream} unreachable: {exc}"
                self._send_error(reply.error)
                return
            reply.status = upstream.status
            streamed = "text/event-stream" in (upstream.getheader("Content-Type") or "")
            try:
                self.send_response(upstream.status)
                for key, value in upstream.getheaders():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                if streamed:
                    self.end_headers()
                    for line in iter(upstream.readline, b""):
                        reply.feed_sse(line)
                        self.wfile.write(line)
                        self.wfile.flush()
                else:
                    data = upstream.read()
                    reply.feed_json(data)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
            except (http.client.HTTPException, OSError) as exc:
                # Mostly a client that went away (a peer killed at its budget): the call still ran upstream and
                # is logged; otherwise an upstream reply cut off midway.
                reply.error = f"relay interrupted: {exc!r}"
                log.info("proxy: %s", reply.error)
        finally:
            conn.close()

    def _send_error(self, message: str) -> None:
        data = json.dumps({"error": {"message": message, "type": "proxy_error"}}).encode()
        try:
            self.send_response(502)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            log.info("proxy: client gone before the error reply: %s", exc)


class _Reply:
    """What one upstream reply said: status, text and usage, from a JSON body or from SSE chunks."""

    def __init__(self) -> None:
        self.status = 0
        self.error: str | None = None
        self.text: list[str] = []
        self.usage: dict[str, Any] | None = None
        self.streamed = False

    def feed_json(self, data: bytes) -> None:
        try:
            payload = json.loads(data)
        except ValueError as exc:
            self.error = f"reply is not JSON: {exc}"
            return
        if isinstance(payload, dict):
            self._take(payload, delta=False)

    def feed_sse(self, line: bytes) -> None:
        self.streamed = True
        text = line.decode("utf-8", errors="replace").strip()
        if not text.startswith("data:"):
            return
        data = text[len("data:"):].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            log.debug("proxy: unparsable SSE chunk %r: %s", data[:200], exc)
            return
        if isinstance(chunk, dict):
            self._take(chunk, delta=True)

    def _take(self, payload: dict[str, Any], *, delta: bool) -> None:
        if isinstance(payload.get("usage"), dict):
            self.usage = payload["usage"]
        if isinstance(payload.get("error"), dict | str) and self.error is None:
            self.error = json.dumps(payload["error"])[:500]
        for choice in payload.get("choices") or []:
            part = choice.get("delta" if delta else "message") or {}
            content = part.get("content") if isinstance(part, dict) else None
            if content is None:
                content = choice.get("text")  # the legacy /completions shape
            if isinstance(content, str):
                self.text.append(content)

    def record(self, label: str, path: str, request: bytes, started: float, seconds: float) -> dict[str, Any]:
        reply = "".join(self.text)
        usage = self.usage or {}
        estimated = self.usage is None and self.streamed
        if estimated:
            prompt_tokens = math.ceil(len(_prompt_text(request)) / CHARS_PER_TOKEN)
            completion_tokens = math.ceil(len(reply) / CHARS_PER_TOKEN)
        else:
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
        return {"t": started, "seconds": round(seconds, 3), "system": label, "path": path.split("?")[0],
                "status": self.status, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "estimated": estimated, "reply": reply[:REPLY_CHARS], "error": self.error}


def _prompt_text(request: bytes) -> str:
    """The text a request sends the model (message contents or the legacy prompt), for the token estimate."""
    try:
        payload = json.loads(request)
    except ValueError:
        return request.decode("utf-8", errors="replace")
    if not isinstance(payload, dict):
        return ""
    messages = payload.get("messages") or []
    parts = [m.get("content") for m in messages if isinstance(m, dict)]
    parts.append(payload.get("prompt"))
    return "".join(p for p in parts if isinstance(p, str))
