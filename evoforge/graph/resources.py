"""Process-wide handles the nodes share: the database, stores, sandbox, embedder and chat models.

Nodes receive only plain state and the run configuration (the graph's context); everything with a
connection or a process behind it is looked up here, once per process and configuration.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.config import get_config
from langgraph.runtime import Runtime

from evoforge.cognition.embeddings import Embedder, get_embedder
from evoforge.cognition.store import CognitionStore
from evoforge.config import RunConfig, Role
from evoforge.llm.models import clear_model_cache, make_chat_model
from evoforge.memory.database import Database, get_database
from evoforge.memory.nodes import NodeStore
from evoforge.sandbox import Sandbox, get_sandbox
from evoforge.tasks.spec import TaskSpec, load_task

log = logging.getLogger(__name__)


@dataclass
class Resources:
    config: RunConfig
    task: TaskSpec
    database: Database
    nodes: NodeStore
    cognition: CognitionStore
    embedder: Embedder
    sandbox: Sandbox
    _models: dict[Role, BaseChatModel] = field(default_factory=dict)

    def chat_model(self, role: Role) -> BaseChatModel:
        if role not in self._models:
            self._models[role] = make_chat_model(self.config.model_for(role), role=role, state_dir=self.config.state_dir)
        return self._models[role]

    def run_dir(self, run_id: str) -> Path:
        return self.config.runs_dir / run_id


_lock = threading.Lock()
_cache: dict[str, Resources] = {}


def open_store(config: RunConfig) -> tuple[Database, NodeStore]:
    database = get_database(config.database_url, config.state_dir)
    return database, NodeStore(database)


def get_resources(config: RunConfig) -> Resources:
    """Resources for this configuration, built once per process."""
    key = config.model_dump_json()
    with _lock:
        if key not in _cache:
            database, nodes = open_store(config)
            embedder = get_embedder(config.cognition.embedding_model)
            _cache[key] = Resources(
                config=config,
                task=load_task(config.task),
                database=database,
                nodes=nodes,
                cognition=CognitionStore(database, embedder),
                embedder=embedder,
                sandbox=get_sandbox(config.sandbox.backend, config.sandbox.isolation),
            )
        return _cache[key]


def clear_resources() -> None:
    """Forget every handle (closing their databases) and cached chat model; the next use builds anew."""
    with _lock:
        for res in _cache.values():
            res.database.close()
        _cache.clear()
    clear_model_cache()


def thread_run_id() -> str:
    """The thread id of the current graph invocation (a run started through the thread API uses it)."""
    configurable: dict[str, Any] = get_config().get("configurable", {})
    thread_id = configurable.get("thread_id")
    if not thread_id:
        raise ValueError("the graph needs a run_id in its input or a thread_id in its config; got neither")
    return str(thread_id)


def resolve_config(run_id: str, runtime: Runtime[RunConfig]) -> RunConfig:
    """The run's configuration: the context given with this invocation, else the one recorded for the run.

    A resume through the thread API often carries no context; the run's own record then decides, so a
    resumed run never silently falls back to defaults.
    """
    if runtime.context is not None:
        return runtime.context
    defaults = RunConfig()
    if run_id:
        _, nodes = open_store(defaults)
        run = nodes.get_run(run_id)
        if run is not None:
            return RunConfig(**run.config)
    return defaults


def resources_for(run_id: str, runtime: Runtime[RunConfig]) -> Resources:
    return get_resources(resolve_config(run_id, runtime))
