"""Cognition: human priors and learned insights, embedded and searched with pgvector."""

from evoforge.cognition.embeddings import Embedder, LocalEmbedder, OpenAIEmbedder, get_embedder
from evoforge.cognition.store import KINDS, CognitionItem, CognitionStore

__all__ = [
    "KINDS",
    "CognitionItem",
    "CognitionStore",
    "Embedder",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "get_embedder",
]
