"""Build the noisy training corpus, its ground truth and the held-out clean split, offline and reproducibly.

Clean text comes only from the Python standard library of the running interpreter (fixed for a given Python
version): every docstring of at least `MIN_DOC_CHARS` characters in `sysconfig.get_paths()["stdlib"]` (sorted
relative paths, AST order; test suites, IDLE, lib2to3, tkinter, turtledemo, ensurepip and site-packages
excluded) and the language-reference topics in `pydoc_data/topics.py`, cut at blank lines into chunks.
Exact repeats are dropped. `CorpusBundle.clean_sha256` hashes the clean documents so two machines can
confirm they built the same corpus.

A stable hash of each document's key puts it in the held-out split (never shown to the candidate) or the
training pool. Every training document then gets one treatment (clean, html, boilerplate, pii, mojibake), and
extra documents are added (exact and near duplicates, truncated fragments, boilerplate-only pages, binary junk);
the whole list is shuffled by the seed. `python corpus.py OUT_DIR` writes it all as JSON lines for inspection.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import sys
import sysconfig
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # run with this task's directory on sys.path; type-checked as part of the package
    from evoforge.tasks.data_curation import noise
else:
    import noise

MIN_DOC_CHARS = 200
TOPIC_CHUNK_CHARS = 1500
SKIPPED_DIRS = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip", "site-packages", "__pycache__"}
)
TREATMENTS = (("clean", 0.36), ("html", 0.18), ("boilerplate", 0.16), ("pii", 0.16), ("mojibake", 0.14))
EXTRAS = {"exact_dup": 0.08, "near_dup": 0.08, "fragment": 0.06, "boilerplate_page": 0.04, "junk": 0.02}
DROP_KINDS = frozenset({"exact_dup", "near_dup", "fragment", "boilerplate_page", "junk"})


@dataclass(frozen=True)
class CleanDoc:
    key: str
    """Stable identity: stdlib-relative path and qualified name, or the pydoc topic and chunk number."""
    text: str


@dataclass
class NoisyDoc:
    """One document of the training corpus, with its ground truth (the candidate sees only id, text and meta)."""

    id: str
    text: str
    meta: dict[str, str]
    kind: str
    """clean | html | boilerplate | pii | mojibake | exact_dup | near_dup | fragment | boilerplate_page | junk"""
    cluster: str | None
    """The clean document this one carries (its own, or the one it duplicates); None for pure noise."""
    pii: list[str] = field(default_factory=list)

    @property
    def should_drop(self) -> bool:
        return self.kind in DROP_KINDS


@dataclass
class CorpusBundle:
    docs: list[NoisyDoc]
    references: dict[str, str]
    """cluster key -> the clean text a perfect pipeline would keep."""
    heldout: list[str]
    clean_sha256: str
    seed: int

    def sample(self, n: int | None) -> list[NoisyDoc]:
        """About `n` documents in corpus order, taking whole duplicate clusters (a copy never comes without the
        document it copies); None or n >= len(docs) gives every document."""
        if n is None or n >= len(self.docs):
            return list(self.docs)
        groups: dict[str, list[NoisyDoc]] = {}
        for d in self.docs:
            groups.setdefault(d.cluster or d.id, []).append(d)
        chosen: set[str] = set()
        for key in sorted(groups, key=lambda k: _stable_fraction(f"{self.seed}:{k}")):
            if len(chosen) >= n:
                break
            chosen.update(d.id for d in groups[key])
        return [d for d in self.docs if d.id in chosen]

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for d in self.docs:
            kinds[d.kind] = kinds.get(d.kind, 0) + 1
        return {
            "documents": len(self.docs),
            "noisy_chars": sum(len(d.text) for d in self.docs),
            "heldout_documents": len(self.heldout),
            "kinds": dict(sorted(kinds.items())),
            "clean_sha256": self.clean_sha256,
            "python": sys.version.split()[0],
            "seed": self.seed,
        }


def _docstrings(stdlib: Path) -> list[CleanDoc]:
    docs = []
    files = sorted(
        p for p in stdlib.rglob("*.py") if not SKIPPED_DIRS.intersection(p.relative_to(stdlib).parts[:-1])
    )
    for path in files:
        rel = path.relative_to(stdlib).as_posix()
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
            print(f"corpus: skipping {rel}: {exc}", file=sys.stderr)
            continue
        pending: deque[tuple[str, ast.AST]] = deque([("", tree)])
        while pending:
            prefix, node = pending.popleft()
            name = prefix
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}.{node.name}" if prefix else node.name
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                text = ast.get_docstring(node, clean=True)
                if text and len(text) >= MIN_DOC_CHARS:
                    docs.append(CleanDoc(f"{rel}::{name or '<module>'}", text.strip()))
            pending.extend((name, child) for child in ast.iter_child_nodes(node))
    return docs


def _topics(stdlib: Path) -> list[CleanDoc]:
    # Parsed, not imported: the literal dict is the data and importing would depend on sys.path.
    tree = ast.parse((stdlib / "pydoc_data" / "topics.py").read_text(encoding="utf-8"))
    topics = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign))
    docs: list[CleanDoc] = []
    for topic in sorted(topics):
        chunk: list[str] = []
        paragraphs = [p.strip("\n") for p in topics[topic].split("\n\n") if p.strip()]
        for para in [*paragraphs, None]:
            if chunk and (para is None or sum(map(len, chunk)) + len(para) > TOPIC_CHUNK_CHARS):
                text = "\n\n".join(chunk)
                if len(text) >= MIN_DOC_CHARS:
                    docs.append(CleanDoc(f"pydoc_data/topics.py::{topic}#{len(docs)}", text))
                chunk = []
            if para is not None:
                chunk.append(para)
    return docs


def clean_documents(cache_dir: Path | None = None) -> list[CleanDoc]:
    """All clean documents, in a machine-independent order, exact repeats removed.

    With `cache_dir`, the list is kept there as JSON keyed by the Python version (the stdlib is fixed for it) and
    reused while its recorded hash still matches; an unwritable cache is reported and skipped.
    """
    cache = cache_dir / f"clean-py{sys.version.split()[0]}.json" if cache_dir else None
    if cache is not None and cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            docs = [CleanDoc(k, t) for k, t in stored["docs"]]
            if _digest(docs) == stored["sha256"]:
                return docs
            print(f"corpus: cache {cache} does not match its hash; rebuilding", file=sys.stderr)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"corpus: unreadable cache {cache} ({exc}); rebuilding", file=sys.stderr)
    docs = _extract_clean_documents()
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"sha256": _digest(docs), "docs": [[d.key, d.text] for d in docs]}))
            tmp.replace(cache)
        except OSError as exc:
            print(f"corpus: cannot write cache {cache} ({exc}); continuing without it", file=sys.stderr)
    return docs


def _digest(docs: list[CleanDoc]) -> str:
    return hashlib.sha256("\x00".join(f"{d.key}\x01{d.text}" for d in docs).encode()).hexdigest()


def _extract_clean_documents() -> list[CleanDoc]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    unique = []
    for doc in [*_docstrings(stdlib), *_topics(stdlib)]:
        fingerprint = " ".join(doc.text.lower().split())
        if fingerprint not in seen:
            seen.add(fingerprint)
            unique.append(doc)
    return unique


def _stable_fraction(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def _url(key: str) -> str:
    path, _, name = key.partition("::")
    return f"https://docs.example.org/{path.removesuffix('.py')}/{name.replace('#', '-').replace('<', '').replace('>', '')}"


def build_corpus(seed: int = 0, heldout_fraction: float = 0.1, cache_dir: Path | None = None) -> CorpusBundle:
    """The noisy corpus for `seed` (treatments, extras and order depend on it; the clean split does not)."""
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    clean = clean_documents(cache_dir)
    digest = _digest(clean)
    heldout = [d.text for d in clean if _stable_fraction(d.key) < heldout_fraction]
    pool = [d for d in clean if _stable_fraction(d.key) >= heldout_fraction]
    rng = random.Random(seed)
    kinds, weights = [k for k, _ in TREATMENTS], [w for _, w in TREATMENTS]
    docs: list[NoisyDoc] = []
    for d in pool:
        kind = rng.choices(kinds, weights)[0]
        text, pii = noise.apply(kind, d.text, rng)
        docs.append(NoisyDoc("", text, {"url": _url(d.key)}, kind, d.key, pii))
    base = list(docs)
    for kind, share in EXTRAS.items():
        for _ in range(round(share * len(base))):
            src = rng.choice(base)
            if kind == "exact_dup":
                docs.append(NoisyDoc("", src.text, dict(src.meta), kind, src.cluster, list(src.pii)))
            elif kind == "near_dup":
                url = src.meta["url"].replace("docs.example.org", rng.choice(noise.MIRRORS))
                docs.append(NoisyDoc("", noise.near_duplicate(src.text, rng), {"url": url}, kind, src.cluster))
            elif kind == "fragment":
                url = src.meta["url"] + f"?part={rng.randint(2, 9)}"
                docs.append(NoisyDoc("", noise.fragment(src.text, rng), {"url": url}, kind, None))
            elif kind == "boilerplate_page":
                text, url = noise.boilerplate_page(rng)
                docs.append(NoisyDoc("", text, {"url": url}, kind, None))
            else:
                text, url = noise.junk(rng)
                docs.append(NoisyDoc("", text, {"url": url}, kind, None))
    rng.shuffle(docs)
    for i, noisy in enumerate(docs):
        noisy.id = f"doc-{i:05d}"
    references = {c.key: c.text for c in pool}
    return CorpusBundle(docs, references, heldout, digest, seed)


def write_bundle(bundle: CorpusBundle, out_dir: Path) -> None:
    """Write corpus.jsonl (what the candidate sees), truth.jsonl, references.json, heldout.json, summary.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "corpus.jsonl", "w") as f:
        for d in bundle.docs:
            f.write(json.dumps({"id": d.id, "text": d.text, "meta": d.meta}) + "\n")
    with open(out_dir / "truth.jsonl", "w") as f:
        for d in bundle.docs:
            f.write(json.dumps({k: v for k, v in asdict(d).items() if k not in ("text", "meta")}) + "\n")
    (out_dir / "references.json").write_text(json.dumps(bundle.references))
    (out_dir / "heldout.json").write_text(json.dumps(bundle.heldout))
    (out_dir / "summary.json").write_text(json.dumps(bundle.summary(), indent=2))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python corpus.py OUT_DIR [SEED]")
    built = build_corpus(int(sys.argv[2]) if len(sys.argv) == 3 else 0)
    write_bundle(built, Path(sys.argv[1]))
    print(json.dumps(built.summary(), indent=2))
