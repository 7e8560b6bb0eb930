"""Sampling and retrieval, the first step of every round: a parent and inspirations from node memory (by the
run's policy), then cognition retrieved with their motivations and analyses as queries."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from evoforge.agents.base import node_view
from evoforge.agents.recorder import node_id_for
from evoforge.cognition.provenance import focus_counts
from evoforge.cognition.store import CognitionItem
from evoforge.config import RunConfig
from evoforge.memory.sampling import select_context
from evoforge.runtime.payloads import CognitionView
from evoforge.runtime.services import services_for
from evoforge.runtime.state import ROUND_RESET, State


def sample_context(state: State, runtime: Runtime[RunConfig]) -> dict[str, Any]:
    """Start a round: reset the per-round fields, choose the parent and inspirations, retrieve cognition."""
    res = services_for(state.run_id, runtime)
    config = res.config
    round_ = state.round + 1
    selection = select_context(
        res.nodes,
        state.run_id,
        lane=state.lane,
        round=round_,
        sampling=config.sampling,
        score=res.task.score,
    )
    sampled = [selection.parent, *selection.inspirations]
    queries = [text for node in sampled for text in (node.motivation, node.analysis) if text and text.strip()]
    items = []
    if config.cognition.top_k > 0:
        focus = config.cognition.focus
        items = res.cognition.search(
            queries or [res.task.description],
            task=res.task.name,
            k=max(config.cognition.top_k, config.cognition.focus_pool) if focus else config.cognition.top_k,
            min_similarity=config.cognition.min_similarity,
        )
        if focus and len(items) > 1:
            items = _focus_first(items, focus_counts(res.database, state.run_id))
        items = items[: config.cognition.top_k]
    cognition: list[CognitionView] = [
        {"id": item.id, "kind": item.kind, "title": item.title, "content": item.content,
         "source": item.source, "similarity": round(float(item.similarity or 0.0), 4)}
        for item in items
    ]
    return {
        **ROUND_RESET,
        "round": round_,
        "node_id": node_id_for(state.run_id, round_, state.lane),
        "policy": selection.policy,
        "island": selection.island,
        "parent": node_view(selection.parent, with_code=True),
        "inspirations": [node_view(node, with_code=False) for node in selection.inspirations],
        "cognition": cognition,
    }


def _focus_first(items: list[CognitionItem], uses: dict[str, int]) -> list[CognitionItem]:
    """`items` (most similar first) with the one least used as a focus so far moved to the front, so that
    successive rounds work through the retrieved ideas instead of circling the nearest one.

    The focus is a human prior whenever one was retrieved; the Analyzer's lessons are shown beside it. Measured
    (benchmarks/search.py, 2026-12-02): with lessons eligible, each new lesson (focused on 0 times) took the
    focus from round 5 on, and the priors not yet tried never came up; the run with the Analyzer off, whose
    focus stayed on the priors, reached 2.50 in 4 minutes."""
    priors = [index for index, item in enumerate(items) if item.kind == "prior"] or list(range(len(items)))
    focus = min(priors, key=lambda index: (uses.get(items[index].id, 0), index))
    return [items[focus], *items[:focus], *items[focus + 1:]]
