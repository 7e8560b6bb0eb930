"""A run driven by an async runner abandons the model call its agent waits on when the run is cancelled
(evoforge.llm.cancellation); a synchronous run calls the model as before."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph._internal._runnable import RunnableCallable
from langgraph.graph import START, StateGraph

from evoforge.llm.cancellation import ModelCallCancelled, cancellable
from evoforge.llm.usage import call_model


class HangingModel(BaseChatModel):
    """Answers at once when called synchronously; asynchronously it waits until cancelled."""

    entered: Any = None
    cancelled: Any = None

    @property
    def _llm_type(self) -> str:
        return "hanging"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("at once"))])

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        self.entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


@dataclass
class Box:
    reply: str = ""


def graph_with(model: HangingModel, outcomes: list[str]) -> Any:
    def ask(state: Box) -> dict[str, str]:
        try:
            reply, _ = call_model(model, [HumanMessage("hi")], seed=1)
        except ModelCallCancelled:
            outcomes.append("cancelled")
            raise
        outcomes.append("answered")
        return {"reply": reply}

    builder = StateGraph(Box)
    builder.add_node("ask", RunnableCallable(ask, cancellable(ask), name="ask"))
    builder.add_edge(START, "ask")
    return builder.compile()


def test_cancelling_an_async_run_cancels_the_model_call_it_waits_on() -> None:
    model = HangingModel(entered=threading.Event(), cancelled=threading.Event())
    outcomes: list[str] = []
    graph = graph_with(model, outcomes)

    async def scenario() -> None:
        run = asyncio.create_task(graph.ainvoke({}))
        while not model.entered.is_set():
            await asyncio.sleep(0.05)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, timeout=10)

    asyncio.run(scenario())
    assert model.cancelled.is_set(), "the model call itself was not cancelled"
    assert outcomes == ["cancelled"], "the node went on after its run was cancelled"


def test_a_synchronous_run_calls_the_model_directly() -> None:
    model = HangingModel(entered=threading.Event(), cancelled=threading.Event())
    outcomes: list[str] = []
    assert graph_with(model, outcomes).invoke({})["reply"] == "at once"
    assert outcomes == ["answered"] and not model.entered.is_set()
