"""What the Researcher and the Debugger are shown of a tree program: a map of the whole tree, the evolvable files
in full within a character budget (an outline of their definitions beyond it), the fixed Python files as an
outline of their interface, and where a traceback points into the tree.

A small model reads ~125 prompt tokens a second on two cores: the map and the outlines give it what the evolvable
files must fit (a fixed model.py's calls into mixer.py) without paying for every fixed line.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

from evoforge.tasks.tree import TREE_DIR, ProgramTree, decode_bundle

FILES_BUDGET_CHARS = 12_000
"""Evolvable files shown in full up to this much text (~3k tokens); the rest as outlines."""
OUTLINE_BUDGET_CHARS = 3_000
"""Fixed Python files' outlines up to this much text."""
_FRAME = re.compile(rf'File "(?:[^"\n]*/)?{re.escape(TREE_DIR)}/(?P<path>[^"\n]+)", line (?P<line>\d+)')
_ANY_FRAME = re.compile(r'File "(?P<full>[^"\n]+)"')


@dataclass(frozen=True)
class ShownFile:
    path: str
    text: str
    """The file in full, or its outline when `outline`."""
    outline: bool
    language: str


def _language(path: str) -> str:
    return {"py": "python", "yaml": "yaml", "yml": "yaml", "json": "json", "toml": "toml", "md": "markdown"}.get(
        path.rsplit(".", 1)[-1], "")


def outline(text: str) -> str:
    """A Python file's top-level imports, assignments, and the def/class lines (with their methods' def lines)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return "\n".join(text.splitlines()[:12])
    lines = text.splitlines()
    kept: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kept.append(lines[node.lineno - 1])
            if isinstance(node, ast.ClassDef):
                kept += [lines[item.lineno - 1] for item in node.body
                         if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
        elif isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign)) and node.lineno == node.end_lineno:
            kept.append(lines[node.lineno - 1])
    return "\n".join(kept)


def shown_files(files: dict[str, str], first: str | None = None) -> list[ShownFile]:
    """The evolvable files as the prompt shows them: `first` (the task's program, or the file a traceback points
    into) leads, then path order; each in full while the budget lasts, an outline after."""
    order = sorted(files, key=lambda path: (path != first, path))
    shown: list[ShownFile] = []
    used = 0
    for path in order:
        text = files[path]
        full = used + len(text) <= FILES_BUDGET_CHARS or not shown
        shown.append(ShownFile(path, text if full else outline(text) if path.endswith(".py") else
                               "\n".join(text.splitlines()[:20]), not full, _language(path)))
        used += len(text) if full else 0
    return shown


def fixed_outlines(tree: ProgramTree) -> list[ShownFile]:
    """Outlines of the tree's fixed Python files, within `OUTLINE_BUDGET_CHARS`."""
    shown: list[ShownFile] = []
    used = 0
    for path, source in tree.fixed_files().items():
        if not path.endswith(".py") or source.is_symlink():
            continue
        text = outline(source.read_text(encoding="utf-8", errors="replace"))
        if used + len(text) > OUTLINE_BUDGET_CHARS:
            break
        shown.append(ShownFile(path, text, True, "python"))
        used += len(text)
    return shown


def tree_prompt(tree: ProgramTree, bundle: str, first: str | None = None) -> dict[str, Any]:
    """The prompt variables of a tree program: `tree_map` lines, `files` and `fixed_outlines` (ShownFile lists)."""
    files = decode_bundle(bundle)
    return {"tree_map": tree.map_lines(files), "files": shown_files(files, first), "fixed_outlines": fixed_outlines(tree)}


def traceback_location(traceback: str) -> tuple[str, int] | None:
    """(path in the tree, line) of the traceback's last frame inside the tree, or None."""
    frames = list(_FRAME.finditer(traceback))
    return (frames[-1].group("path"), int(frames[-1].group("line"))) if frames else None


def tree_paths(traceback: str) -> str:
    """A traceback with each tree frame named by its path in the tree (`src/mixer.py`), others by base name."""
    def short(match: re.Match[str]) -> str:
        full = match.group("full")
        inside = full.split(f"/{TREE_DIR}/", 1)
        return f'File "{inside[1] if len(inside) == 2 else full.rsplit("/", 1)[-1]}"'

    return _ANY_FRAME.sub(short, traceback)
