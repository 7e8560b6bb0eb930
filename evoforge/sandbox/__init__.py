"""Sandbox backends: run an evaluation command under hard limits (`get_sandbox` picks one by name)."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from evoforge.sandbox.base import Job, Limits, Sandbox, SandboxResult
from evoforge.sandbox.identity import SandboxError

if TYPE_CHECKING:
    from evoforge.config import SandboxConfig

BACKENDS = ("local", "docker", "ray")
"""Backends `get_sandbox` can build (docker and ray import their SDKs only when chosen)."""


def get_sandbox(backend: str = "local", isolation: str = "auto", settings: SandboxConfig | None = None) -> Sandbox:
    """The sandbox for `backend`; `isolation` applies to the local backend ("auto" | "bubblewrap" | "none")
    and to ray workers running it; `settings` carries the docker and ray sections (defaults when None)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "local":
        from evoforge.sandbox.local import LocalSandbox

        return LocalSandbox(isolation=isolation)  # type: ignore[arg-type]  # validated by LocalSandbox
    from evoforge.config import SandboxConfig

    settings = settings or SandboxConfig()
    if backend == "docker":
        from evoforge.sandbox.docker import DockerSandbox

        docker = settings.docker
        return DockerSandbox(base_url=docker.base_url, image=docker.image, python=docker.python,
                             network=docker.network, capacity=docker.capacity)
    from evoforge.sandbox.ray_backend import RaySandbox

    return RaySandbox(settings.model_copy(update={"isolation": isolation}))


_cache: dict[tuple[str, str], Sandbox] = {}
_cache_lock = threading.Lock()


def sandbox_for(settings: SandboxConfig, backend: str | None = None) -> Sandbox:
    """The sandbox for `backend` (default: `settings.backend`) built from `settings`, once per process:
    a task stage may name its own backend, and a docker or ray backend is costly to set up."""
    backend = backend or settings.backend
    key = (backend, settings.model_dump_json())
    with _cache_lock:
        if key not in _cache:
            _cache[key] = get_sandbox(backend, settings.isolation, settings)
        return _cache[key]


def close_sandboxes() -> None:
    """Close every sandbox `sandbox_for` built (a Ray instance started here stops) and forget them."""
    with _cache_lock:
        sandboxes = list(_cache.values())
        _cache.clear()
    for sandbox in sandboxes:
        close = getattr(sandbox, "close", None)
        if close is not None:
            close()


def sandbox_capacity(sandbox: Sandbox) -> int:
    """How many evaluations `sandbox` runs at once: its `capacity`, else this machine's CPU count."""
    capacity = getattr(sandbox, "capacity", None)
    return int(capacity) if capacity else os.cpu_count() or 1


__all__ = ["BACKENDS", "Job", "Limits", "Sandbox", "SandboxError", "SandboxResult", "close_sandboxes",
           "get_sandbox", "sandbox_capacity", "sandbox_for"]
