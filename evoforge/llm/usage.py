"""Calling a chat model once: per-request seed, timing and token accounting."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage

from evoforge.llm.cancellation import ModelCallCancelled, invoke_model

logger = logging.getLogger(__name__)


@dataclass
class Usage:
    """What one or more model calls cost."""

    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    calls: int = 0
    tokens_cached: int = 0
    """Of `tokens_in`, those the server took from its prompt cache instead of reading them (where it says)."""

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            tokens_in=self.tokens_in + other.tokens_in,
            tokens_out=self.tokens_out + other.tokens_out,
            seconds=self.seconds + other.seconds,
            calls=self.calls + other.calls,
            tokens_cached=self.tokens_cached + other.tokens_cached,
        )

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class LLMCallError(RuntimeError):
    """A chat model call failed (network, server, provider error); the cause is chained."""


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate (~4 characters per token for English and code)."""
    return math.ceil(len(text) / 4)


RUN_ID_METADATA = "evoforge_run_id"
"""Metadata key naming the run a call serves (tracing shows it; a scripted model keeps its place per run)."""


def call_model(
    model: BaseChatModel, messages: list[BaseMessage], *, seed: int | None, options: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> tuple[str, Usage]:
    """Invoke `model` once and return the reply text and what it cost.

    `seed` is sent as the request's sampling seed (the OpenAI API's `seed` field), so repeated calls
    with the same prompt can differ even where a server would otherwise reuse one fixed seed;
    None leaves it to the provider. `options` are further request fields (a decoding grammar). `run_id`
    goes into the call's metadata as `RUN_ID_METADATA`.
    """
    started = time.perf_counter()
    kwargs = dict(options or {})
    if seed is not None:
        kwargs["seed"] = seed
    try:
        reply = invoke_model(model, messages, {"metadata": {RUN_ID_METADATA: run_id}} if run_id else None, **kwargs)
    except ModelCallCancelled:
        raise
    except Exception as exc:
        # Provider errors come in many types (openai.APIError, httpx errors, scripted failures):
        # callers handle one type and read the cause from the chain.
        logger.warning("chat model call failed: %s: %s", type(exc).__name__, exc)
        raise LLMCallError(f"chat model call failed: {type(exc).__name__}: {exc}") from exc
    seconds = time.perf_counter() - started
    text = reply.text
    metadata = reply.usage_metadata if isinstance(reply, AIMessage) else None
    tokens_cached = 0
    if metadata:
        tokens_in, tokens_out = metadata["input_tokens"], metadata["output_tokens"]
        tokens_cached = int((metadata.get("input_token_details") or {}).get("cache_read") or 0)
    else:
        # The provider reported no usage: estimate from characters so budgets still advance.
        tokens_in = sum(estimate_tokens(m.text) for m in messages)
        tokens_out = estimate_tokens(text)
    return text, Usage(tokens_in=tokens_in, tokens_out=tokens_out, seconds=seconds, calls=1,
                       tokens_cached=tokens_cached)
