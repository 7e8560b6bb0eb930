"""What the Researcher is shown of a parent program, and what its edit applies to.

Small models copy what they see: shown a program with docstrings, they spend their reply rewriting the
docstrings (and the fixed code around the evolvable region) instead of changing the code. So the parent is
shown without docstrings, and its evolvable region is edited without them: the child's region is the
parent's with its docstrings dropped, plus the edit. The fixed code around the region stays byte-for-byte
as it was (only its view in the prompt is compacted). Code that does not parse as Python is left as it is.
"""

from __future__ import annotations

import ast
import re

from evoforge.agents.editing import split_evolve_block


def _docstring_lines(code: str) -> set[int]:
    """0-based line numbers holding only docstrings (of the module, classes and functions)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return set()
    lines = code.splitlines()
    dropped: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if len(body) < 2:  # a body that is only a docstring would be left empty
            continue
        first = body[0]
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str) and first.end_lineno is not None):
            continue
        start, end = first.lineno - 1, first.end_lineno - 1
        # only when the docstring has its lines to itself (not `def f(): "doc"; return 1`)
        if lines[start][: first.col_offset].strip() or lines[end][first.end_col_offset :].strip():
            continue
        dropped.update(range(start, end + 1))
    return dropped


def without_docstrings(code: str) -> str:
    """`code` with every docstring line removed (unchanged when it does not parse)."""
    dropped = _docstring_lines(code)
    if not dropped:
        return code
    kept = [line for number, line in enumerate(code.splitlines(keepends=True)) if number not in dropped]
    return "".join(kept)


def editable_parent(code: str) -> str:
    """The parent as the Researcher's edit applies to it: docstrings dropped inside the evolvable region only
    (the whole program when it has no EVOLVE-BLOCK markers)."""
    parts = split_evolve_block(code)
    if parts is None:
        return without_docstrings(code)
    before, block, after = parts
    dropped = _docstring_lines(code)
    if not dropped:
        return code
    first_block_line = before.count("\n")
    block_lines = block.splitlines(keepends=True)
    kept = [line for offset, line in enumerate(block_lines) if first_block_line + offset not in dropped]
    return before + "".join(kept) + after


_FRAME_PATH = re.compile(r'File "(?:[^"\n]*/)?([^"/\n]+)"')


def short_paths(traceback: str) -> str:
    """A traceback with each frame's file named by its base name (`program.py`, `_methods.py`): the
    sandbox's long working paths cost tokens and tell the model nothing."""
    return _FRAME_PATH.sub(lambda match: f'File "{match.group(1)}"', traceback)


def edit_and_view(code: str, *, compact: bool) -> tuple[str, str]:
    """(the code an edit applies to, the code the prompt shows) for a parent or a candidate: with `compact`,
    `editable_parent(code)` and that without any docstring; otherwise `code` twice."""
    if not compact:
        return code, code
    editable = editable_parent(code)
    return editable, without_docstrings(editable)
