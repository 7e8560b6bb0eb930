"""Model calls that a cancelled run abandons at once.

The agents are synchronous functions; an async runner (the `langgraph dev` server) runs each in a worker
thread. Cancelling such a run (`runs.cancel`) cancels the runner's task, but a thread blocked in an HTTP call
to the model cannot be interrupted: the run stayed busy until the model answered (minutes on a CPU), then went
on. So a node run by an async runner is wrapped with `cancellable`: its thread sends each model call back to the
runner's event loop as `ainvoke` (`invoke_model`) and waits for it there; when the run is cancelled, the wrapper
cancels those calls, whose HTTP requests are closed at once, and the waiting thread raises `ModelCallCancelled`
instead of going on with the round. A synchronous run (the CLI) calls the model directly, as before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig

T = TypeVar("T")


class ModelCallCancelled(Exception):
    """The run this model call served was cancelled. Not an LLMCallError: nothing may retry it."""


@dataclass
class _LoopBridge:
    loop: asyncio.AbstractEventLoop
    pending: set[concurrent.futures.Future[Any]] = field(default_factory=set)
    cancelled: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            for future in self.pending:
                future.cancel()


_BRIDGE: contextvars.ContextVar[_LoopBridge | None] = contextvars.ContextVar("evoforge_model_bridge", default=None)


def invoke_model(model: BaseChatModel, messages: list[BaseMessage], config: RunnableConfig | None,
                 **kwargs: Any) -> Any:
    """`model.invoke(...)`, or, inside a `cancellable` node, the same call made on the runner's event loop so
    that cancelling the run cancels it; raises ModelCallCancelled then."""
    bridge = _BRIDGE.get()
    if bridge is None:
        return model.invoke(messages, config, **kwargs)
    with bridge.lock:
        if bridge.cancelled:
            raise ModelCallCancelled("the run was cancelled")
        future = asyncio.run_coroutine_threadsafe(model.ainvoke(messages, config, **kwargs), bridge.loop)
        bridge.pending.add(future)
    try:
        return future.result()
    except concurrent.futures.CancelledError as exc:
        raise ModelCallCancelled("the run was cancelled while it waited on a model call") from exc
    finally:
        with bridge.lock:
            bridge.pending.discard(future)


def cancellable(node: Callable[..., T]) -> Callable[..., Any]:
    """The async twin of a synchronous node (same parameters): `node` in a worker thread whose model calls
    (`invoke_model`) are cancelled with the task that awaits it."""

    @functools.wraps(node)
    async def run(*args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        bridge = _LoopBridge(loop)
        context = contextvars.copy_context()
        context.run(_BRIDGE.set, bridge)
        work = loop.run_in_executor(None, functools.partial(context.run, node, *args, **kwargs))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            bridge.cancel()
            # wait for the thread to stop (its model call raises at once), so nothing it does outlives the run
            # ModelCallCancelled, as expected, or whatever else the thread ended on
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(work), timeout=30)
            raise

    return run
