"""Stand-ins for what a node looks up (`services_for`, its model, its prompt), so the node's own logic runs
without Postgres, a sandbox or a model: each test names the handles it needs and what they answer."""

from __future__ import annotations

import dataclasses
from types import ModuleType, SimpleNamespace
from typing import Any, get_type_hints

import pytest
from langchain_core.messages import BaseMessage, HumanMessage
from langgraph.runtime import Runtime

from evoforge.config import RunConfig
from evoforge.llm.usage import Usage
from evoforge.runtime.state import State, extend_or_reset
from evoforge.tasks.spec import load_task

TASK = load_task("circle_packing")
SEED = TASK.seed_code()
"""A real parent: the seed has an EVOLVE-BLOCK, fixed code after it and the task's entry point."""

_REDUCED = {name for name, hint in get_type_hints(State, include_extras=True).items()
            if extend_or_reset in getattr(hint, "__metadata__", ())}


class StandInNodes:
    """The NodeStore queries of the Novelty-Checker and the Debugger: by default no node matches."""

    def __init__(self, same_code: Any = None, nearest: tuple[tuple[Any, float], ...] = ()) -> None:
        self.same_code, self.nearest = same_code, nearest

    def find_by_code_hash(self, run_id: str, code_hash: str) -> Any:
        return self.same_code

    def nearest_nodes(self, run_id: str, embedding: list[float], k: int) -> list[tuple[Any, float]]:
        return list(self.nearest)[:k]



class StandInCognition:
    """The cognition store's listing: no priors beyond those a test puts in the round's state."""

    def list(self, task: str | None = None, kind: str | None = None) -> list[Any]:
        return []


def use_stand_ins(monkeypatch: pytest.MonkeyPatch, module: ModuleType, config: RunConfig, **handles: Any) -> Any:
    """Make `module`'s node find a Services-like object holding `config`, the circle_packing task and
    `handles`; its prompt renders to one placeholder message (the templates are tested in test_prompts.py)."""
    res = SimpleNamespace(config=config, task=TASK, **{"nodes": StandInNodes(), "cognition": StandInCognition(),
                                                       **handles})
    monkeypatch.setattr(module, "services_for", lambda run_id, runtime: res)
    for renderer in ("render", "render_follow_up"):
        if hasattr(module, renderer):
            monkeypatch.setattr(module, renderer, lambda *args, **variables: [HumanMessage("the prompt")])
    return res


class ScriptedAsk:
    """Stands in for `agents.base.ask`: each call gets the next scripted reply, and an exception is raised."""

    def __init__(self, *replies: str | Exception) -> None:
        self.replies = list(replies)
        self.calls: list[list[BaseMessage]] = []

    def __call__(self, res: Any, role: str, messages: list[BaseMessage], state: State, **_: Any) -> tuple[str, Usage]:
        self.calls.append(list(messages))
        assert len(self.calls) <= len(self.replies), f"{role} was asked more than {len(self.replies)} times"
        reply = self.replies[len(self.calls) - 1]
        if isinstance(reply, Exception):
            raise reply
        return reply, Usage(tokens_in=100, tokens_out=20, seconds=0.5, calls=1)


def runtime(config: RunConfig) -> Runtime[RunConfig]:
    return Runtime(context=config)


def round_state(**fields: Any) -> State:
    """A round in progress on the seed (round 1 of run `run`); `fields` override."""
    parent = {"id": "run-r0000-l0", "name": "seed", "score": 0.96, "motivation": "", "analysis": "", "code": SEED}
    return State(**{"run_id": "run", "round": 1, "node_id": "run-r0001-l0", "parent": parent, **fields})


def candidate(code: str = SEED.replace("RING_RADIUS = 0.3065", "RING_RADIUS = 0.31"), **fields: Any) -> dict[str, Any]:
    return {"name": "wider_ring", "motivation": "a wider ring leaves room in the middle", "code": code, "diff": "",
            "edit_mode": "diff", **fields}


def advance(state: State, update: dict[str, Any]) -> State:
    """The state after a node's update, applied the way the graph applies it (lists with a reducer grow)."""
    grown = {name: extend_or_reset(getattr(state, name), value) for name, value in update.items() if name in _REDUCED}
    return dataclasses.replace(state, **{**update, **grown})
