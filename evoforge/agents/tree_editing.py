"""Edits addressed to the files of a tree program: SEARCH/REPLACE blocks or a fenced file under `FILE: path`, a
whole new file under `NEW FILE: path`, and `DELETE FILE: path`.

A reply is taken whole or turned back whole: a change to a fixed file, a path out of the tree (`..`, absolute,
through a symlink) or the deletion of a required file refuses the reply with the reason, which the Researcher
reads on its next try like any other unusable reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from evoforge.agents.editing import (
    Edit,
    EditError,
    SearchReplace,
    UnchangedEdit,
    apply_blocks,
    merge_definitions,
    parse_edit,
)
from evoforge.tasks.tree import ProgramTree, decode_bundle, encode_bundle

ChangeKind = Literal["edit", "new", "delete"]
_HEADER = re.compile(r"^[ \t#*>-]*(?P<kind>NEW FILE|DELETE FILE|FILE)[ \t*]*:[ \t]*(?P<path>[^\n]*?)[ \t*]*$",
                     re.IGNORECASE)
_FENCE_LINE = re.compile(r"^[ \t]*```")
_SEARCH_LINE = re.compile(r"^[ \t]*<{5,}[ \t]*SEARCH[ \t]*$")
_DIVIDER_LINE = re.compile(r"^[ \t]*={5,}[ \t]*$")
_REPLACE_LINE = re.compile(r"^[ \t]*>{5,}[ \t]*REPLACE[ \t]*$")
_ANY_FENCE = re.compile(r"```[^\n]*\n(?P<body>.*?)(?:```|\Z)", re.DOTALL)


class RefusedChange(EditError):
    """A reply that touches what it may not (a fixed file, a path out of the tree, a required file's deletion)."""


@dataclass(frozen=True)
class FileChange:
    kind: ChangeKind
    path: str
    """As the reply wrote it; checked against the tree when applied."""
    text: str
    """The section under the header: blocks or a fenced file (empty for a deletion)."""


def split_changes(reply: str) -> list[FileChange]:
    """The reply's file sections, in order. Header lines count only outside SEARCH/REPLACE blocks and fences, so a
    file's own lines never start a section. Blocks before any header form a section with no path."""
    changes: list[FileChange] = []
    kind: ChangeKind | None = None
    path, where = "", "outside"
    body: list[str] = []

    def close() -> None:
        if kind is not None or any(_SEARCH_LINE.match(line) for line in body):
            changes.append(FileChange(kind or "edit", path, "\n".join(body).strip("\n") + "\n"))

    for line in reply.splitlines():
        if where == "outside":
            header = _HEADER.match(line)
            if header and header.group("path").strip():
                close()
                word = header.group("kind").upper()
                kind = "new" if word.startswith("NEW") else "delete" if word.startswith("DELETE") else "edit"
                path, body = header.group("path").strip(), []
                continue
            if _SEARCH_LINE.match(line):
                where = "search"
            elif _FENCE_LINE.match(line):
                where = "fence"
        elif where == "search" and _DIVIDER_LINE.match(line):
            where = "replace"
        elif (where == "replace" and _REPLACE_LINE.match(line)) or (where == "fence" and _FENCE_LINE.match(line)):
            where = "outside"
        body.append(line)
    close()
    return changes


def _fenced_file(text: str) -> str | None:
    """The longest fenced block of a section, whole (a file's content), or None."""
    bodies = [m.group("body") for m in _ANY_FENCE.finditer(text)]
    return max(bodies, key=len) if bodies else None


def _owner_of(blocks: tuple[SearchReplace, ...], files: dict[str, str]) -> str:
    """The one file whose text holds the first SEARCH of header-less blocks (a small model forgets the header
    when one file changes); an EditError when none or several do."""
    first = blocks[0].search
    owners = [path for path, text in files.items() if first and first in text]
    if len(owners) == 1:
        return owners[0]
    where = "several files" if owners else "no file"
    raise EditError(f"the SEARCH/REPLACE blocks have no FILE: line before them and their first SEARCH is in {where}: "
                    "put a line FILE: <path> before the blocks of each file")


def apply_tree_reply(tree: ProgramTree, parent_bundle: str, reply: str) -> tuple[str, dict[str, str]]:
    """The child bundle and what happened to each changed path ('diff', 'rewrite', 'definitions', 'new',
    'deleted'). Raises RefusedChange for a change the task forbids, UnchangedEdit when nothing changes, and
    EditError for a reply that cannot be applied."""
    files = decode_bundle(parent_bundle)
    changes = split_changes(reply)
    if not changes:
        raise EditError("no change found: write FILE: <path> then SEARCH/REPLACE blocks (or the file in a fenced "
                        "block), NEW FILE: <path> then the file in a fenced block, or DELETE FILE: <path>")
    modes: dict[str, str] = {}
    for change in changes:
        if not change.path:
            edit = parse_edit(change.text)
            change = FileChange("edit", _owner_of(edit.blocks, files) if edit.blocks else "", change.text)
            if not change.path:
                raise EditError("a code block has no FILE: line before it: name the file it belongs to")
        reason, path = tree.refusal(change.path, change.kind, files)
        if reason is not None:
            raise RefusedChange(f"refused: {reason}")
        if change.kind == "delete":
            del files[path]
            modes[path] = "deleted"
            continue
        if change.kind == "new":
            content = _fenced_file(change.text)
            if content is None:
                raise EditError(f"NEW FILE: {path} needs the file's whole content in a fenced block")
            if path in files and files[path] != content:
                modes[path] = "rewrite"
            elif path not in files:
                modes[path] = "new"
            files[path] = content
            continue
        files[path], modes[path] = _edited(files[path], change.text, path)
    child = encode_bundle(files)
    if child == parent_bundle:
        raise UnchangedEdit("the edit leaves every file as it was: write the new code the idea needs")
    return child, modes


def _edited(text: str, section: str, path: str) -> tuple[str, str]:
    """One file after its section: SEARCH/REPLACE blocks first, a fenced block as fallback (a Python file's
    fenced functions replace those of the same name, `editing.merge_definitions`)."""
    try:
        edit = parse_edit(section)
    except EditError as exc:
        if _fenced_file(section) is None:  # parse_edit knows Python fences only; a YAML file comes fenced as yaml
            raise EditError(f"FILE: {path}: {exc}") from exc
        edit = Edit((), None)
    if edit.blocks:
        try:
            return apply_blocks(text, edit.blocks), "diff"
        except EditError as exc:
            if edit.rewrite is None:
                raise EditError(f"FILE: {path}: {exc}") from exc
    fenced = _fenced_file(section) if edit.rewrite is None else edit.rewrite
    if fenced is None:
        raise EditError(f"FILE: {path}: no SEARCH/REPLACE block or fenced file under the header")
    if path.endswith(".py"):
        merged = merge_definitions(text, fenced)
        if merged is not None:
            return merged[0], "rewrite" if merged[1] else "definitions"
    return fenced, "rewrite"
