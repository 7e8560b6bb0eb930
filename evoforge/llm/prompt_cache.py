"""A RAM prompt cache for llama-cpp-python's server whose size is what it really holds.

llama-cpp-python's `LlamaRAMCache` keeps one `LlamaState` per recent prompt and evicts by the KV bytes alone
(`llama_state_size`). Each state also carries a copy of the context's logits, `scores`: up to `n_batch` rows
of the whole vocabulary, 512 x 151,936 floats = 311 MB for Qwen2.5, against ~28 KB of KV state per token.
Measured here with a 1 GiB cache: every ~1,000-token prompt added ~690 MB to the server's RSS, so a cache
"of 1 GiB" grew past the machine's memory within a few dozen calls and the kernel killed the server, and every
later call of the run failed at once.

The server never reads those logits back: it builds its model with `logits_all=False`, where sampling happens
inside llama.cpp's sampler chain and `scores` only serve `logprobs` (which `logits_all=False` refuses).
`BoundedRAMCache` keeps one row of them (`load_state` broadcasts it back into place) and counts every byte an
entry holds. `install()` makes the server build it in place of `LlamaRAMCache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import llama_cpp
from llama_cpp.llama_cache import LlamaRAMCache


def entry_bytes(state: Any) -> int:
    """What one cached `LlamaState` holds in memory: its KV state, its logits rows and its token ids."""
    return int(state.llama_state_size) + int(state.scores.nbytes) + int(state.input_ids.nbytes)


class BoundedRAMCache(LlamaRAMCache):
    """`LlamaRAMCache` that stores one row of each state's logits and evicts (least recently used first) by
    every byte its entries hold, the newest entry always kept."""

    @property
    def cache_size(self) -> int:
        return sum(entry_bytes(state) for state in self.cache_state.values())

    def __setitem__(self, key: Sequence[int], value: Any) -> None:
        if value.scores.shape[0] > 1:
            # load_state assigns this into scores[:n_tokens], which broadcasts one row over all of them
            value.scores = value.scores[-1:].copy()  # a copy: a slice would keep the whole array alive
        key = tuple(key)
        self.cache_state.pop(key, None)
        self.cache_state[key] = value
        while len(self.cache_state) > 1 and self.cache_size > self.capacity_bytes:
            self.cache_state.popitem(last=False)


def install() -> None:
    """Make llama-cpp-python's server build `BoundedRAMCache` for `--cache_type ram` (idempotent)."""
    llama_cpp.LlamaRAMCache = BoundedRAMCache  # type: ignore[misc]
