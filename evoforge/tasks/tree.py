"""A task's program as a directory tree: which files may change, their safe paths, and the bundle that is a tree
program's text.

A tree task names a directory (`tree:`, default the task directory) and the files of it that may evolve
(`evolve:`, paths or globs). A candidate is the tree with its evolvable files changed, added or deleted; every
other file is fixed context, read from the task directory whenever a tree is materialized. A candidate's text,
kept in a node's `code` column and passed around like a single-file program, is the *bundle* of its evolvable
files: each file under a header line that names its path and counts its lines, in path order. Code hashes,
novelty embeddings, diffs and the Analyzer read that text unchanged; only the fixed files are never copied.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

TREE_DIR = "program"
"""Where a tree is materialized in a sandbox work dir; the evaluator gets this directory as its PROGRAM."""
_HEADER = re.compile(r"^=== FILE: (?P<path>\S(?:.*\S)?) \((?P<lines>\d+) lines?(?P<open>, no newline at end)?\) ===$")
SKIPPED_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
"""Directory entries a tree never includes: caches and version-control data, not program."""
MAX_TREE_FILES = 2000
MAX_PATH_CHARS = 200


class BundleError(ValueError):
    """Text that is not a well-formed bundle; the message says where it breaks."""


class PathRefused(ValueError):
    """A path a reply may not touch; the message is the reason, written for the model that named it."""


def is_bundle(text: str) -> bool:
    """Whether `text` is a tree program's bundle (it starts with a file header)."""
    return _HEADER.match(text.split("\n", 1)[0]) is not None


def encode_bundle(files: Mapping[str, str]) -> str:
    """The canonical text of a tree program: each file under `=== FILE: path (N lines) ===`, in path order.

    The line count makes the format unambiguous whatever a file holds (a line that looks like a header
    included); a file without a final newline says so in its header, so decoding gives back every byte."""
    if not files:
        raise BundleError("a tree program needs at least one evolvable file, got none")
    parts = []
    for path in sorted(files):
        text = files[path]
        is_open = bool(text) and not text.endswith("\n")
        count = text.count("\n") + (1 if is_open else 0)  # lines split on \n only, as decode_bundle reads them
        word = "line" if count == 1 else "lines"
        parts.append(f"=== FILE: {path} ({count} {word}{', no newline at end' if is_open else ''}) ===\n")
        parts.append(text + ("\n" if is_open else ""))
    return "".join(parts)


