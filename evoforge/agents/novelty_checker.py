"""The Novelty-Checker: catches echoes and repeats before they cost an evaluation.

A program identical to a node's up to comments, docstrings, formatting and local names (the same
fingerprint, memory/fingerprint.py) is a duplicate outright; a parameter experiment (one constant of the parent
changed, constant_tuning.py) with a new fingerprint is novel; otherwise the embedding of motivation and
code is compared with the run's nodes in pgvector: above `duplicate_similarity` it is a duplicate, in the grey
band down to `judge_similarity` an LLM judge decides.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from langgraph.runtime import Runtime

from evoforge.agents.base import add_usage, ask
from evoforge.agents.code_view import without_docstrings
from evoforge.agents.constant_tuning import TUNED_CONSTANT
from evoforge.agents.editing import evolvable_text
from evoforge.agents.prompting import render
from evoforge.cognition.embeddings import Embedder
from evoforge.config import RunConfig
from evoforge.llm.usage import LLMCallError
from evoforge.memory.fingerprint import code_hash
from evoforge.runtime.payloads import NoveltyReport, NoveltyVerdict
from evoforge.runtime.services import services_for
from evoforge.runtime.state import State

log = logging.getLogger(__name__)
CHUNK_LINES = 24
"""MiniLM reads at most 256 tokens: longer code is embedded in chunks of this many lines and averaged."""


def embed_candidate(embedder: Embedder, motivation: str, code: str) -> list[float]:
    """One unit vector for a candidate: the mean of its motivation's and its code chunks' embeddings (of the
    code without docstrings, as the Researcher edits it, so a child is not told apart from its parent by the
    docstrings it was never shown).

    The Novelty-Checker and the Recorder both need it in a round; the run's embedder keeps the vectors of recent
    texts (cognition/embeddings.py:CachedEmbedder), so the model sees the candidate's texts once, and a code chunk
    it shares with an earlier candidate of the process (its parent's, mostly) not at all."""
    lines = evolvable_text(without_docstrings(code)).splitlines()
    chunks = ["\n".join(lines[i : i + CHUNK_LINES]) for i in range(0, len(lines), CHUNK_LINES)]
    texts = [t for t in [motivation.strip(), *chunks] if t.strip()] or [code]
    mean = np.asarray(embedder.embed(texts), dtype=np.float64).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    vector: list[float] = (mean / norm if norm > 0 else mean).tolist()
    return vector


def check_novelty(state: State, runtime: Runtime[RunConfig]) -> dict[str, Any]:
    """Verdict novel | duplicate with the nearest node; a duplicate goes back to the Researcher until the bound."""
    res = services_for(state.run_id, runtime)
    assert state.candidate is not None
    candidate = state.candidate
    usage = state.usage
    same = res.nodes.find_by_code_hash(state.run_id, code_hash(candidate["code"]))
    report: NoveltyReport
    if same is not None:
        report = {"verdict": "duplicate", "nearest_id": same.id, "nearest_name": same.name, "similarity": 1.0,
                  "reason": "the program is the same as an existing node's up to comments, docstrings, "
                            "formatting and the names of local variables"}
    elif candidate.get("edit_mode") == TUNED_CONSTANT:
        # one constant of a node changed: a new point of a parameter the parent has, near it by construction;
        # no embedding tells whether it scores better, only the evaluation does
        report = {"verdict": "novel", "nearest_id": None, "nearest_name": None, "similarity": 0.0,
                  "reason": "a parameter experiment on the parent (one constant changed); the fingerprint is new"}
    else:
        embedding = embed_candidate(res.embedder, candidate["motivation"], candidate["code"])
        nearest = res.nodes.nearest_nodes(state.run_id, embedding, 1)
        report = {"verdict": "novel", "nearest_id": None, "nearest_name": None, "similarity": 0.0, "reason": ""}
        if nearest:
            node, similarity = nearest[0]
            report.update({"nearest_id": node.id, "nearest_name": node.name, "similarity": round(float(similarity), 4)})
            if similarity >= res.config.novelty.duplicate_similarity:
                report.update({"verdict": "duplicate",
                               "reason": f"embedding similarity {similarity:.4f} is above the duplicate threshold"})
            elif similarity >= res.config.novelty.judge_similarity:
                messages = render(res.task, "novelty_judge", nearest=node, candidate=candidate)
                try:
                    reply, call_usage = ask(res, "novelty_judge", messages, state,
                                            attempt=state.novelty_retries)
                    usage = add_usage(usage, "novelty_judge", call_usage)
                    first, _, rest = reply.strip().partition("\n")
                    verdict: NoveltyVerdict = "duplicate" if "DUPLICATE" in first.upper() else "novel"
                    report.update({"verdict": verdict,
                                   "reason": f"judge: {first.strip()} {rest.strip()[:300]}".strip()})
                except LLMCallError as exc:
                    # Without a judge the grey band is given the benefit of the doubt: evaluation is the real test.
                    log.warning("novelty judge unavailable, treating as novel: %s", exc)
                    report["reason"] = (f"judge unavailable ({exc}); similarity {similarity:.4f} below the hard "
                                        "threshold")
    update: dict[str, Any] = {"novelty_report": report, "usage": usage}
    if report["verdict"] == "duplicate":
        retries = state.novelty_retries + 1
        update["novelty_retries"] = retries
        if report["nearest_id"] == (state.parent.get("id") if state.parent else None):
            # an echo of the parent is a change not written, not an idea already tried
            advice = "it is the parent again: write the code that changes the parent as the idea says"
        else:
            advice = "that idea was tried: propose a different idea"
        update["feedback"] = [
            f"'{candidate['name']}' duplicates node '{report['nearest_name']}' (similarity {report['similarity']}): "
            f"{report['reason']}; {advice}."
        ]
        if retries > res.config.bounds.max_novelty_retries:
            update["status"] = "duplicate"
            update["error"] = f"duplicate of {report['nearest_id']}: {report['reason']}"
    return update
