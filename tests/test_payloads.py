"""The TypedDicts of the graph's payloads (runtime/payloads.py) against what builds them: a TypedDict written
by hand beside a dataclass or a reset drifts from it silently, since nothing checks a dict's keys at run time.
(A stage's result has no such twin: `run_stage` builds the `StageResult` itself.)"""

from __future__ import annotations

from dataclasses import fields

from evoforge.agents.base import add_usage
from evoforge.graph.builder import graph
from evoforge.llm.usage import Usage
from evoforge.runtime.payloads import RoleUsage
from evoforge.runtime.state import ROUND_RESET, OutputState, RoundReset, State

RUN_WIDE = {"rounds_since_best", "tokens_used"}
"""State's fields that outlive a round, besides OutputState's."""


def test_the_round_reset_covers_every_per_round_field_of_the_state() -> None:
    per_round = {f.name for f in fields(State)} - {f.name for f in fields(OutputState)} - RUN_WIDE
    assert set(ROUND_RESET) == RoundReset.__required_keys__ == per_round


def test_role_usage_counts_every_field_of_a_usage() -> None:
    one = Usage(tokens_in=10, tokens_out=5, seconds=0.5, calls=1, tokens_cached=4)
    usage = add_usage(add_usage({}, "researcher", one), "researcher", one)
    assert usage == {"researcher": {"tokens_in": 20, "tokens_out": 10, "seconds": 1.0, "calls": 2, "tokens_cached": 8}}
    assert RoleUsage.__required_keys__ == {f.name for f in fields(Usage)}


def test_a_usage_entry_from_before_cached_tokens_were_counted_still_adds_up() -> None:
    old = {"tokens_in": 1, "tokens_out": 1, "seconds": 1.0, "calls": 1}
    usage = add_usage({"analyzer": old}, "analyzer", Usage(tokens_in=2, calls=1, tokens_cached=2))
    assert usage["analyzer"] == {"tokens_in": 3, "tokens_out": 1, "seconds": 1.0, "calls": 2, "tokens_cached": 2}
    assert old == {"tokens_in": 1, "tokens_out": 1, "seconds": 1.0, "calls": 1}, "the state's own dict is not changed"


def test_the_state_has_a_json_schema_for_studio() -> None:
    """pydantic builds it from the TypedDicts, and refuses typing.TypedDict before Python 3.12."""
    schema = graph.get_output_jsonschema()
    assert {"candidate", "static_report", "novelty_report", "stage_results", "usage"} <= set(schema["properties"])
    assert set(schema["$defs"]["Candidate"]["required"]) == {
        "name", "motivation", "code", "diff", "edit_mode", "repairs", "conversation"}
