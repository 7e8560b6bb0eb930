"""One Postgres database holds node memory, cognition (pgvector) and LangGraph's checkpoints.

`Database.open(None, state_dir)` starts (or joins) the embedded server under `state_dir`; any other
Postgres with pgvector is used by passing its URL. Every connection is autocommit with dict rows,
pgvector's types registered and strings made storable (memory/storable.py); a transaction is opened explicitly (`with conn.transaction():`) where
several statements must succeed together. The pool checks each connection before handing it out, so
a server restart costs the next caller a reconnect, not an error; with the embedded server, a
connection found broken also starts the server again if it is down.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from evoforge.memory.embedded import EmbeddedPostgres
from evoforge.memory.fingerprint import code_hash
from evoforge.memory.storable import store_only_storable_text

if TYPE_CHECKING:
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_EMBEDDING_DIM = 384
MAX_INDEXED_DIM = 2000
"""pgvector's HNSW index takes `vector` columns of at most 2,000 dimensions."""
CONNECTION_KWARGS: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
"""What LangGraph's Postgres savers require; the memory stores share the same connections."""


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Every pooled connection: pgvector's types, and only text Postgres can hold (see storable.py)."""
    register_vector(conn)
    store_only_storable_text(conn)


async def _configure_async(conn: psycopg.AsyncConnection[Any]) -> None:
    store_only_storable_text(conn)


def _rehash_code(conn: psycopg.Connection[Any]) -> None:
    """Version 3: a node's `code_hash` becomes its program's fingerprint (memory/fingerprint.py), so that
    nodes recorded before also catch echoes that only reword comments or rename locals."""
    # a server-side cursor streams the programs in batches: a 100k-node run does not fit in memory at once
    with conn.cursor(name="evoforge_rehash_code") as programs, conn.cursor() as update:
        programs.execute("SELECT id, code FROM nodes")
        while batch := programs.fetchmany(1000):
            update.executemany("UPDATE nodes SET code_hash = %s WHERE id = %s",
                               [(code_hash(code), id_) for id_, code in batch])


MIGRATIONS: tuple[tuple[int, str | Callable[[psycopg.Connection[Any]], None]], ...] = (
    (1, "schema_001_initial.sql"),
    (2, "schema_002_policies.sql"),
    (3, _rehash_code),
    (4, "schema_004_forks.sql"),
    (5, "schema_005_cognition_retired.sql"),
    (6, "schema_006_focus_uses.sql"),
)
"""Schema versions in the order they are applied (an SQL file or a Python step); add new ones at the end,
never edit an applied one."""
_MIGRATION_LOCK_KEY = 0x45766F46
_CHECKPOINT_SETUP_LOCK_KEY = _MIGRATION_LOCK_KEY + 1


class EmbeddingMismatchError(ValueError):
    """The database stores embeddings of another dimension than the configured embedding model."""


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _holds_vectors(conn: psycopg.Connection[Any]) -> bool:
    """Whether any node or cognition item has an embedding yet (an empty database may change model)."""
    # The meta row is written in the transaction that creates these tables, so they exist here.
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM cognition) OR EXISTS (SELECT 1 FROM nodes WHERE embedding IS NOT NULL)"
    ).fetchone()
    return bool(row and row[0])


