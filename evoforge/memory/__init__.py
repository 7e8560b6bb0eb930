"""Node memory: one Postgres database (embedded or any DSN) with runs, nodes, selections and cognition."""

from evoforge.memory.database import (
    Database,
    EmbeddingMismatchError,
    async_checkpointer,
    get_database,
)
from evoforge.memory.embedded import EmbeddedPostgres, EmbeddedServerError
from evoforge.memory.fingerprint import code_hash
from evoforge.memory.nodes import NodeRecord, NodeStore, RunRecord, SelectionRecord
from evoforge.memory.sampling import POLICIES, Selection, archive_node, select_context
from evoforge.memory.status import NODE_STATUSES

__all__ = [
    "NODE_STATUSES",
    "POLICIES",
    "Database",
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "EmbeddingMismatchError",
    "NodeRecord",
    "NodeStore",
    "RunRecord",
    "Selection",
    "SelectionRecord",
    "archive_node",
    "async_checkpointer",
    "code_hash",
    "get_database",
    "select_context",
]
