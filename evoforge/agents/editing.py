"""Edits the Researcher and the Debugger make to a program: SEARCH/REPLACE blocks, full rewrites, and the
task's evolvable region (between EVOLVE-BLOCK-START and EVOLVE-BLOCK-END comment lines)."""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass

from evoforge.tasks.tree import bundle_diff, is_bundle

BLOCK_START = "EVOLVE-BLOCK-START"
BLOCK_END = "EVOLVE-BLOCK-END"

_DIFF_BLOCK = re.compile(
    r"^[ \t]*<{5,}[ \t]*SEARCH[ \t]*\n(?P<search>.*?)^[ \t]*={5,}[ \t]*\n(?P<replace>.*?)^[ \t]*>{5,}[ \t]*REPLACE[ \t]*$",
    re.DOTALL | re.MULTILINE,
)
_MARKER = re.compile(r"^[ \t]*(?:<{5,}[ \t]*SEARCH|>{5,}[ \t]*REPLACE)[ \t]*$", re.MULTILINE)
"""A SEARCH or REPLACE line (a bare ======= may be an underline in a docstring): left over outside a
well-formed block, it marks a malformed one."""
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(?P<body>.*?)```", re.DOTALL | re.IGNORECASE)
_OPEN_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(?P<body>.*)\Z", re.DOTALL | re.IGNORECASE)


class EditError(ValueError):
    """A reply whose edits cannot be applied; the message tells the model what to fix."""


class UnchangedEdit(EditError):
    """An edit that applies but leaves the program as it was (the parent echoed back)."""


@dataclass(frozen=True)
class SearchReplace:
    search: str
    replace: str


@dataclass(frozen=True)
class Edit:
    """The code-changing part of a reply: either diff blocks or a full program (or both, rewrite as fallback)."""

    blocks: tuple[SearchReplace, ...]
    rewrite: str | None


def parse_edit(reply: str) -> Edit:
    """Find SEARCH/REPLACE blocks and/or a fenced full program in a model reply."""
    blocks = tuple(
        SearchReplace(m.group("search").rstrip("\n"), m.group("replace").rstrip("\n"))
        for m in _DIFF_BLOCK.finditer(reply)
    )
    without_blocks = _DIFF_BLOCK.sub("", reply)
    fenced = [m.group("body") for m in _FENCE.finditer(without_blocks) if m.group("body").strip()]
    if not fenced:
        # a reply cut off by the token limit leaves its last fence open: take the code up to the end
        unclosed = _OPEN_FENCE.search(without_blocks)
        if unclosed and (body := _complete_statements(unclosed.group("body"))).strip():
            fenced = [body]
    # a fence around a broken SEARCH/REPLACE block holds no program: never take it as a rewrite
    programs = [body for body in fenced if not _MARKER.search(body)]
    rewrite = max(programs, key=len) if programs else None
    if not blocks and rewrite is None and _MARKER.search(without_blocks):
        raise EditError(
            "a SEARCH/REPLACE block is malformed: each block needs a line <<<<<<< SEARCH, the parent's lines, "
            "a line =======, the new lines, and a line >>>>>>> REPLACE"
        )
    if not blocks and rewrite is None:
        raise EditError(
            "no code found: give SEARCH/REPLACE blocks (<<<<<<< SEARCH / ======= / >>>>>>> REPLACE) "
            "or the full program in a ```python fenced block"
        )
    return Edit(blocks, rewrite)


def _complete_statements(code: str) -> str:
    """`code` without its last top-level statement when the token limit cut that statement off (the code does
    not parse, but the code before it does); `code` itself otherwise.

    Measured on circle_packing with the embedded 1.5B model (2026-12-03): 9 of 42 Researcher replies in two
    benchmark runs hit the 768-token cap, several inside the fixed code the model copies after the evolvable
    region (`if __name__ == "__main__":`); the definitions it had written by then are whole and worth running."""
    try:
        ast.parse(code)
        return code
    except SyntaxError:
        pass
    lines = code.splitlines(keepends=True)
    statement_starts = [i for i, line in enumerate(lines) if i and line[:1] not in ("", " ", "\t", "\n", "#", ")")]
    for start in reversed(statement_starts):
        before = "".join(lines[:start])
        try:
            ast.parse(before)
        except SyntaxError:
            continue
        return before
    return code


