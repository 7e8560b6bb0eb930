"""`python -m evoforge.llm.llama_serve ARGS`: llama-cpp-python's OpenAI-compatible server (`python -m
llama_cpp.server ARGS`) with grammar-constrained replies sampled the cheap way (see grammar_sampling)."""

from __future__ import annotations

import runpy

from evoforge.llm.grammar_sampling import install

if __name__ == "__main__":
    install()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
