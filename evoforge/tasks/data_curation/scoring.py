"""Document-level scoring of a cleaned corpus against the injected ground truth (multisets of words).

For every document, *injected noise* is what the noisy text holds beyond its clean reference (the whole document
for duplicates, fragments, boilerplate pages and junk); *remaining noise* is what the kept output holds beyond the
reference. Each clean reference counts once: the first kept member of a duplicate cluster is compared with it, and
any later kept member is noise in full. Typographic punctuation is folded to ASCII first, so fixing mojibake to
either form counts as fixed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # run with this task's directory on sys.path; type-checked as part of the package
    from evoforge.tasks.data_curation.corpus import DROP_KINDS, NoisyDoc
else:
    from corpus import DROP_KINDS, NoisyDoc

_FOLD = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": "--", "\u2013": "-",
                       "\u00a0": " ", "\u2026": "..."})


def word_counts(text: str) -> Counter[str]:
    return Counter(text.translate(_FOLD).split())


@dataclass
class _Tally:
    docs: int = 0
    dropped: int = 0
    injected: int = 0
    remaining: int = 0
    removed: int = 0
    removed_noise: int = 0
    clean_total: int = 0
    clean_kept: int = 0
    pii_planted: int = 0
    pii_leaked: int = 0

    def add(self, other: _Tally) -> None:
        for name in ("docs", "dropped", "injected", "remaining", "removed", "removed_noise", "clean_total",
                     "clean_kept", "pii_planted", "pii_leaked"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def report(self) -> dict[str, Any]:
        return {
            "docs": self.docs,
            "dropped_fraction": _ratio(self.dropped, self.docs),
            "noise_words": self.injected,
            "noise_recall": round(max(0.0, 1 - self.remaining / self.injected), 4) if self.injected else None,
            "removal_precision": _ratio(self.removed_noise, self.removed),
            "content_kept": _ratio(self.clean_kept, self.clean_total),
            "pii_leak_rate": _ratio(self.pii_leaked, self.pii_planted),
        }


def _ratio(a: float, b: float, empty: float | None = None) -> float | None:
    return round(a / b, 4) if b else empty


def score_documents(docs: list[NoisyDoc], outputs: dict[str, str | None], references: dict[str, str]) -> dict[str, Any]:
    """Metrics for `outputs` (doc id -> kept text or None) over `docs`, overall and per noise kind.

    Returns {"overall": {...}, "by_kind": {kind: {...}}, "score": harmonic mean of noise recall and content kept}.
    """
    by_kind: dict[str, _Tally] = {}
    base_kind = {d.cluster: d.kind for d in docs if d.kind not in DROP_KINDS}
    representative: dict[str, str] = {}
    for d in docs:  # the cluster's own document if kept, else its first kept copy
        if d.cluster is not None and outputs.get(d.id) is not None:
            if not d.should_drop:
                representative[d.cluster] = d.id
            else:
                representative.setdefault(d.cluster, d.id)
    clusters_seen: dict[str, str] = {}
    for d in docs:
        tally = by_kind.setdefault(d.kind, _Tally())
        out = outputs.get(d.id)
        noisy = word_counts(d.text)
        ref = word_counts(references[d.cluster]) if d.cluster else Counter()
        injected = noisy if d.should_drop else noisy - ref
        kept = word_counts(out) if out is not None else Counter()
        tally.docs += 1
        tally.dropped += out is None
        tally.injected += injected.total()
        removed = noisy - kept
        tally.removed += removed.total()
        tally.removed_noise += (removed & injected).total()
        if d.cluster is not None:
            clusters_seen.setdefault(d.cluster, base_kind.get(d.cluster, d.kind))
        if out is not None and d.cluster is not None and representative[d.cluster] == d.id:
            owner = by_kind.setdefault(clusters_seen[d.cluster], _Tally())
            owner.clean_kept += (kept & ref).total()
            tally.remaining += (kept - ref).total()
        else:
            tally.remaining += kept.total()
        tally.pii_planted += len(d.pii)
        tally.pii_leaked += sum(p in out for p in d.pii) if out is not None else 0
    for cluster, kind in clusters_seen.items():
        by_kind.setdefault(kind, _Tally()).clean_total += word_counts(references[cluster]).total()
    overall = _Tally()
    for tally in by_kind.values():
        overall.add(tally)
    summary = overall.report()
    recall, content = summary["noise_recall"] or 0.0, summary["content_kept"] or 0.0
    score = 2 * recall * content / (recall + content) if recall + content > 0 else 0.0
    return {"overall": summary, "by_kind": {k: by_kind[k].report() for k in sorted(by_kind)}, "score": round(score, 6)}
