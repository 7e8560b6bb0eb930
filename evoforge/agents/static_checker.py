"""The Static-Checker: rejects a candidate before any evaluation cost is paid.

Checks, in order: size, syntax, the evolvable region (edits outside it are repaired by discarding them),
required entry points, forbidden imports and names, undefined names (a missing import), modules that are
not installed, the task's own check script (run in the sandbox), and an optional LLM review.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import sys
from typing import Any

import yaml
from langgraph.runtime import Runtime
from pyflakes import checker as pyflakes_checker
from pyflakes import messages as pyflakes_messages

from evoforge.agents.base import add_usage, ask
from evoforge.agents.editing import keep_fixed_region, unified_diff
from evoforge.agents.prompting import render
from evoforge.config import RunConfig
from evoforge.llm.usage import LLMCallError
from evoforge.runtime.payloads import Candidate, RoleUsage, StaticReport
from evoforge.runtime.services import Services, services_for
from evoforge.runtime.state import State
from evoforge.tasks.spec import TaskSpec
from evoforge.tasks.tree import BundleError, decode_bundle, is_bundle
from evoforge.tools.evaluation import run_static_check

log = logging.getLogger(__name__)


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def _imported_modules(tree: ast.Module) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def code_problems(task: TaskSpec, code: str, *, parent_code: str | None = None) -> list[str]:
    """Problems found without running anything; empty when the code may go on. A tree program's files are
    checked one by one, only those that differ from `parent_code` when it is given."""
    if len(code) > task.rules.max_code_chars:
        return [f"the program has {len(code)} characters; the limit is {task.rules.max_code_chars}"]
    if task.is_tree:
        return tree_problems(task, code, parent_code)
    return _python_problems(task, code, task.entry_points)


def tree_problems(task: TaskSpec, code: str, parent_code: str | None) -> list[str]:
    """Per changed file: a Python file's checks (`_python_problems`; entry points in the task's `program`), a
    YAML or JSON file's syntax; each problem names its file."""
    try:
        files = decode_bundle(code)
    except BundleError as exc:
        return [f"the candidate is not a tree program: {exc}"]
    before = decode_bundle(parent_code) if parent_code and is_bundle(parent_code) else {}
    # the tree's own top-level modules and packages are importable in the sandbox (its directory is the cwd)
    local = {path.split("/")[0].removesuffix(".py") for path in [*task.program_tree.fixed_files(), *files]}
    problems = [f"{task.program}: the task's program file was deleted"] if task.program and task.program not in files else []
    for path, text in files.items():
        if before.get(path) == text:
            continue
        if path.endswith(".py"):
            try:  # what ast.parse lets through and the import would not (a misplaced __future__ import)
                compile(text, path, "exec")
            except SyntaxError as exc:
                problems.append(f"{path}: SyntaxError at line {exc.lineno}: {exc.msg}")
                continue
            except ValueError as exc:
                problems.append(f"{path}: {exc}")
                continue
            entry_points = task.entry_points if path == task.program else []
            problems += [f"{path}: {problem}" for problem in _python_problems(task, text, entry_points, local)]
        elif path.endswith((".yaml", ".yml", ".json")):
            try:
                json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
            except (ValueError, yaml.YAMLError) as exc:
                problems.append(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                                f"{' '.join(str(exc).split())[:200]}")
    return problems


def _python_problems(task: TaskSpec, code: str, entry_points: list[str],
                     local_modules: set[str] | frozenset[str] = frozenset()) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        return [f"SyntaxError at line {exc.lineno}: {exc.msg}" + (f" in {line!r}" if line else "")]
    problems: list[str] = []
    defined = _top_level_names(tree)
    missing = [name for name in entry_points if name not in defined]
    if missing:
        problems.append(f"required entry points missing at top level: {', '.join(missing)}")
    for module, lineno in _imported_modules(tree):
        root = module.split(".")[0]
        if root in task.rules.forbidden_imports or module in task.rules.forbidden_imports:
            problems.append(f"line {lineno}: importing {module!r} is not allowed for this task")
        elif root not in sys.stdlib_module_names and root not in local_modules and importlib.util.find_spec(root) is None:
            problems.append(f"line {lineno}: module {root!r} is not installed")
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name in task.rules.forbidden_names:
            problems.append(f"line {getattr(node, 'lineno', '?')}: using {name!r} is not allowed for this task")
    for message in pyflakes_checker.Checker(tree, filename="candidate.py").messages:
        if isinstance(message, (pyflakes_messages.UndefinedName, pyflakes_messages.UndefinedLocal)):
            problems.append(f"line {message.lineno}: {message.message % message.message_args} (missing import?)")
    return problems


def _llm_review(res: Services, state: State, candidate: Candidate) -> tuple[list[str], dict[str, RoleUsage]]:
    messages = render(res.task, "static_review", candidate=candidate)
    try:
        reply, usage = ask(res, "static_review", messages, state, attempt=state.static_retries)
    except LLMCallError as exc:
        # A reviewer outage must not block the loop: the automated checks already passed.
        log.warning("static review skipped, the model call failed: %s", exc)
        return [], state.usage
    first, _, rest = reply.strip().partition("\n")
    usage_map = add_usage(state.usage, "static_review", usage)
    if first.strip().upper().startswith("REJECT"):
        return [f"reviewer: {first.strip()} {rest.strip()[:300]}".strip()], usage_map
    return [], usage_map


def check_candidate(state: State, runtime: Runtime[RunConfig]) -> dict[str, Any]:
    """Verdict on the candidate; a rejection goes back to the Researcher until the retry bound."""
    res = services_for(state.run_id, runtime)
    assert state.candidate is not None and state.parent is not None
    candidate = state.candidate.copy()
    repair_note = None
    if res.task.evolve_block:
        candidate["code"], repair_note = keep_fixed_region(state.parent["code"], candidate["code"])
        if repair_note:
            candidate["diff"] = unified_diff(state.parent["code"], candidate["code"])
    reasons = code_problems(res.task, candidate["code"], parent_code=state.parent["code"])
    usage = state.usage
    deferred = None
    if not reasons and res.task.rules.static_check is not None:
        workdir = res.config.node_dir(state.run_id, state.node_id) / f"static-{state.static_retries}"
        verdict = run_static_check(res.task, candidate["code"], workdir, res.sandbox)
        if verdict.crashed:
            # a bug, not a broken rule: the Engineer's run reproduces it and the Debugger reads the traceback
            deferred = "the candidate raised under the task's check: " + "; ".join(verdict.reasons)
        else:
            reasons = verdict.reasons
    if not reasons and res.config.llm_static_review:
        reasons, usage = _llm_review(res, state, candidate)
    report: StaticReport = {"ok": not reasons, "reasons": reasons, "repaired": repair_note,
                            "deferred_to_debugger": deferred}
    update: dict[str, Any] = {"static_report": report, "candidate": candidate, "usage": usage}
    if reasons:
        retries = state.static_retries + 1
        update["static_retries"] = retries
        update["feedback"] = [f"static check rejected '{candidate['name']}': " + "; ".join(reasons)]
        if retries > res.config.bounds.max_static_retries:
            update["status"] = "static_rejected"
            update["error"] = "static check: " + "; ".join(reasons)
    return update
