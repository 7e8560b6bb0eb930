"""Sandbox backends: run an evaluation command under hard limits (`get_sandbox` picks one by name)."""

from __future__ import annotations

from evoforge.sandbox.base import Job, Limits, Sandbox, SandboxResult
from evoforge.sandbox.identity import SandboxError

BACKENDS = ("local",)
"""Backends this module can build; docker and ray live in their own modules."""


def get_sandbox(backend: str = "local", isolation: str = "auto") -> Sandbox:
    """The sandbox for `backend`; `isolation` applies to the local backend ("auto" | "bubblewrap" | "none")."""
    if backend == "local":
        from evoforge.sandbox.local import LocalSandbox

        return LocalSandbox(isolation=isolation)  # type: ignore[arg-type]  # validated by LocalSandbox
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


__all__ = ["BACKENDS", "Job", "Limits", "Sandbox", "SandboxError", "SandboxResult", "get_sandbox"]
