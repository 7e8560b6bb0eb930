"""`python -m evoforge.llm.llama_serve ARGS`: llama-cpp-python's OpenAI-compatible server (`python -m
llama_cpp.server ARGS`) with grammar-constrained replies sampled the cheap way (see grammar_sampling) and a prompt
cache bounded by what it really holds (see prompt_cache)."""

from __future__ import annotations

import runpy

from evoforge.llm import grammar_sampling, prompt_cache

if __name__ == "__main__":
    grammar_sampling.install()
    prompt_cache.install()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
