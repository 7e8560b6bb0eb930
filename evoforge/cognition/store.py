"""The cognition base: human priors and learned insights, searchable by embedding (pgvector, HNSW).

Items are unique per (task, content): the id is derived from both, so adding or ingesting the same
text again is a no-op (and costs no embedding). An item with task None applies to every task.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pgvector import Vector

from evoforge.cognition.documents import expand_paths, passages_from_file
from evoforge.cognition.embeddings import Embedder
from evoforge.memory.database import Database, EmbeddingMismatchError

logger = logging.getLogger(__name__)

KINDS = ("prior", "insight")
_COLUMNS = "id, task, kind, title, content, source, node_id"
_ALIASED_COLUMNS = ", ".join(f"c.{column}" for column in _COLUMNS.split(", "))


@dataclass
class CognitionItem:
    id: str
    task: str | None
    kind: str
    """"prior" (human knowledge) or "insight" (written back by the Analyzer)."""
    title: str
    content: str
    source: str
    node_id: str | None = None
    """For an insight: the node it was learnt from."""
    similarity: float | None = None
    """Cosine similarity to the best-matching query (search results only)."""


@dataclass(frozen=True)
class _Entry:
    task: str | None
    title: str
    content: str
    source: str
    kind: str
    node_id: str | None

    @property
    def content_hash(self) -> str:
        """Whitespace differences do not make new content."""
        return hashlib.sha256(" ".join(self.content.split()).encode()).hexdigest()

    @property
    def id(self) -> str:
        return "cog-" + hashlib.sha256(f"{self.task or ''}\0{self.content_hash}".encode()).hexdigest()[:24]


def novel_lessons(embedder: Embedder, held: list[str], lessons: list[str], threshold: float) -> list[str]:
    """The `lessons` that are no restatement of a `held` lesson or of an earlier one of `lessons`: the embedding
    of each one's text is below `threshold` similar to every other's. Measured (circle_packing, the embedded 1.5B
    model, 2026-12-08): three lessons of one run, "The improved packing method[_v2|_v3] demonstrates the
    importance of carefully selecting the parameters...", were 0.95-0.97 similar to each other, while distinct
    lessons of that run and of data_curation's were at most 0.76."""
    if not lessons:
        return []
    vectors = np.asarray(embedder.embed([*held, *lessons]), dtype=np.float64)
    kept: list[str] = []
    kept_vectors = list(vectors[: len(held)])
    for lesson, vector in zip(lessons, vectors[len(held):], strict=True):
        if all(float(vector @ other) < threshold for other in kept_vectors):
            kept.append(lesson)
            kept_vectors.append(vector)
    return kept


