"""The `langgraph dev` server's persistence: checkpoints in the same Postgres as node memory.

langgraph.json names `postgres_checkpointer`; the server enters it once at start-up. The database is the
one a CLI run would use: `EVOFORGE_DATABASE_URL`, else the embedded server under the state directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from evoforge.config import RunConfig
from evoforge.memory.database import async_checkpointer


@asynccontextmanager
async def postgres_checkpointer() -> AsyncIterator[AsyncPostgresSaver]:
    defaults = RunConfig()
    async with async_checkpointer(defaults.database_url, defaults.state_dir) as saver:
        yield saver
