"""Grammar-constrained sampling that asks the grammar about the drawn token only (evoforge.llm.grammar_sampling),
with the embedded 0.5B model loaded in this process."""

from __future__ import annotations

import re
from typing import Any

import pytest

from evoforge.llm.local import ensure_model_file
from evoforge.llm.models import models_dir

pytestmark = [pytest.mark.local_llm, pytest.mark.slow]


@pytest.fixture(scope="module")
def llama() -> Any:
    import llama_cpp

    from evoforge.llm.grammar_sampling import install

    install()
    model = llama_cpp.Llama(str(ensure_model_file("qwen2.5-coder-0.5b", models_dir())), n_ctx=1024, n_threads=2,
                            verbose=False, seed=7)
    samplers: list[Any] = []
    patched = llama_cpp.Llama._init_sampler

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        sampler = patched(self, *args, **kwargs)
        samplers.append(sampler)
        return sampler

    model._init_sampler = recording.__get__(model)
    model.samplers = samplers
    yield model
    model.close()


def _complete(llama: Any, prompt: str, grammar_text: str | None, max_tokens: int = 40) -> tuple[str, Any]:
    import llama_cpp

    llama.samplers.clear()
    grammar = llama_cpp.LlamaGrammar.from_string(grammar_text, verbose=False) if grammar_text else None
    out = llama.create_completion(prompt, max_tokens=max_tokens, temperature=0.7, grammar=grammar, seed=3)
    return out["choices"][0]["text"], llama.samplers[-1]


def test_a_token_the_grammar_refuses_is_drawn_again_under_the_grammar(llama: Any) -> None:
    from evoforge.llm.grammar_sampling import GrammarCheckedSampler

    text, sampler = _complete(llama, "def add(a, b):\n", 'root ::= "zebra-" [0-9] [0-9] [0-9] "."')
    assert re.fullmatch(r"zebra-\d{3}\.", text), text
    assert isinstance(sampler, GrammarCheckedSampler)
    assert sampler.resampled >= 1, "the model never starts with 'zebra-' unprompted: the grammar had to step in"


def test_where_the_model_already_follows_the_grammar_nothing_is_drawn_twice(llama: Any) -> None:
    text, sampler = _complete(llama, "Count: 1, 2, 3, 4,", 'root ::= ([ 0-9,])+', max_tokens=12)
    assert re.fullmatch(r"[ 0-9,]+", text), text
    assert sampler.resampled < 12


def test_without_a_grammar_the_library_sampler_is_used_unchanged(llama: Any) -> None:
    from evoforge.llm.grammar_sampling import GrammarCheckedSampler

    text, sampler = _complete(llama, "def add(a, b):\n", None, max_tokens=8)
    assert text and not isinstance(sampler, GrammarCheckedSampler)
