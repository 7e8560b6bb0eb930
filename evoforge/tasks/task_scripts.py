"""What the built-in tasks' `evaluate.py` and `static_check.py` scripts share: the command lines of the task
contract, loading a candidate, a probe under a deadline, and the check that a candidate stays inside its
interface. The scripts run in the sandbox, where evoforge is installed (the Dockerfile installs it too)."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any


def reach_reasons(source: str, *, allowed_imports: frozenset[str], forbidden_names: frozenset[str],
                  forbidden_attributes: frozenset[str], interface: dict[str, int]) -> list[str]:
    """Why `source` breaks its interface or reaches outside it: an import outside `allowed_imports`, a forbidden
    name or attribute (or any dunder attribute but `__init__`), or a module-level function of `interface`
    (name → positional arity) that is missing or takes too few arguments. Empty when it does neither."""
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
                if name.split(".")[0] not in allowed_imports:
                    reasons.append(f"line {line}: imports {name!r}; only {sorted(allowed_imports)} may be imported")
        elif isinstance(node, ast.Name) and node.id in forbidden_names:
            reasons.append(f"line {line}: uses {node.id!r}, which reaches outside the rule's interface")
        elif isinstance(node, ast.Attribute) and (
            node.attr in forbidden_attributes or (node.attr.startswith("__") and node.attr != "__init__")
        ):
            reasons.append(f"line {line}: accesses attribute {node.attr!r}, which reaches outside the interface")
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name, arity in interface.items():
        fn = functions.get(name)
        if fn is None:
            reasons.append(f"missing the module-level function {name}()")
        elif len(fn.args.args) < arity and fn.args.vararg is None:
            reasons.append(f"{name}() must accept {arity} positional argument(s), it takes {len(fn.args.args)}")
    return reasons


def load_candidate(program: Path) -> ModuleType:
    """Import the candidate file as the module `candidate` (its top-level code runs)."""
    spec = importlib.util.spec_from_file_location("candidate", program)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load a Python module from {program}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def probe_deadline(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the main thread when the block takes longer than `seconds`."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the probe batch took longer than {seconds}s")

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)


def probe_failure(exc: BaseException) -> list[str]:
    """The reasons a candidate that raised while probed gets: what it raised and where."""
    return [f"the probe batch raised {type(exc).__name__}: {exc}", traceback.format_exc(limit=3)]


def static_check_main(reach: Callable[[str], list[str]], probe: Callable[[Path], list[str]]) -> None:
    """`python static_check.py PROGRAM RESULTS_DIR`: the source checks, then (if they pass) the probe, written to
    RESULTS_DIR/check.json as {ok, reasons}."""
    program, results_dir = Path(sys.argv[1]), Path(sys.argv[2])
    results_dir.mkdir(parents=True, exist_ok=True)
    reasons = reach(program.read_text())
    if not reasons:
        reasons = probe(program)
    (results_dir / "check.json").write_text(json.dumps({"ok": not reasons, "reasons": reasons}, indent=1))


def evaluator_main(evaluate: Callable[[Path, str], dict[str, Any]], description: str) -> None:
    """`python evaluate.py PROGRAM RESULTS_DIR [--stage NAME]`: writes RESULTS_DIR/metrics.json. An exception
    out of `evaluate` is the evaluator's own fault (candidate failures are reported inside the metrics), so it is
    reported with its `evaluator_traceback`, which makes the stage an evaluator error, not the candidate's."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("program", type=Path)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--stage", default="quick")
    args = parser.parse_args()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    try:
        report = evaluate(args.program, args.stage)
    except Exception as exc:  # an evaluator fault (bad settings, a broken environment), reported as such
        print(f"evaluator error: {exc!r}", file=sys.stderr)
        report = {"score": None, "valid": False, "metrics": {}, "error": f"evaluator error: {exc}",
                  "feedback": None, "traceback": None, "evaluator_traceback": traceback.format_exc()}
    (args.results_dir / "metrics.json").write_text(json.dumps(report, indent=1))