def _locate_loosely(code: str, search: str) -> tuple[int, int] | None:
    """Find `search` in `code` line by line ignoring indentation and trailing spaces; (start, end) offsets."""
    code_lines = code.splitlines(keepends=True)
    wanted = [line.strip() for line in search.splitlines()]
    while wanted and not wanted[0]:
        wanted.pop(0)
    while wanted and not wanted[-1]:
        wanted.pop()
    if not wanted:
        return None
    stripped = [line.strip() for line in code_lines]
    for i in range(len(code_lines) - len(wanted) + 1):
        if stripped[i : i + len(wanted)] == wanted:
            start = sum(len(line) for line in code_lines[:i])
            end = start + sum(len(line) for line in code_lines[i : i + len(wanted)])
            return start, end
    return None


def _locate_in_order(code: str, search: str) -> tuple[int, int] | None:
    """Find `search`'s lines in `code` in order but with gaps (a SEARCH that skipped a docstring or a comment);
    (start, end) offsets of the span from its first to its last line, or None.

    Small models often copy a region but leave out lines inside it; their REPLACE then omits them too, so the
    span is what they meant. The span may be at most twice the SEARCH's length plus a few lines, so a stray
    common line (`return x`) far below never stretches it over unrelated code."""
    code_lines = code.splitlines(keepends=True)
    wanted = [line.strip() for line in search.splitlines() if line.strip()]
    if len(wanted) < 2:
        return None
    stripped = [line.strip() for line in code_lines]
    limit = 2 * len(wanted) + 4
    for first in (i for i, line in enumerate(stripped) if line == wanted[0]):
        position, matched = first, 1
        while matched < len(wanted) and position + 1 < len(stripped) and position + 1 - first < limit:
            position += 1
            if stripped[position] == wanted[matched]:
                matched += 1
        if matched == len(wanted):
            start = sum(len(line) for line in code_lines[:first])
            return start, start + sum(len(line) for line in code_lines[first : position + 1])
    return None


def apply_blocks(code: str, blocks: tuple[SearchReplace, ...]) -> str:
    """Apply SEARCH/REPLACE blocks in order; exact match first, then a whitespace-tolerant line match, then the
    SEARCH's lines in order with gaps (see `_locate_in_order`)."""
    for n, block in enumerate(blocks, 1):
        if block.search and block.search in code:
            code = code.replace(block.search, block.replace, 1)
            continue
        span = _locate_loosely(code, block.search) or _locate_in_order(code, block.search)
        if span is None:
            first = next((line for line in block.search.splitlines() if line.strip()), "")
            raise EditError(
                f"SEARCH block {n} of {len(blocks)} does not match the parent program "
                f"(first line: {first.strip()[:80]!r}); copy the lines exactly from the parent"
            )
        start, end = span
        replacement = block.replace if block.replace.endswith("\n") or not block.replace else block.replace + "\n"
        code = code[:start] + replacement + code[end:]
    return code


def apply_edit(parent_code: str, edit: Edit) -> tuple[str, str]:
    """The child program and how it was made: 'diff', 'rewrite', or 'definitions' (a fenced block of only some of
    the region's functions, merged by `merge_definitions`); diffs first, the fenced code as fallback. An edit
    that leaves the program as it was is an EditError that says so."""
    child, mode = None, "diff"
    if edit.blocks:
        try:
            child = apply_blocks(parent_code, edit.blocks)
        except EditError:
            if edit.rewrite is None:
                raise
    if child is None:
        assert edit.rewrite is not None
        merged = merge_definitions(parent_code, edit.rewrite)
        if merged is None:
            child, mode = edit.rewrite, "rewrite"
        else:
            child, mode = merged[0], "rewrite" if merged[1] else "definitions"
    require_change(parent_code, child)
    return child, mode


