"""One chat model per agent role, from a ModelConfig: an OpenAI-compatible endpoint, the embedded local
model (llama.cpp), or a scripted replay."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from evoforge.config import ConfigError, ModelConfig, Role
from evoforge.llm.local import ensure_model_file, get_local_server
from evoforge.llm.scripted import ScriptedChatModel

_MODELS: dict[tuple[str, str, str | None], BaseChatModel] = {}
_MODELS_LOCK = threading.Lock()


def models_dir() -> Path:
    """Where assembled GGUF files are kept: `$EVOFORGE_MODELS_DIR`, else `~/.cache/evoforge/models`.

    A cache shared by every run and state directory, since the files are large and never change.
    """
    explicit = os.environ.get("EVOFORGE_MODELS_DIR")
    if explicit:
        return Path(explicit)
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "evoforge" / "models"


def _openai_model(cfg: ModelConfig, role: Role) -> ChatOpenAI:
    api_key = os.environ.get(cfg.api_key_env)
    if not api_key:
        raise ConfigError(
            f"llm.api_key_env: provider 'openai' reads its API key from the environment variable "
            f"{cfg.api_key_env!r}, which is not set"
        )
    return ChatOpenAI(
        base_url=cfg.base_url,
        model=cfg.model,
        api_key=api_key,
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens_for(role),
        timeout=cfg.timeout_s,
        max_retries=2,
    )


def _local_server_url(cfg: ModelConfig, state_dir: Path) -> str:
    if cfg.base_url:
        return cfg.base_url
    model_file = ensure_model_file(cfg.model, models_dir())
    server = get_local_server(
        model_file,
        n_ctx=cfg.context_tokens,
        log_dir=Path(state_dir) / "logs",
        alias=cfg.model,
        n_threads=cfg.threads,
        slots=cfg.slots or 1,
        speculative=None if cfg.speculative == "none" else cfg.speculative,
    )
    return server.url


def _local_model(cfg: ModelConfig, role: Role, server_url: str) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server_url,
        model=cfg.model,
        api_key="local",
        temperature=cfg.temperature,
        # langchain-openai sends `max_tokens` as `max_completion_tokens`; llama.cpp's server reads both, as do
        # other OpenAI-compatible local servers the older name: send that one
        extra_body={"max_tokens": cfg.max_tokens_for(role)},
        timeout=cfg.timeout_s,
        max_retries=2,
        # The server is on loopback: never route it through a proxy from the environment.
        http_client=httpx.Client(trust_env=False),
        http_async_client=httpx.AsyncClient(trust_env=False),
    )


def _build(cfg: ModelConfig, role: Role, server_url: str | None) -> BaseChatModel:
    if cfg.provider == "openai":
        return _openai_model(cfg, role)
    if cfg.provider == "local" and server_url is not None:
        return _local_model(cfg, role, server_url)
    if cfg.provider == "scripted":
        if not cfg.script:
            raise ConfigError("llm.script: provider 'scripted' needs a script file, got None")
        return ScriptedChatModel.from_file(cfg.script, role=role)
    raise ConfigError(f"llm.provider: expected local | openai | scripted, got {cfg.provider!r}")


def make_chat_model(cfg: ModelConfig, *, role: Role, state_dir: Path) -> BaseChatModel:
    """The chat model for `role`, built once per (config, role) in this process.

    `openai` needs the key in the environment variable named by `cfg.api_key_env`; `local` assembles
    the GGUF file and starts (or reuses) the llama.cpp server; `scripted` replays `cfg.script`.
    """
    with _MODELS_LOCK:
        server_url = _local_server_url(cfg, state_dir) if cfg.provider == "local" else None
        # The server URL is part of the key: a server that died and was restarted has a new port.
        key = (cfg.model_dump_json(), role, server_url)
        if key not in _MODELS:
            _MODELS[key] = _build(cfg, role, server_url)
        return _MODELS[key]


def grammar_options(cfg: ModelConfig, model: BaseChatModel, grammar: str | None) -> dict[str, Any]:
    """Invoke keyword arguments that constrain a call's decoding to `grammar` (GBNF) on a llama.cpp server;
    none for other providers, which would reject the field, or when `cfg.constrained` is off."""
    if grammar is None or cfg.provider != "local" or not cfg.constrained or not isinstance(model, ChatOpenAI):
        return {}
    # a per-call extra_body replaces the model's own, which carries max_tokens: merge them
    return {"extra_body": {**(model.extra_body or {}), "grammar": grammar}}


def clear_model_cache() -> None:
    """Forget the cached chat models (servers keep running; see `stop_all_servers`)."""
    with _MODELS_LOCK:
        _MODELS.clear()