class Database:
    """A migrated database and a connection pool on it; create with `Database.open`."""

    def __init__(
        self,
        url: str,
        *,
        embedding_dim: int,
        embedding_model: str,
        max_connections: int,
        embedded: EmbeddedPostgres | None = None,
    ) -> None:
        self.url = url
        self.embedding_dim = embedding_dim
        self.embedding_model = embedding_model
        self.embedded = embedded
        """The embedded server this database lives on, or None for an external server."""
        self.vector_version: tuple[int, ...] = ()
        self.pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            url,
            connection_class=psycopg.Connection[DictRow],
            min_size=1,
            max_size=max_connections,
            kwargs=CONNECTION_KWARGS,
            configure=_configure,
            check=self._check_connection,
            open=False,
            name="evoforge",
        )
        self._saver: PostgresSaver | None = None
        self._saver_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        database_url: str | None,
        state_dir: Path,
        embedding_dim: int = DEFAULT_EMBEDDING_DIM,
        *,
        embedding_model: str = DEFAULT_EMBEDDING_MODEL,
        max_connections: int = 8,
    ) -> Database:
        """Connect (starting the embedded server when `database_url` is None), migrate, open the pool."""
        if not 1 <= embedding_dim <= MAX_INDEXED_DIM:
            raise ValueError(f"embedding_dim: expected 1..{MAX_INDEXED_DIM}, got {embedding_dim!r}")
        if max_connections < 2:
            raise ValueError(f"max_connections: the checkpointer needs at least 2, got {max_connections!r}")
        embedded = EmbeddedPostgres.start(state_dir) if database_url is None else None
        url = embedded.url() if embedded is not None else str(database_url)
        database = cls(
            url,
            embedding_dim=embedding_dim,
            embedding_model=embedding_model,
            max_connections=max_connections,
            embedded=embedded,
        )
        database.migrate()
        database.pool.open(wait=True, timeout=30)
        return database

    @property
    def closed(self) -> bool:
        return self.pool.closed

    @property
    def supports_iterative_scan(self) -> bool:
        """pgvector ≥ 0.8 keeps scanning an HNSW index until a filtered query has its k rows."""
        return self.vector_version >= (0, 8, 0)

    def configure_hnsw_scan(self, conn: psycopg.Connection[Any], *, ef_search: int | None = None) -> None:
        """For the rest of `conn`'s open transaction: an HNSW scan goes on until a filtered query has its rows
        (pgvector ≥ 0.8, in distance order), keeping `ef_search` candidates (pgvector's default, 40, when None)."""
        settings = {"hnsw.iterative_scan": "strict_order"} if self.supports_iterative_scan else {}
        if ef_search is not None:
            settings["hnsw.ef_search"] = str(ef_search)
        if settings:
            calls = ", ".join("set_config(%s, %s, true)" for _ in settings)
            conn.execute(f"SELECT {calls}", [value for pair in settings.items() for value in pair])

    def migrate(self) -> int:
        """Create the vector extension and apply pending schema versions; returns the schema version.

        Safe to call from several processes at once (an advisory lock serialises them) and again and
        again (applied versions are recorded in `schema_version`).
        """
        with psycopg.connect(self.url, autocommit=True) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS evoforge_meta (key text PRIMARY KEY, value text NOT NULL)"
            )
            self._check_embedding_meta(conn)
            applied: set[int] = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
            for version, step in MIGRATIONS:
                if version in applied:
                    continue
                if callable(step):
                    step(conn)
                else:
                    sql = resources.files(__package__).joinpath(step).read_text()
                    conn.execute(sql.replace("{embedding_dim}", str(self.embedding_dim)))
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                applied.add(version)
                logger.info("applied schema version %d (%s)", version, getattr(step, "__name__", step))
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            self.vector_version = _version_tuple(row[0]) if row else ()
        return max(applied)

    def _check_embedding_meta(self, conn: psycopg.Connection[Any]) -> None:
        stored = dict(conn.execute("SELECT key, value FROM evoforge_meta").fetchall())
        if "embedding_dim" not in stored:
            conn.execute(
                "INSERT INTO evoforge_meta (key, value) VALUES ('embedding_dim', %s), ('embedding_model', %s)",
                (str(self.embedding_dim), self.embedding_model),
            )
            return
        stored_dim, stored_model = int(stored["embedding_dim"]), stored.get("embedding_model", "?")
        if stored_dim != self.embedding_dim:
            raise EmbeddingMismatchError(
                f"embedding_dim: the database at {self.url} stores {stored_dim}-d embeddings (model "
                f"{stored_model!r}) but {self.embedding_dim} was configured (model {self.embedding_model!r}); "
                "use the original embedding model or another database_url / state_dir"
            )
        if stored_model != self.embedding_model:
            if _holds_vectors(conn):
                raise EmbeddingMismatchError(
                    f"embedding_model: the database at {self.url} stores embeddings from {stored_model!r} but "
                    f"{self.embedding_model!r} was configured (both {stored_dim}-d): similarities between the two "
                    "are meaningless; use the original model or another database_url / state_dir"
                )
            conn.execute(
                "UPDATE evoforge_meta SET value = %s WHERE key = 'embedding_model'", (self.embedding_model,)
            )

    def _check_connection(self, conn: psycopg.Connection[DictRow]) -> None:
        try:
            ConnectionPool.check_connection(conn)
        except psycopg.OperationalError:
            # The pool discards this connection and opens another; make sure there is a server to reach.
            if self.embedded is not None:
                self.embedded.ensure_running()
            raise

    @contextmanager
    def advisory_lock(self, name: str) -> Iterator[None]:
        """Hold the Postgres advisory lock `name` for the block: every other thread or process on this database
        that asks for the same name waits until the block ends.

        The lock is held by a pooled connection of its own (session-level, no transaction open), so the block
        uses the pool's other connections as usual and a failure inside it still releases the lock."""
        with self.pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))

    def checkpointer(self) -> PostgresSaver:
        """LangGraph's `PostgresSaver` on this database's pool, its tables set up (once per object)."""
        from langgraph.checkpoint.postgres import PostgresSaver

        with self._saver_lock:
            if self._saver is None:
                saver = PostgresSaver(self.pool)
                # setup() may not run twice at once (both would insert the same migration rows); the
                # lock is held by a session with no open transaction, so CREATE INDEX CONCURRENTLY
                # inside setup() does not wait for it.
                with self.pool.connection() as lock_conn:
                    lock_conn.execute("SELECT pg_advisory_lock(%s)", (_CHECKPOINT_SETUP_LOCK_KEY,))
                    try:
                        saver.setup()
                    finally:
                        lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_CHECKPOINT_SETUP_LOCK_KEY,))
                self._saver = saver
        return self._saver

    def close(self) -> None:
        self.pool.close()