def require_change(parent_code: str, child_code: str) -> None:
    """Raise UnchangedEdit when `child_code` is the parent again (`changes_program`)."""
    if not changes_program(parent_code, child_code):
        raise UnchangedEdit(
            "the edit leaves the program as it was, but for imports (each REPLACE repeats its SEARCH lines, or the "
            "code block repeats the parent's code): write the new code the idea needs"
        )


def changes_program(parent_code: str, child_code: str) -> bool:
    """Whether `child_code` differs from `parent_code` in its evolvable code, imports aside."""
    return _without_imports(evolvable_text(child_code)) != _without_imports(evolvable_text(parent_code))


def _without_imports(code: str) -> list[str]:
    """Code lines but the import statements: an edit that only adds an import is the parent unchanged."""
    return [line for line in _normalised(code) if not line.lstrip().startswith(("import ", "from "))]


def _definition_name(node: ast.stmt) -> str | None:
    """The name a top-level statement defines (a function, a class, or one plain name assigned)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return targets[0].id if len(targets) == 1 and isinstance(targets[0], ast.Name) else None


def _names_and_statements(body: list[ast.stmt]) -> tuple[set[str], set[str]]:
    """The names `body` defines and its statements (as AST dumps): what an edit of the region may not repeat
    when `body` is the fixed code."""
    return {name for node in body if (name := _definition_name(node)) is not None}, {ast.dump(node) for node in body}


def _span(node: ast.stmt) -> tuple[int, int]:
    """0-based first and last line of a statement, its decorators included."""
    decorators = getattr(node, "decorator_list", [])
    first = min([node.lineno, *(d.lineno for d in decorators)])
    return first - 1, (node.end_lineno or node.lineno) - 1


def merge_definitions(parent_code: str, fenced: str) -> tuple[str, bool] | None:
    """The parent with the definitions in `fenced` put in place of its own of the same names, and whether every
    definition of the editable region was replaced (a rewrite); None when `fenced` is to be taken as it is (a
    whole program with EVOLVE-BLOCK markers, or code that does not parse).

    A small model told to change one function writes that function, not the region around it: taken as the
    whole region, its reply would delete the rest (`undefined name 'construct_packing'`). Asked for the region,
    it often writes the whole program without the markers: the fixed code it repeats is left out (it may not
    change), so it is not pasted into the region a second time. New imports go to the region's top, new
    definitions and other statements to its end."""
    if BLOCK_START in fenced and BLOCK_END in fenced:
        return None
    parts = split_evolve_block(parent_code)
    before, region, after = parts if parts is not None else ("", parent_code, "")
    try:
        region_tree, fenced_tree = ast.parse(region), ast.parse(fenced)
        fixed_body = ast.parse(before + after).body if parts is not None else []
    except SyntaxError:
        return None
    defined = {name: node for node in region_tree.body if (name := _definition_name(node)) is not None}
    fixed_names, fixed_statements = _names_and_statements(fixed_body)
    present = fixed_statements | {ast.dump(node) for node in region_tree.body}
    region_lines, fenced_lines = region.splitlines(keepends=True), fenced.splitlines(keepends=True)
    replaced: dict[int, tuple[int, str]] = {}  # first line in the region -> (last line, new text)
    imports, appended = [], []
    for node in fenced_tree.body:
        first, last = _span(node)
        text = "".join(fenced_lines[first : last + 1])
        text = text if text.endswith("\n") else text + "\n"
        name = _definition_name(node)
        if ast.dump(node) in present and name not in defined:
            continue  # an import or a statement the program has already (in the fixed code, mostly)
        if name in fixed_names:
            continue  # fixed code may not change
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(text)
        elif name in defined:
            replaced[_span(defined[name])[0]] = (_span(defined[name])[1], text)
        else:
            appended.append(text)
    merged, line = [*imports, "\n"] if imports else [], 0
    while line < len(region_lines):
        if line in replaced:
            last, text = replaced[line]
            merged.append(text)
            line = last + 1
        else:
            merged.append(region_lines[line])
            line += 1
    body = "".join(merged)
    if appended:
        body = body.rstrip("\n") + "".join("\n\n\n" + text.rstrip("\n") for text in appended) + "\n\n\n"
    return before + body + after, len(replaced) == len(defined)


def split_evolve_block(code: str) -> tuple[str, str, str] | None:
    """(before, block, after) around the evolvable region, markers kept in before/after; None without markers."""
    lines = code.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if BLOCK_START in line]
    ends = [i for i, line in enumerate(lines) if BLOCK_END in line]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        return None
    s, e = starts[0], ends[0]
    return "".join(lines[: s + 1]), "".join(lines[s + 1 : e]), "".join(lines[e:])


def _normalised(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def keep_fixed_region(parent_code: str, child_code: str) -> tuple[str, str | None]:
    """Enforce that only the parent's evolvable region changed.

    Returns the (possibly repaired) child and a note when a repair happened: edits outside the region are
    discarded by splicing the child's region (or the whole child, if it has no markers) into the parent, and
    fixed code repeated inside the region (a small model pastes the whole program into a REPLACE) is left out.
    """
    parent_parts = split_evolve_block(parent_code)
    if parent_parts is None:
        return child_code, None
    before, _, after = parent_parts
    child_parts = split_evolve_block(child_code)
    notes = []
    if child_parts is not None:
        c_before, block, c_after = child_parts
        if _normalised(c_before) != _normalised(before) or _normalised(c_after) != _normalised(after):
            notes.append("edits outside the EVOLVE-BLOCK were discarded (the fixed code must stay as it is)")
    elif len(child_code) >= len(before) + len(after) and child_code.startswith(before) and child_code.endswith(after):
        block = child_code[len(before) : len(child_code) - len(after)]  # markers pasted into the region
    else:
        block = child_code if child_code.endswith("\n") else child_code + "\n"
        notes.append("the reply had no EVOLVE-BLOCK markers; its code was placed inside the parent's evolvable region")
    cleaned = _without_fixed_copies(block, before + after)
    if cleaned != block:
        notes.append("fixed code repeated inside the EVOLVE-BLOCK was left out")
    if not notes:
        return child_code, None
    return before + cleaned + after, "; ".join(notes)


def _without_fixed_copies(block: str, fixed_code: str) -> str:
    """`block` without EVOLVE-BLOCK marker lines and without top-level statements that define a name of the fixed
    code or repeat one of its statements; `block` itself when it does not parse."""
    lines = [line for line in block.splitlines(keepends=True) if BLOCK_START not in line and BLOCK_END not in line]
    try:
        tree, fixed_body = ast.parse("".join(lines)), ast.parse(fixed_code).body
    except SyntaxError:
        return block
    fixed_names, fixed_statements = _names_and_statements(fixed_body)
    dropped: set[int] = set()
    for node in tree.body:
        if _definition_name(node) in fixed_names or ast.dump(node) in fixed_statements:
            first, last = _span(node)
            dropped.update(range(first, last + 1))
    if not dropped and len(lines) == len(block.splitlines(keepends=True)):
        return block
    kept = "".join(line for number, line in enumerate(lines) if number not in dropped).rstrip("\n")
    return kept + "\n" * max(1, len(block) - len(block.rstrip("\n")))  # the block's own blank lines at its end


def unified_diff(parent_code: str, child_code: str, *, context: int = 2) -> str:
    """The child's change against its parent; file by file for two tree programs (`tree.bundle_diff`)."""
    if is_bundle(parent_code) and is_bundle(child_code):
        return "\n".join(bundle_diff(parent_code, child_code, context=context)) + "\n"
    return "".join(
        difflib.unified_diff(
            parent_code.splitlines(keepends=True),
            child_code.splitlines(keepends=True),
            fromfile="parent.py",
            tofile="candidate.py",
            n=context,
        )
    )


def evolvable_text(code: str) -> str:
    """The part of a program the model may change (the whole program when it has no markers)."""
    parts = split_evolve_block(code)
    return parts[1] if parts else code
