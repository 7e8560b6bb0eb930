"""Seed data-curation pipeline: trims whitespace and drops very short documents; no dedup, no markup handling."""

import re

# EVOLVE-BLOCK-START
MIN_CHARS = 100


def clean_document(text: str, meta: dict) -> str | None:
    """Return the cleaned text of one document, or None to drop it. `meta` holds {"url": str}."""
    text = re.sub(r"[ \t]+\n", "\n", text).strip()
    if len(text) < MIN_CHARS:
        return None
    return text


def select_documents(docs: list[dict]) -> list[str]:
    """Corpus-level step over the cleaned survivors [{"id", "text", "meta"}, ...] in corpus order:
    return the ids to keep (e.g. after deduplication)."""
    return [d["id"] for d in docs]
# EVOLVE-BLOCK-END
