"""The run-time services the nodes share: the database, stores, sandbox, embedder and chat models.

Nodes receive only plain state and the run configuration (the graph's context); everything with a
connection or a process behind it is looked up here, once per process and configuration.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, TypeGuard

from langchain_core.language_models import BaseChatModel
from langgraph.config import get_config
from langgraph.runtime import Runtime

from evoforge.cognition.embeddings import Embedder, embedding_identity, get_embedder
from evoforge.cognition.store import CognitionStore
from evoforge.config import ROLES, ConfigError, Role, RunConfig
from evoforge.llm.models import clear_model_cache, make_chat_model
from evoforge.memory.database import Database, get_database
from evoforge.memory.nodes import NodeStore
from evoforge.sandbox import Sandbox, sandbox_for
from evoforge.tasks.spec import TaskSpec, load_task

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: RunConfig
    task: TaskSpec
    database: Database
    nodes: NodeStore
    cognition: CognitionStore
    embedder: Embedder
    sandbox: Sandbox
    evaluation_slots: threading.BoundedSemaphore
    """Evaluations running at once across the process's lanes, up to the backend's capacity."""

    def chat_model(self, role: Role) -> BaseChatModel:
        # asked of make_chat_model on every call, not kept here: it restarts an embedded server that died (the
        # kernel's OOM killer, a crash) and hands out a model for the new port, where a model kept from before
        # would fail every later call of the run at once
        return make_chat_model(self.config.model_for(role), role=role, state_dir=self.config.state_dir)


_lock = threading.Lock()
_cache: dict[str, Services] = {}


def open_store(config: RunConfig) -> tuple[Database, NodeStore]:
    """The run database, checked against the configured embedding model's name and dimension."""
    model, dim = embedding_identity(config.cognition)
    database = get_database(config.database_url, config.state_dir, dim, embedding_model=model)
    return database, NodeStore(database)


def embedder_for(config: RunConfig) -> Embedder:
    settings = config.cognition
    return get_embedder(settings.embedding_model, settings.embedding_base_url, settings.embedding_api_key_env)


def get_services(config: RunConfig) -> Services:
    """Services for this configuration, built once per process."""
    key = config.model_dump_json()
    with _lock:
        if key not in _cache:
            database, nodes = open_store(config)
            embedder = embedder_for(config)
            sandbox = sandbox_for(config.sandbox)  # with its docker/ray settings; shared with the Engineer
            capacity = getattr(sandbox, "capacity", None) or os.cpu_count() or 1
            resources = Services(
                config=config,
                task=load_task(config.task),
                database=database,
                nodes=nodes,
                cognition=CognitionStore(database, embedder),
                embedder=embedder,
                sandbox=sandbox,
                evaluation_slots=threading.BoundedSemaphore(capacity),
            )
            check_models(resources)
            _cache[key] = resources
        return _cache[key]


def check_models(res: Services) -> None:
    """Build now each model the run will call whose building costs nothing (scripted, OpenAI-compatible), so
    a missing script file or API key stops the run before its first step has done anything; the local model
    is started by its first call. A configuration that sets no `llm` is told which default it gets."""
    config = res.config
    if "llm" not in config.model_fields_set:
        log.warning("the run's configuration sets no llm: every role without a model of its own in `roles` uses "
                    "the default, provider %r, model %r", config.llm.provider, config.llm.model)
    for role in ROLES:
        settings = config.model_for(role)
        if settings.provider == "local" or (role == "static_review" and not config.llm_static_review):
            continue
        try:
            res.chat_model(role)
        except ValueError as exc:  # a ConfigError, or a script that cannot be read or parsed
            where = f"roles.{role}" if role in config.roles else "llm"
            raise ConfigError(f"{where}: the {role} model cannot be built: {exc}") from exc


def clear_services() -> None:
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


def context_given(context: RunConfig | None) -> TypeGuard[RunConfig]:
    """Whether an invocation carried a configuration of its own.

    The dev server turns a run without context into `{}`, which LangGraph coerces into a RunConfig of
    defaults (plus `EVOFORGE_*` values): a context equal to that counts as none.
    """
    return context is not None and context != RunConfig()


def resolve_config(run_id: str, runtime: Runtime[RunConfig]) -> RunConfig:
    """The run's configuration: the context given with this invocation, else the one recorded for the run.

    A resume through the thread API often carries no context; the run's own record then decides, so a
    resumed run never silently falls back to defaults.
    """
    context = runtime.context
    if context_given(context):
        return context
    defaults = RunConfig()
    if run_id:
        _, nodes = open_store(defaults)
        run = nodes.get_run(run_id)
        if run is not None:
            return RunConfig(**run.config)
    return defaults


def services_for(run_id: str, runtime: Runtime[RunConfig]) -> Services:
    return get_services(resolve_config(run_id, runtime))
