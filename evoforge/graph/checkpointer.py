"""The `langgraph dev` server's persistence: checkpoints in the same Postgres as node memory.

langgraph.json names `postgres_checkpointer`; the server enters it once at start-up and leaves it when it
shuts down. The database is the one a CLI run would use: `EVOFORGE_DATABASE_URL`, else the embedded server
under the state directory. On shutdown the server closes its databases and stops every embedded server it
joined (for its checkpoints or for a thread's run) unless another process still uses it, so a stopped
`langgraph dev` leaves no Postgres behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from evoforge.config import RunConfig
from evoforge.memory.database import async_checkpointer
from evoforge.memory.embedded import stop_joined_servers
from evoforge.runtime.services import clear_services

log = logging.getLogger(__name__)


def _release_databases() -> None:
    clear_services()
    stopped = stop_joined_servers()
    if stopped:
        log.info("stopped the embedded Postgres servers at %s", ", ".join(map(str, stopped)))


@asynccontextmanager
async def postgres_checkpointer() -> AsyncIterator[AsyncPostgresSaver]:
    defaults = RunConfig()
    try:
        async with async_checkpointer(defaults.database_url, defaults.state_dir) as saver:
            yield saver
    finally:
        await asyncio.to_thread(_release_databases)