class CognitionStore:
    """Priors and insights of every task in one database, embedded with `embedder`."""

    def __init__(self, database: Database, embedder: Embedder) -> None:
        self.database = database
        self.embedder = embedder
        self._dim_checked = False

    def _check_dim(self) -> None:
        if self._dim_checked:
            return
        if self.embedder.dim != self.database.embedding_dim:
            raise EmbeddingMismatchError(
                f"embedder: {self.embedder.name!r} gives {self.embedder.dim}-d vectors but the database "
                f"stores {self.database.embedding_dim}-d ones"
            )
        self._dim_checked = True

    def add(
        self,
        task: str | None,
        content: str,
        *,
        title: str,
        source: str,
        kind: str = "prior",
        node_id: str | None = None,
    ) -> str | None:
        """Add one item; returns its id, or None when the task already holds this content."""
        return self._add([_Entry(task, title, content, source, kind, node_id)])[0]

    def ingest_files(self, paths: Iterable[Path], task: str | None) -> int:
        """Add the passages of .md / .txt / .pdf files (directories are searched); returns how many
        were new. A file that cannot be read is logged and skipped."""
        entries: list[_Entry] = []
        for path in expand_paths(paths):
            try:
                passages = passages_from_file(path)
            except Exception as exc:  # a broken PDF or unreadable file must not stop the others
                logger.warning("skipping cognition file %s: %s: %s", path, type(exc).__name__, exc)
                continue
            entries += [_Entry(task, p.title, p.content, p.source, "prior", None) for p in passages]
        added = sum(item_id is not None for item_id in self._add(entries))
        logger.info("cognition for task %r: %d new of %d passages", task, added, len(entries))
        return added

    def sync_files(self, paths: Iterable[Path], task: str | None) -> tuple[int, int]:
        """Make the priors ingested from these files what the files hold now: ingest their passages, and
        retire the passages they held before and no longer do (an edited note). Returns (added, retired)."""
        files = expand_paths(paths)
        added = self.ingest_files(files, task)
        current = [_Entry(task, p.title, p.content, p.source, "prior", None).id
                   for path in files for p in passages_from_file(path)]
        with self.database.pool.connection() as conn:
            retired = conn.execute(
                "UPDATE cognition SET retired_at = now() WHERE kind = 'prior' AND node_id IS NULL "
                "AND coalesce(task, '') = %s AND split_part(source, ' — Source: ', 1) = ANY(%s) "
                "AND NOT id = ANY(%s) AND retired_at IS NULL",
                (task or "", [str(path) for path in files], current),
            ).rowcount
        if retired:
            logger.info("cognition for task %r: %d passages retired (no longer in their notes)", task, retired)
        return added, retired

    def _add(self, entries: builtins.list[_Entry]) -> builtins.list[str | None]:
        for entry in entries:
            if entry.kind not in KINDS:
                raise ValueError(f"kind: expected one of {KINDS}, got {entry.kind!r}")
            if not entry.content.strip():
                raise ValueError(f"content: expected text, got {entry.content!r} (title {entry.title!r})")
        if not entries:
            return []
        ids = [entry.id for entry in entries]
        with self.database.pool.connection() as conn:
            present = {
                row["id"] for row in conn.execute("SELECT id FROM cognition WHERE id = ANY(%s)", (ids,))
            }
            # a passage back in its notes after an edit had retired it
            conn.execute("UPDATE cognition SET retired_at = NULL WHERE id = ANY(%s) AND retired_at IS NOT NULL",
                         (list(present),))
        new = {entry.id: entry for entry in entries if entry.id not in present}  # also drops repeats
        inserted: set[str] = set()
        if new:
            self._check_dim()
            vectors = self.embedder.embed([f"{entry.title}\n{entry.content}" for entry in new.values()])
            with self.database.pool.connection() as conn, conn.transaction():
                for (item_id, entry), vector in zip(new.items(), vectors, strict=True):
                    row = conn.execute(
                        f"INSERT INTO cognition ({_COLUMNS}, content_hash, embedding) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                        (
                            item_id,
                            entry.task,
                            entry.kind,
                            entry.title,
                            entry.content,
                            entry.source,
                            entry.node_id,
                            entry.content_hash,
                            Vector(vector),
                        ),
                    ).fetchone()
                    if row is not None:
                        inserted.add(item_id)
        # An id appearing twice in `entries` counts as added once.
        result: builtins.list[str | None] = []
        for item_id in ids:
            result.append(item_id if item_id in inserted else None)
            inserted.discard(item_id)
        return result

    def search(
        self, queries: builtins.list[str], *, task: str | None, k: int, min_similarity: float = -1.0
    ) -> builtins.list[CognitionItem]:
        """The k items most similar to any of the queries (each item once, at its best similarity),
        among the task's items and the global ones (every item when `task` is None)."""
        queries = [query for query in queries if query.strip()]
        if k <= 0 or not queries:
            return []
        self._check_dim()
        vectors = [Vector(vector) for vector in self.embedder.embed(queries)]
        # coalesce(task, '') is how the unique index keys items: a task with few items is then read
        # through that index and sorted, instead of walking the HNSW graph past every other task's items
        where = "WHERE c.retired_at IS NULL" + ("" if task is None else " AND coalesce(c.task, '') IN (%(task)s, '')")
        best: dict[str, CognitionItem] = {}
        with self.database.pool.connection() as conn, conn.transaction():
            self.database.configure_hnsw_scan(conn)
            rows = conn.execute(
                "SELECT found.* FROM unnest(%(queries)s::vector[]) AS q (v) CROSS JOIN LATERAL ("
                f"SELECT {_ALIASED_COLUMNS}, 1 - (c.embedding <=> q.v) AS similarity FROM cognition c {where} "
                "ORDER BY c.embedding <=> q.v LIMIT %(k)s) found",
                {"queries": vectors, "task": task, "k": k},
            ).fetchall()
        for row in rows:
            item = item_from_row(row)
            held = best.get(item.id)
            if held is None or (item.similarity or 0.0) > (held.similarity or 0.0):
                best[item.id] = item
        ranked = sorted(best.values(), key=lambda item: (-(item.similarity or 0.0), item.id))
        return [item for item in ranked if (item.similarity or 0.0) >= min_similarity][:k]

    def get(self, ids: builtins.list[str]) -> builtins.list[CognitionItem]:
        """The items with these ids, in the order given (unknown ids are left out)."""
        with self.database.pool.connection() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM cognition WHERE id = ANY(%s)", (ids,)).fetchall()
        by_id = {row["id"]: item_from_row(row) for row in rows}
        return [by_id[item_id] for item_id in ids if item_id in by_id]

    def count(self, task: str | None) -> int:
        """How many items belong to `task` exactly (None: the global items), retired ones left out."""
        with self.database.pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM cognition WHERE coalesce(task, '') = %s AND retired_at IS NULL",
                (task or "",),
            ).fetchone()
        return int(row["n"]) if row else 0

    def list(self, task: str | None = None, kind: str | None = None) -> builtins.list[CognitionItem]:
        """Every item (task None), or a task's items together with the global ones; oldest first; retired
        priors left out. `kind` keeps only priors or only insights."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        with self.database.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM cognition WHERE (%(task)s::text IS NULL OR task = %(task)s OR task IS NULL) "
                "AND (%(kind)s::text IS NULL OR kind = %(kind)s) AND retired_at IS NULL ORDER BY created_at, id",
                {"task": task, "kind": kind},
            ).fetchall()
        return [item_from_row(row) for row in rows]


def item_from_row(row: dict[str, Any]) -> CognitionItem:
    """A `CognitionItem` from a row holding the cognition columns (and, for searches, `similarity`)."""
    similarity = row.get("similarity")
    return CognitionItem(
        id=row["id"],
        task=row["task"],
        kind=row["kind"],
        title=row["title"],
        content=row["content"],
        source=row["source"],
        node_id=row["node_id"],
        similarity=float(similarity) if similarity is not None else None,
    )
