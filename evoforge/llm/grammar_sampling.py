"""Grammar-constrained sampling at the cost of unconstrained sampling, for llama-cpp-python's server.

llama-cpp-python puts the grammar first in its sampler chain, so every generated token runs the grammar over
the whole vocabulary (151k tokens for Qwen2.5): measured here, 30-50 ms per token on top of the model's own
~52 ms, nearly doubling a constrained reply. llama.cpp's own server samples the other way round, and so does
`GrammarCheckedSampler`: it draws a token from the unconstrained chain, asks the grammar about that one token,
and only when the grammar refuses it samples again over the whole vocabulary with the grammar applied. The
constrained replies are the same kind; only the cost of the common case changes.

`install()` patches `llama_cpp.Llama` in the process it runs in; `python -m evoforge.llm.llama_serve` runs the
server with it installed (the server runs in its own process, so nothing else is patched).
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import _internals

_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data), "llama_token_data layout changed"


class GrammarCheckedSampler:
    """An unconstrained sampler chain plus a grammar that vets each drawn token (the interface of
    `llama_cpp._internals.LlamaSampler` that `Llama.sample` uses: sample, accept, reset, close)."""

    def __init__(self, chain: _internals.LlamaSampler, model: _internals.LlamaModel, grammar: Any, n_vocab: int):
        self.chain = chain
        self.grammar = llama_cpp.llama_sampler_init_grammar(
            model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not self.grammar:
            raise ValueError("llama.cpp refused the grammar")
        self.n_vocab = n_vocab
        self.resampled = 0
        """Tokens the grammar refused and that were drawn again under it (for the tests and the curious)."""
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._one, llama_cpp.llama_token_data_p), size=1, selected=-1, sorted=False
        )
        self._all = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._all["id"] = np.arange(n_vocab, dtype=np.intc)

    def _grammar_allows(self, token: int) -> bool:
        self._one[0] = llama_cpp.llama_token_data(id=token, logit=0.0, p=0.0)
        self._one_array.data = ctypes.cast(self._one, llama_cpp.llama_token_data_p)  # type: ignore[assignment]
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self._one_array))
        return not math.isinf(self._one_array.data[0].logit)

    def _sample_under_grammar(self, ctx: _internals.LlamaContext, idx: int) -> int:
        logits = llama_cpp.llama_get_logits_ith(ctx.ctx, idx)
        self._all["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        self._all["p"] = 0.0
        candidates = llama_cpp.llama_token_data_array(
            data=self._all.ctypes.data_as(llama_cpp.llama_token_data_p), size=self.n_vocab, selected=-1,
            sorted=False,
        )
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
        llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(candidates))
        if not 0 <= candidates.selected < candidates.size:
            raise RuntimeError("the sampler chain selected no token under the grammar")
        return int(candidates.data[candidates.selected].id)

    def sample(self, ctx: _internals.LlamaContext, idx: int = -1) -> int:
        # llama_sampler_sample also records the token in the chain's history (its repetition penalties);
        # when the grammar refuses it, that history keeps the refused token, as llama.cpp's server does
        token = int(llama_cpp.llama_sampler_sample(self.chain.sampler, ctx.ctx, idx))
        if not self._grammar_allows(token):
            self.resampled += 1
            token = self._sample_under_grammar(ctx, idx)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        return token

    def accept(self, token: int) -> None:
        self.chain.accept(token)
        llama_cpp.llama_sampler_accept(self.grammar, token)

    def reset(self) -> None:
        self.chain.reset()
        llama_cpp.llama_sampler_reset(self.grammar)

    def close(self) -> None:
        self.chain.close()
        if self.grammar:
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None

    def __del__(self) -> None:
        self.close()


def install() -> None:
    """Make `llama_cpp.Llama` sample grammar-constrained replies with `GrammarCheckedSampler` (idempotent)."""
    if getattr(llama_cpp.Llama._init_sampler, "_evoforge_grammar_checked", False):
        return
    original = llama_cpp.Llama._init_sampler

    def init_sampler(self: llama_cpp.Llama, *args: Any, grammar: Any = None, **kwargs: Any) -> Any:
        chain = original(self, *args, **{**kwargs, "grammar": None})
        if grammar is None:
            return chain
        return GrammarCheckedSampler(chain, self._model, grammar, self._n_vocab)

    init_sampler._evoforge_grammar_checked = True  # type: ignore[attr-defined]
    llama_cpp.Llama._init_sampler = init_sampler  # type: ignore[method-assign]
