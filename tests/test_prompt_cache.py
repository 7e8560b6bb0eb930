"""The server's RAM prompt cache (evoforge.llm.prompt_cache): evicted by every byte its entries hold, and holding
one row of each state's logits instead of the whole context's."""

from __future__ import annotations

import numpy as np
from llama_cpp.llama import LlamaState

from evoforge.llm.prompt_cache import BoundedRAMCache, entry_bytes

VOCAB = 1000
ROW_BYTES = VOCAB * 4


def _state(tokens: int, kv_bytes: int) -> LlamaState:
    scores = np.ones((min(tokens, 512), VOCAB), dtype=np.single)
    return LlamaState(input_ids=np.arange(tokens, dtype=np.intc), scores=scores, n_tokens=tokens,
                      llama_state=b"\0" * kv_bytes, llama_state_size=kv_bytes, seed=1)


def test_a_stored_state_keeps_one_row_of_logits_in_its_own_memory() -> None:
    cache = BoundedRAMCache(capacity_bytes=1 << 30)
    state = _state(600, kv_bytes=10_000)
    whole = state.scores
    cache[[1, 2, 3]] = state
    stored = cache[[1, 2, 3]]
    assert stored.scores.shape == (1, VOCAB)
    # a view would keep the 512-row array alive: the memory this cache exists to bound
    assert stored.scores.base is None and not np.shares_memory(stored.scores, whole)
    assert entry_bytes(stored) == 10_000 + ROW_BYTES + 600 * 4


def test_a_restored_row_broadcasts_over_the_context_logits() -> None:
    """What llama-cpp-python's load_state does with a stored state's scores."""
    cache = BoundedRAMCache(capacity_bytes=1 << 30)
    cache[[7]] = _state(300, kv_bytes=100)
    context_scores = np.zeros((512, VOCAB), dtype=np.single)
    context_scores[:300, :] = cache[[7]].scores.copy()
    assert context_scores[:300].min() == 1.0 and context_scores[300:].max() == 0.0


def test_eviction_counts_every_byte_and_keeps_the_newest() -> None:
    per_entry = entry_bytes(_state(50, kv_bytes=20_000)) - 50 * ROW_BYTES + ROW_BYTES
    cache = BoundedRAMCache(capacity_bytes=3 * per_entry)
    for key in range(5):
        cache[[key, 100 + key]] = _state(50, kv_bytes=20_000)
    assert [list(k) for k in cache.cache_state] == [[2, 102], [3, 103], [4, 104]]
    assert cache.cache_size <= cache.capacity_bytes
    cache[[9]] = _state(50, kv_bytes=10 * per_entry)  # larger than the whole cache: kept alone
    assert [list(k) for k in cache.cache_state] == [[9]]


def test_a_lookup_moves_its_entry_to_the_young_end() -> None:
    per_entry = entry_bytes(_state(10, kv_bytes=5_000)) - 10 * ROW_BYTES + ROW_BYTES
    cache = BoundedRAMCache(capacity_bytes=2 * per_entry)
    cache[[1, 1]] = _state(10, kv_bytes=5_000)
    cache[[2, 2]] = _state(10, kv_bytes=5_000)
    assert cache[[1, 1, 5]] is not None  # the longest-prefix lookup of a continuation
    cache[[3, 3]] = _state(10, kv_bytes=5_000)
    assert [list(k) for k in cache.cache_state] == [[1, 1], [3, 3]]


def test_install_makes_the_server_build_the_bounded_cache() -> None:
    import llama_cpp
    import llama_cpp.server.model as server_model

    from evoforge.llm import prompt_cache

    original = llama_cpp.LlamaRAMCache
    try:
        prompt_cache.install()
        assert server_model.llama_cpp.LlamaRAMCache is BoundedRAMCache
    finally:
        llama_cpp.LlamaRAMCache = original
