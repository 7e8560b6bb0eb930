"""Names an edit leaves unbound, bound again from code the round already has.

Measured (benchmarks/search.py, circle_packing, Qwen2.5-Coder-1.5B, 2026-12-03 13:51): 7 of the 15 Researcher
retries of a 20-minute run followed a static rejection for an undefined name. In 4 the edit had renamed
`construct_packing`, which the fixed code calls, to `construct_packing_v2` or `improved_construct_packing` (the
model carries the candidate's new name over to the functions); in 3 a new function used `linprog`, `time` or the
prior's `optimise` without importing or defining it. Told why, the model sent the same reply again (3 of 3 token
for token in one round). Each of these has one repair a reader would make without asking, so the loop makes it and
says so, and the model's call is spent on the idea instead.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Sequence

from pyflakes import checker as pyflakes_checker
from pyflakes import messages as pyflakes_messages

from evoforge.agents.editing import merge_definitions

_MAX_PASSES = 3
"""A definition brought in may use names of its own; a few passes bind those too, and a bound on them ends a
cycle the sources cannot close."""


def unbound_names(code: str) -> list[str]:
    """Names the code reads and never binds, in order of first use; empty for code that does not parse."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    names: list[str] = []
    for message in pyflakes_checker.Checker(tree, filename="candidate.py").messages:
        if isinstance(message, pyflakes_messages.UndefinedName) and message.message_args[0] not in names:
            names.append(message.message_args[0])
    return names


def _top_level_definitions(tree: ast.Module, lines: Sequence[str]) -> dict[str, str]:
    """name -> source of each top-level function and class, decorators included."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
            found.setdefault(node.name, "".join(lines[first : node.end_lineno or node.lineno]))
    return found


def _imports(tree: ast.Module) -> dict[str, str]:
    """name -> an import statement that binds it, from anywhere in the code (a function's local import too:
    the model often moves the code that used it into a new function without it)."""
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.asname or alias.name.split(".")[0], ast.unparse(ast.Import(names=[alias])))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name != "*":
                    statement = ast.ImportFrom(module=node.module, names=[alias], level=0)
                    found.setdefault(alias.asname or alias.name, ast.unparse(statement))
    return found


def _bindings(sources: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(imports, definitions) by name over `sources`, the first source that binds a name winning."""
    imports: dict[str, str] = {}
    definitions: dict[str, str] = {}
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for name, statement in _imports(tree).items():
            imports.setdefault(name, statement)
        for name, text in _top_level_definitions(tree, source.splitlines(keepends=True)).items():
            definitions.setdefault(name, text)
    return imports, definitions


def _defined_names(code: str) -> set[str]:
    try:
        return {node.name for node in ast.parse(code).body
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    except SyntaxError:
        return set()


def _renamed_copy(name: str, reference_names: set[str], code_names: set[str]) -> str | None:
    """The definition the edit added in place of the reference's `name`: the one new function whose name contains
    it (`construct_packing_v2`, `improved_construct_packing`), else the only new function there is (the model
    named it after the candidate: `improved_packing`); None when `name` is not the reference's or no new
    function, or more than one, could be it."""
    if name not in reference_names:
        return None
    added = sorted(code_names - reference_names)
    containing = [other for other in added if name in other]
    if containing:
        return containing[0] if len(containing) == 1 else None
    return added[0] if len(added) == 1 else None


def bind_unbound_names(reference_code: str, code: str, sources: Sequence[str] = (),
                       required: Sequence[str] = ()) -> tuple[str, list[str]]:
    """`code` with the names it reads but never binds (and the `required` entry points it lacks) bound again, and
    a note per repair; the code unchanged and no notes when there is nothing to repair or no repair is certain.

    In order: a definition the edit renamed gets its name back (`_renamed_copy`); an import that binds the name in `reference_code` (the program the edit was made to) or in
    `sources` (the retrieved priors' code) is added; a definition of the name there is brought in; a standard
    module of that name is imported. Imports go to the top of the evolvable region, definitions to its end
    (`merge_definitions`)."""
    reference_names = _defined_names(reference_code)
    imports, definitions = _bindings([reference_code, *sources])
    notes: list[str] = []
    for _ in range(_MAX_PASSES):
        code_names = _defined_names(code)
        missing = [*unbound_names(code), *(n for n in required if n not in code_names and n in reference_names)]
        renames = {old: name for name in dict.fromkeys(missing)
                   if (old := _renamed_copy(name, reference_names, code_names)) is not None}
        if renames:
            for old, name in renames.items():
                code = re.sub(rf"\b{re.escape(old)}\b", name, code)
                notes.append(f"renamed {old} back to {name}, which the program calls")
            continue
        added: dict[str, str] = {}
        for name in dict.fromkeys(missing):
            if name in imports:
                added[name] = imports[name]
            elif name in definitions:
                added[name] = definitions[name]
            elif name in sys.stdlib_module_names:
                added[name] = f"import {name}"
        merged = merge_definitions(code, "\n\n\n".join(added.values())) if added else None
        if merged is None or merged[0] == code:
            break
        code = merged[0]
        notes.extend(f"added `{text.splitlines()[0].rstrip(':')}` for the unbound name {name}"
                     for name, text in added.items())
    return code, notes
