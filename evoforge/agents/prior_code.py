"""The code a human prior gives, merged into the parent: what the Researcher falls back on when its reply
leaves the program unchanged.

Measured (benchmarks/search.py, 2026-12-02, circle_packing, Qwen2.5-Coder-1.5B on 2 AVX2 cores): in 3 of 5
rounds of a 20-minute run the model, handed a prior with a complete function to use, echoed its parent three
times over (~100 s a call) instead, so the round produced nothing and the ideas the notes give were never
tried. A note's complete function is an experiment a person has asked for; when the model will not write it,
the loop runs it as given, and says so in the candidate's motivation and edit mode.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping

from evoforge.agents.editing import changes_program, merge_definitions
from evoforge.runtime.payloads import CognitionView
from evoforge.runtime.services import Services

_FENCED = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
_WHOLE_STATEMENTS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)


def _complete_definitions(block: str) -> bool:
    """Whether `block` parses and holds only imports and whole definitions (no loose statements, which would
    land at the end of the evolvable region out of context)."""
    try:
        body = ast.parse(block).body
    except SyntaxError:
        return False
    return bool(body) and all(isinstance(node, _WHOLE_STATEMENTS) for node in body)


def prior_code_blocks(cognition: Iterable[Mapping[str, object]]) -> list[str]:
    """The fenced code blocks of the human priors in `cognition` (retrieved items, or any mapping with their
    `kind` and `content`), in order."""
    return [block for item in cognition if item.get("kind") == "prior"
            for block in _FENCED.findall(str(item.get("content", "")))]


def binding_sources(res: Services, cognition: list[CognitionView]) -> list[str]:
    """The code an edit's unbound names may be bound from (unbound_names.py): the retrieved priors' code blocks,
    then those of the task's other human priors; none with cognition off (`top_k: 0`, the ablation).

    Not only the retrieved ones: a prior's function often calls one that another prior defines (measured
    2026-12-04 19:36, circle_packing: the restarts prior's `construct_packing` calls the SLSQP prior's `optimise`,
    which was not among the 4 retrieved, and the round went to static rejections for the unbound name)."""
    if res.config.cognition.top_k <= 0:
        return []
    retrieved = {item.get("id") for item in cognition}
    others = [{"kind": item.kind, "content": item.content}
              for item in res.cognition.list(task=res.task.name, kind="prior") if item.id not in retrieved]
    return [*prior_code_blocks(cognition), *prior_code_blocks(others)]


def prior_code_candidate(parent_code: str, item: CognitionView) -> str | None:
    """The parent with the complete definitions of the retrieved human prior `item` merged in by name
    (`merge_definitions`), or None when `item` is not a prior, gives no such code, or its code changes
    nothing (the parent has it already)."""
    child = parent_code
    for block in prior_code_blocks([item]):
        if not _complete_definitions(block):
            continue
        merged = merge_definitions(child, block)
        if merged is not None:
            child = merged[0]
    return child if changes_program(parent_code, child) else None
