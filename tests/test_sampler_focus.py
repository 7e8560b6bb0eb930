"""Which retrieved cognition item the Researcher focuses on (evoforge.agents.sampler._focus_first)."""

from __future__ import annotations

from evoforge.agents.sampler import _focus_first
from evoforge.cognition.store import CognitionItem


def item(item_id: str, kind: str = "prior") -> CognitionItem:
    return CognitionItem(id=item_id, task="t", kind=kind, title=item_id, content=item_id, source="s")


def test_the_focus_is_the_prior_used_least_even_when_a_lesson_is_newer() -> None:
    items = [item("near", "prior"), item("lesson", "insight"), item("far", "prior")]
    ordered = _focus_first(items, {"near": 2, "far": 1})
    assert [i.id for i in ordered] == ["far", "near", "lesson"]
    assert [i.id for i in _focus_first(items, {})] == ["near", "lesson", "far"], "ties go to the most similar"


def test_with_only_lessons_retrieved_the_least_used_lesson_is_the_focus() -> None:
    items = [item("a", "insight"), item("b", "insight")]
    assert [i.id for i in _focus_first(items, {"a": 1})] == ["b", "a"]
