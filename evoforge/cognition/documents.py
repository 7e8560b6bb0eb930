"""Turning notes into cognition passages: markdown split at headings, plain text and PDF pages split
into chunks of a few hundred words, each passage titled and attributed to its file and sources.

Files are read with langchain-community's document loaders (`TextLoader`, `PyPDFLoader`, one document
per PDF page); the splitting is ours, so a passage never straddles two markdown sections.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_WORDS = 300
"""Passage length cap: MiniLM reads at most 256 word pieces, so longer passages would be cut off."""
MARKDOWN_SUFFIXES = (".md", ".markdown")
SUPPORTED_SUFFIXES = (*MARKDOWN_SUFFIXES, ".txt", ".pdf")

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SOURCE_LINE = re.compile(r"^\W*sources?\W*:\s*(.+?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Passage:
    title: str
    content: str
    source: str


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files to ingest: each file given, and the supported files under each directory (sorted)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
            )
        elif path.suffix.lower() in SUPPORTED_SUFFIXES:
            files.append(path)
        else:
            logger.warning("skipping %s: cognition reads only %s files", path, ", ".join(SUPPORTED_SUFFIXES))
    return files


def passages_from_file(path: Path) -> list[Passage]:
    """The passages of one .md / .txt / .pdf file."""
    suffix = path.suffix.lower()
    if suffix in MARKDOWN_SUFFIXES:
        return split_markdown(_read_text(path), str(path))
    if suffix == ".txt":
        text = _read_text(path)
        return _titled_chunks(path.stem, text, _attribution(str(path), _source_lines(text)))
    if suffix == ".pdf":
        return _pdf_passages(path)
    raise ValueError(f"path: unsupported cognition file {str(path)!r} (expected one of {SUPPORTED_SUFFIXES})")


def split_markdown(text: str, source: str) -> list[Passage]:
    """One passage per heading section (long sections in parts), titled with the heading path
    ("Doc / Section / Subsection"); sources are the section's "Source:" lines, else the file's."""
    sections: list[tuple[list[str], list[str]]] = []  # (heading path, body lines)
    headings: list[tuple[int, str]] = []
    body: list[str] = []
    file_sources: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading is None:
            body.append(line)
            continue
        sections.append(([title for _, title in headings], body))
        if not any(level > 1 for level, _ in headings):
            file_sources += _source_lines("\n".join(body))
        level = len(heading.group(1))
        headings = [(lvl, title) for lvl, title in headings if lvl < level] + [(level, heading.group(2))]
        body = []
    sections.append(([title for _, title in headings], body))

    fallback_title = Path(source).stem
    passages: list[Passage] = []
    for path, lines in sections:
        content = "\n".join(lines).strip()
        if not any(line.strip() and not _SOURCE_LINE.match(line) for line in lines):
            continue  # nothing but attribution
        attribution = _attribution(source, _source_lines(content) or file_sources)
        passages += _titled_chunks(" / ".join(path) or fallback_title, content, attribution)
    return passages


def _source_lines(text: str) -> list[str]:
    return [match.group(1) for line in text.splitlines() if (match := _SOURCE_LINE.match(line))]


def _attribution(path: str, sources: list[str]) -> str:
    return f"{path} — Source: {'; '.join(dict.fromkeys(sources))}" if sources else path


def _paragraphs(text: str) -> list[str]:
    """The blank-line separated paragraphs of `text`; a fenced code block is one paragraph (or part of one),
    blank lines and indentation kept, so code in a note reaches a prompt as it was written."""
    paragraphs: list[str] = []
    current: list[str] = []
    in_fence = False
    for line in text.strip("\n").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        if line.strip() or in_fence:
            current.append(line.rstrip())
        elif current:
            paragraphs.append("\n".join(current))
            current = []
    if current:
        paragraphs.append("\n".join(current))
    return paragraphs


def _chunks(text: str, max_words: int = MAX_WORDS) -> list[str]:
    """Paragraphs packed into chunks of at most `max_words` words (a longer paragraph is cut)."""
    pieces: list[tuple[int, str]] = []
    for paragraph in _paragraphs(text):
        words = paragraph.split()
        if len(words) <= max_words:
            pieces.append((len(words), paragraph))
        else:
            cuts = [words[i : i + max_words] for i in range(0, len(words), max_words)]
            pieces += [(len(cut), " ".join(cut)) for cut in cuts]
    chunks: list[tuple[int, list[str]]] = []
    for size, piece in pieces:
        if not size:
            continue
        if chunks and chunks[-1][0] + size <= max_words:
            chunks[-1] = (chunks[-1][0] + size, [*chunks[-1][1], piece])
        else:
            chunks.append((size, [piece]))
    return ["\n\n".join(parts) for _, parts in chunks]


def _titled_chunks(title: str, text: str, source: str) -> list[Passage]:
    chunks = _chunks(text)
    if len(chunks) == 1:
        return [Passage(title, chunks[0], source)]
    return [Passage(f"{title} (part {i}/{len(chunks)})", chunk, source) for i, chunk in enumerate(chunks, 1)]


def _loaders() -> Any:
    # langchain-community warns on import that it is being sunset; its loaders still work, and the
    # warning would be repeated to every user of `evoforge cognition add`.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community import document_loaders
    return document_loaders


def _read_text(path: Path) -> str:
    loader = _loaders().TextLoader(str(path), encoding="utf-8")
    return "\n".join(document.page_content for document in loader.load())


def _pdf_passages(path: Path) -> list[Passage]:
    documents = _loaders().PyPDFLoader(str(path)).load()
    title = next((str(d.metadata["title"]) for d in documents if d.metadata.get("title")), path.stem)
    pages = [document.page_content for document in documents]
    source = _attribution(str(path), _source_lines("\n".join(pages)))
    passages: list[Passage] = []
    for number, text in enumerate(pages, 1):
        if text.strip():
            passages += _titled_chunks(f"{title} p.{number}", text, source)
    return passages
