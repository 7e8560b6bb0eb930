"""Static check of a candidate pipeline: `python static_check.py PROGRAM RESULTS_DIR` writes RESULTS_DIR/check.json.

Rejects, before any evaluation: a program that breaks the interface; one that reaches outside it (imports other
than text-processing stdlib modules, file or process access, `open`, `eval`/`exec`, dunder attributes such as
`__globals__`, importing the evaluator, the corpus builder or `inspect`/`sys`, through which the clean text could be
looked up); and a pipeline that fails or returns the wrong types on a probe batch.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

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
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"syntax error at line {exc.lineno}: {exc.msg}"]
    reasons = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                names = ["." * node.level + (node.module or "")]
            for name in names:
                if name.split(".")[0] not in ALLOWED_IMPORTS:
                    reasons.append(f"line {line}: imports {name!r}; only {sorted(ALLOWED_IMPORTS)} may be imported")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            reasons.append(f"line {line}: uses {node.id!r}, which reaches outside the rule's interface")
        elif isinstance(node, ast.Attribute) and (
            node.attr in FORBIDDEN_ATTRIBUTES or (node.attr.startswith("__") and node.attr != "__init__")
        ):
            reasons.append(f"line {line}: accesses attribute {node.attr!r}, which reaches outside the interface")
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name, arity in INTERFACE.items():
        fn = functions.get(name)
        if fn is None:
            reasons.append(f"missing the module-level function {name}()")
        elif len(fn.args.args) < arity and fn.args.vararg is None:
            reasons.append(f"{name}() must accept {arity} positional argument(s), it takes {len(fn.args.args)}")
    return reasons


def _timeout(signum, frame):
    raise TimeoutError(f"the probe batch took longer than {PROBE_SECONDS}s")


def probe_reasons(program: Path) -> list[str]:
    """Run the pipeline once on three tiny documents: types and ids."""
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(PROBE_SECONDS)
    try:
        spec = importlib.util.spec_from_file_location("candidate", program)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load a Python module from {program}")
        pipeline = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(pipeline)
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
    except Exception as exc:  # the candidate raised while probed: that is the finding
        return [f"the probe batch raised {type(exc).__name__}: {exc}", traceback.format_exc(limit=3)]
    finally:
        signal.alarm(0)
    return []


def main() -> None:
    program, results_dir = Path(sys.argv[1]), Path(sys.argv[2])
    results_dir.mkdir(parents=True, exist_ok=True)
    reasons = ast_reasons(program.read_text())
    if not reasons:
        reasons = probe_reasons(program)
    (results_dir / "check.json").write_text(json.dumps({"ok": not reasons, "reasons": reasons}, indent=1))


if __name__ == "__main__":
    main()