def decode_bundle(text: str) -> dict[str, str]:
    """The files of a bundle, path -> content; BundleError when `text` is not one."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    files: dict[str, str] = {}
    at = 0
    while at < len(lines):
        header = _HEADER.match(lines[at])
        if header is None:
            raise BundleError(f"line {at + 1} should be a file header '=== FILE: path (N lines) ===', "
                              f"got {lines[at][:80]!r}")
        path, count = header.group("path"), int(header.group("lines"))
        if path in files:
            raise BundleError(f"file {path!r} appears twice in the bundle")
        body = lines[at + 1 : at + 1 + count]
        if len(body) != count:
            raise BundleError(f"file {path!r} announces {count} lines, the bundle has {len(body)} left")
        content = "\n".join(body) + ("\n" if body else "")
        files[path] = content[:-1] if header.group("open") else content
        at += 1 + count
    if not files:
        raise BundleError("the bundle holds no file")
    return files


def checked_path(raw: str) -> str:
    """`raw` as a normalized relative POSIX path inside a tree; PathRefused says why it may not be one."""
    text = raw.strip().strip("`'\"")
    if not text:
        raise PathRefused("an empty path names no file")
    if "\\" in text or "\0" in text:
        raise PathRefused(f"path {text!r}: use '/' between directories (no backslashes or NUL bytes)")
    if text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", text):
        raise PathRefused(f"path {text!r} is absolute: name files relative to the tree's top directory")
    parts = [part for part in PurePosixPath(text).parts if part != "."]
    if ".." in parts:
        raise PathRefused(f"path {text!r} climbs out of the tree with '..': only files inside the tree may change")
    if not parts:
        raise PathRefused(f"path {text!r} names the tree itself, not a file in it")
    if any(part in SKIPPED_NAMES for part in parts):
        raise PathRefused(f"path {text!r} is inside {', '.join(sorted(SKIPPED_NAMES & set(parts)))}, never a program file")
    path = "/".join(parts)
    if len(path) > MAX_PATH_CHARS:
        raise PathRefused(f"path {path[:60]!r}... is longer than {MAX_PATH_CHARS} characters")
    return path


def glob_pattern(pattern: str) -> re.Pattern[str]:
    """A regex for an `evolve:` glob: `*` and `?` stay within one directory, `**/` spans any number of them."""
    out, at = [], 0
    while at < len(pattern):
        if pattern.startswith("**/", at):
            out.append("(?:[^/]+/)*")
            at += 3
        elif pattern.startswith("**", at):
            out.append(".*")
            at += 2
        elif pattern[at] == "*":
            out.append("[^/]*")
            at += 1
        elif pattern[at] == "?":
            out.append("[^/]")
            at += 1
        else:
            out.append(re.escape(pattern[at]))
            at += 1
    return re.compile("".join(out) + r"\Z")


def is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


@dataclass(frozen=True)
class ProgramTree:
    """A tree task's directory and the rules of what in it may change."""

    root: Path
    """The tree's top directory on disk (absolute)."""
    evolve: tuple[str, ...]
    """Paths and globs of the evolvable files, relative to `root`."""
    required: frozenset[str]
    """Evolvable files a candidate may not delete."""
    excluded: frozenset[str] = field(default_factory=frozenset)
    """Paths (files or directories) of `root` that belong to the task, not the tree (its task.yaml, evaluator,
    notes), when the tree is the task directory itself."""

    def is_evolvable(self, path: str) -> bool:
        return any(glob_pattern(pattern).match(path) for pattern in self.evolve)

    def _walk(self) -> Iterable[tuple[str, Path]]:
        """(relative path, absolute path) of every entry of the tree that is a file or a symlink, sorted."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            base = Path(dirpath)
            rel_base = base.relative_to(self.root).as_posix()
            prefix = "" if rel_base == "." else rel_base + "/"
            kept = []
            for name in dirnames:
                rel = prefix + name
                if name in SKIPPED_NAMES or self._is_excluded(rel):
                    continue
                if (base / name).is_symlink():
                    found.append((rel, base / name))  # a symlinked directory is an entry, never walked into
                else:
                    kept.append(name)
            dirnames[:] = kept
            found += [(prefix + name, base / name) for name in filenames
                      if not name.endswith((".pyc", ".pyo")) and not self._is_excluded(prefix + name)]
        return sorted(found)

    def _is_excluded(self, rel: str) -> bool:
        return any(rel == item or rel.startswith(item.rstrip("/") + "/") for item in self.excluded)

    def entries(self) -> dict[str, Path]:
        """Every file of the tree on disk (fixed and evolvable), path -> absolute path; symlinks included."""
        entries = dict(self._walk())
        if len(entries) > MAX_TREE_FILES:
            raise ValueError(f"tree {self.root} holds {len(entries)} files, more than {MAX_TREE_FILES}")
        return entries

    def fixed_files(self) -> dict[str, Path]:
        """The files no candidate changes, path -> absolute path (symlinks that stay inside the tree included)."""
        return {rel: path for rel, path in self.entries().items() if not self.is_evolvable(rel)}

    def seed_files(self) -> dict[str, str]:
        """The seed's evolvable files, path -> content."""
        seed = {}
        for rel, path in self.entries().items():
            if self.is_evolvable(rel) and not path.is_symlink():
                seed[rel] = path.read_text(encoding="utf-8")
        return seed

    def refusal(self, raw: str, action: str, current: Mapping[str, str]) -> tuple[str | None, str]:
        """(reason the `action` ('edit', 'new', 'delete') on `raw` is refused or None, the checked path).

        `current` is the candidate's evolvable files so far: an edit needs the file there, a deletion may not
        take a required file."""
        try:
            path = checked_path(raw)
        except PathRefused as exc:
            return str(exc), raw.strip()
        through = self._symlink_on(path)
        if through is not None:
            return (f"path {path!r} goes through the symlink {through!r} "
                    f"(-> {os.readlink(self.root / through)}): files are changed only at their real place inside "
                    "the tree"), path
        entries = self.entries()
        parts = path.split("/")
        inside = next((prefix for end in range(1, len(parts))
                       if (prefix := "/".join(parts[:end])) in entries or prefix in current), None)
        if inside is not None:
            return f"path {path!r} goes inside {inside!r}, which is a file", path
        if (self.root / path).is_dir() and not (self.root / path).is_symlink():
            return f"path {path!r} is a directory of the tree, not a file", path
        if not self.is_evolvable(path):
            if path in entries:
                return (f"{path!r} is a fixed file of the task: only {', '.join(self.evolve)} may change"), path
            return f"{path!r} is not evolvable: it matches none of {', '.join(self.evolve)}", path
        if action == "edit" and path not in current:
            return f"{path!r} does not exist in the parent; to create it, give it whole as a NEW FILE", path
        if action == "delete":
            if path in self.required:
                return f"{path!r} is a required file of the task and may not be deleted", path
            if path not in current:
                return f"{path!r} cannot be deleted: the parent has no such file", path
            if len(current) == 1:
                return f"{path!r} is the last evolvable file; a candidate keeps at least one", path
        return None, path

    def _symlink_on(self, path: str) -> str | None:
        """The first component of `path` (the path itself included) that is a symlink in the tree on disk."""
        parts = path.split("/")
        for end in range(1, len(parts) + 1):
            prefix = "/".join(parts[:end])
            if (self.root / prefix).is_symlink():
                return prefix
        return None

    def materialize(self, bundle: str, dest: Path, *, read_only: bool = True) -> list[str]:
        """Write the whole tree (fixed files from disk, evolvable ones from `bundle`) into the new directory
        `dest`; returns the fixed paths written, made read-only (0444, with `read_only`) so a job cannot change
        them in place.

        A symlink of the tree is recreated only when it resolves inside the tree; one that leads outside is
        left out, so a sandbox never sees a way out of its work dir."""
        files = decode_bundle(bundle)
        dest.mkdir(parents=True)
        fixed = []
        root = self.root.resolve()
        for rel, source in self.fixed_files().items():
            if rel in files:
                continue  # a file the seed had fixed cannot be in a bundle (refused), but never write it twice
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                if source.resolve().is_relative_to(root):
                    target.symlink_to(os.readlink(source))
                continue
            shutil.copyfile(source, target)
            target.chmod(0o444 if read_only else 0o644)
            fixed.append(rel)
        for rel, content in files.items():
            checked = checked_path(rel)  # a bundle from node memory is data: its paths are checked again
            target = dest / checked
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or not target.resolve().is_relative_to(dest.resolve()):
                raise PathRefused(f"bundle path {rel!r} would be written outside {dest}")
            target.write_text(content, encoding="utf-8")
        return fixed

    def map_lines(self, files: Mapping[str, str]) -> list[str]:
        """One line per file of the candidate's whole tree, with its size and whether it may change."""
        lines = []
        paths = sorted({*self.fixed_files(), *files})
        for rel in paths:
            if rel in files:
                lines.append(f"{rel}  ({files[rel].count(chr(10))} lines, evolvable)")
            elif not self.is_evolvable(rel):
                path = self.root / rel
                size = "symlink" if path.is_symlink() else f"{path.stat().st_size} bytes"
                lines.append(f"{rel}  ({size}, fixed)")
        return lines


def bundle_diff(old: str, new: str, old_name: str = "parent", new_name: str = "candidate",
                context: int = 3) -> list[str]:
    """Unified diff lines (no line ends) of two bundles, file by file: `a/PATH` -> `b/PATH`, `/dev/null` for a
    file added or deleted; the names say which programs are compared in a first comment line."""
    before, after = decode_bundle(old), decode_bundle(new)
    lines: list[str] = []
    for path in sorted({*before, *after}):
        a, b = before.get(path), after.get(path)
        if a == b:
            continue
        lines += list(difflib.unified_diff(
            (a or "").splitlines(), (b or "").splitlines(),
            fromfile=f"a/{path}" if a is not None else "/dev/null",
            tofile=f"b/{path}" if b is not None else "/dev/null", n=context, lineterm=""))
    if lines and (old_name, new_name) != ("parent", "candidate"):
        lines.insert(0, f"# {old_name} -> {new_name}")
    return lines


def changed_paths(old: str, new: str) -> list[str]:
    """Paths whose content differs between two bundles (added and deleted files included)."""
    before, after = decode_bundle(old), decode_bundle(new)
    return sorted(path for path in {*before, *after} if before.get(path) != after.get(path))
