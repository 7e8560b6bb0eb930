"""Static check of a candidate pipeline: `python static_check.py PROGRAM RESULTS_DIR` writes RESULTS_DIR/check.json.

Rejects, before any evaluation: a program that breaks the interface; one that reaches outside it (imports other
than text-processing stdlib modules, file or process access, `open`, `eval`/`exec`, dunder attributes such as
`__globals__`, importing the evaluator, the corpus builder or `inspect`/`sys`, through which the clean text could be
looked up); and a pipeline that fails or returns the wrong types on a probe batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evoforge.tasks.task_scripts import (
    load_candidate,
    probe_deadline,
    probe_failure,
    reach_reasons,
    static_check_main,
)

ALLOWED_IMPORTS = frozenset({
    "re", "html", "unicodedata", "string", "collections", "hashlib", "math", "itertools", "functools", "difflib",
    "zlib", "heapq", "bisect", "dataclasses", "typing", "statistics", "random", "operator", "textwrap", "codecs",
    "__future__",
})
FORBIDDEN_NAMES = frozenset({"open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "getattr",
                             "setattr", "delattr", "input", "breakpoint", "__builtins__", "__loader__", "__spec__"})
FORBIDDEN_ATTRIBUTES = frozenset({"open", "system", "popen", "spawn", "read_text", "read_bytes", "write_text",
                                  "write_bytes", "StreamReader", "StreamWriter", "EncodedFile"})
INTERFACE = {"clean_document": 2, "select_documents": 1}
PROBE_DOCS: list[dict[str, Any]] = [
    {"id": "p1", "text": "<p>Return the sum of two numbers.</p>\nContact a.b@example.com", "meta": {"url": "u1"}},
    {"id": "p2", "text": "Return the sum of two numbers.", "meta": {"url": "u2"}},
    {"id": "p3", "text": "\u00e2\u20ac\u2122", "meta": {"url": "u3"}},
]
PROBE_SECONDS = 30


def ast_reasons(source: str) -> list[str]:
    return reach_reasons(source, allowed_imports=ALLOWED_IMPORTS, forbidden_names=FORBIDDEN_NAMES,
                         forbidden_attributes=FORBIDDEN_ATTRIBUTES, interface=INTERFACE)


def probe_reasons(program: Path) -> list[str]:
    """Run the pipeline once on three tiny documents: types and ids."""
    try:
        with probe_deadline(PROBE_SECONDS):
            pipeline = load_candidate(program)
            survivors = []
            for doc in PROBE_DOCS:
                out = pipeline.clean_document(doc["text"], dict(doc["meta"]))
                if out is not None and not isinstance(out, str):
                    return [f"clean_document must return str or None, got {type(out).__name__} on a probe document"]
                if out is not None:
                    survivors.append({**doc, "text": out})
            selected = pipeline.select_documents(survivors)
            if not isinstance(selected, list) or not all(isinstance(i, str) for i in selected):
                return [f"select_documents must return a list of id strings, got {type(selected).__name__}"]
            unknown = set(selected) - {d["id"] for d in survivors}
            if unknown:
                return [f"select_documents returned ids it was not given: {sorted(unknown)}"]
    except Exception as exc:  # the candidate raised (or ran out of time) while probed: that is the finding
        return probe_failure(exc)
    return []


if __name__ == "__main__":
    static_check_main(ast_reasons, probe_reasons)