@asynccontextmanager
async def async_checkpointer(
    database_url: str | None = None, state_dir: Path | None = None
) -> AsyncIterator[AsyncPostgresSaver]:
    """`AsyncPostgresSaver` on its own async pool, set up; for the `langgraph dev` server.

    With `database_url` None it joins the embedded server under `state_dir` (default: the config's).
    """
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    if database_url is None:
        from evoforge.config import default_state_dir

        embedded = await asyncio.to_thread(EmbeddedPostgres.start, state_dir or default_state_dir())
        database_url = embedded.url()
    pool = AsyncConnectionPool(
        database_url,
        connection_class=psycopg.AsyncConnection[DictRow],
        min_size=1,
        max_size=4,
        kwargs=CONNECTION_KWARGS,
        configure=_configure_async,
        check=AsyncConnectionPool.check_connection,
        open=False,
        name="evoforge-checkpoints",
    )
    async with pool:
        saver = AsyncPostgresSaver(pool)
        async with pool.connection() as lock_conn:
            await lock_conn.execute("SELECT pg_advisory_lock(%s)", (_CHECKPOINT_SETUP_LOCK_KEY,))
            try:
                await saver.setup()
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_CHECKPOINT_SETUP_LOCK_KEY,))
        yield saver


_open_databases: dict[tuple[str, str], Database] = {}
_open_databases_lock = threading.Lock()


def get_database(
    database_url: str | None,
    state_dir: Path,
    embedding_dim: int = DEFAULT_EMBEDDING_DIM,
    *,
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
) -> Database:
    """The process-wide `Database` for this URL (or embedded state dir), opened on first use."""
    key = (database_url or "", "" if database_url else str(Path(state_dir).expanduser().absolute()))
    with _open_databases_lock:
        database = _open_databases.get(key)
        if database is None or database.closed:
            database = Database.open(database_url, state_dir, embedding_dim, embedding_model=embedding_model)
            _open_databases[key] = database
        elif (database.embedding_dim, database.embedding_model) != (embedding_dim, embedding_model):
            raise EmbeddingMismatchError(
                f"embedding_dim: {database.url} is open with {database.embedding_dim}-d embeddings from "
                f"{database.embedding_model!r} in this process, got {embedding_dim} from {embedding_model!r}"
            )
        return database
