"""The agents' reply parsers, reply text in and parsed result (or an EditError that says what to fix) out: the
Researcher's proposal, edits and the definitions merge, the Debugger's patch and FIX line, the Analyzer's report
and insights. The cases test_editing.py already covers are not repeated here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from node_stand_ins import ScriptedAsk, advance, candidate, round_state, runtime, use_stand_ins

from evoforge.agents import analyzer, debugger, patches
from evoforge.agents.analyzer import MAX_REPORT_CHARS, fallback_report, parse_report
from evoforge.agents.editing import EditError, SearchReplace, apply_edit, merge_definitions, parse_edit
from evoforge.agents.researcher import parse_proposal
from evoforge.config import RunConfig
from evoforge.llm.usage import LLMCallError

EDIT = "<<<<<<< SEARCH\nRING_RADIUS = 0.3065\n=======\nRING_RADIUS = 0.32\n>>>>>>> REPLACE\n"


# --- the Researcher's proposal ---

def test_a_thinking_block_is_not_read_as_the_proposal() -> None:
    reply = "<think>NAME: wrong idea\n```python\nx = 1\n```\n</think>\nNAME: Ring\nMOTIVATION: wider.\n" + EDIT
    proposal = parse_proposal(reply)
    assert proposal.name == "ring" and proposal.motivation == "wider."
    assert proposal.edit.blocks == (SearchReplace("RING_RADIUS = 0.3065", "RING_RADIUS = 0.32"),)
    assert proposal.edit.rewrite is None, "the fenced code inside <think> is not the program"


def test_the_motivation_ends_where_the_edit_or_the_name_begins() -> None:
    assert parse_proposal("MOTIVATION: a wider ring.\nIt leaves room.\n" + EDIT).motivation == (
        "a wider ring. It leaves room.")
    proposal = parse_proposal("MOTIVATION: the idea first\nNAME: late name\n```python\nprint(2)\n```")
    assert (proposal.name, proposal.motivation) == ("late_name", "the idea first")


def test_markdown_and_full_width_colons_are_read() -> None:
    reply = "### Name： Hex `Grid` (v2)\n- **Motivation**: hexagonal rows\npack tighter\n```py\nprint(3)\n```"
    proposal = parse_proposal(reply)
    assert (proposal.name, proposal.motivation) == ("hex_grid_v2", "hexagonal rows pack tighter")
    assert proposal.edit.rewrite == "print(3)\n"


def test_missing_fields_are_empty_and_long_ones_clipped() -> None:
    bare = parse_proposal("```python3\nprint(1)\n```")
    assert (bare.name, bare.motivation, bare.edit.rewrite) == ("", "", "print(1)\n")
    long = parse_proposal("NAME: " + "a" * 100 + "\nMOTIVATION: " + "word " * 1000 + "\n" + EDIT)
    assert long.name == "a" * 60 and len(long.motivation) == 2000 and long.motivation.startswith("word word")


def test_a_proposal_without_code_says_how_to_give_it() -> None:
    with pytest.raises(EditError, match=r"no code found: give SEARCH/REPLACE blocks .* or the full program"):
        parse_proposal("NAME: ring\nMOTIVATION: move the circles outwards.")


# --- edits ---

def test_blocks_are_kept_in_order_with_any_fenced_program_as_fallback() -> None:
    reply = ("  <<<<<<<<< SEARCH\na = 1\n  =======\na = 2\n  >>>>>>>>> REPLACE\nthen\n"
             "<<<<<<< SEARCH\nb = 1\n=======\nb = 2\n>>>>>>> REPLACE\n```python\nb = 3\n```")
    edit = parse_edit(reply)
    assert edit.blocks == (SearchReplace("a = 1", "a = 2"), SearchReplace("b = 1", "b = 2"))
    assert edit.rewrite == "b = 3\n"


def test_the_longest_fenced_program_is_the_rewrite() -> None:
    reply = "```python\n\n```\n```python\nx = 1\n```\nor\n```py\ndef f():\n    return 2\n```"
    assert parse_edit(reply).rewrite == "def f():\n    return 2\n"


def test_an_underline_in_a_docstring_is_not_a_malformed_block() -> None:
    program = 'def f():\n    """Title\n    =======\n    """\n    return 1\n'
    edit = parse_edit("```python\n" + program + "```")
    assert edit.blocks == () and edit.rewrite == program


PROGRAM = """import math

LIMIT = 3

# EVOLVE-BLOCK-START
import functools


@functools.cache
def area(r):
    return math.pi * r * r


def total(rs):
    return sum(area(r) for r in rs)
# EVOLVE-BLOCK-END


def run():
    return total([1, 2])
"""
FIXED_END = PROGRAM[PROGRAM.index("# EVOLVE-BLOCK-END"):]


def test_blocks_apply_in_order_each_to_the_result_of_the_last() -> None:
    reply = ("<<<<<<< SEARCH\n    return math.pi * r * r\n=======\n    return 3.0 * r * r\n>>>>>>> REPLACE\n"
             "<<<<<<< SEARCH\n    return 3.0 * r * r\n=======\n    return 3.1 * r * r\n>>>>>>> REPLACE\n")
    code, mode = apply_edit(PROGRAM, parse_edit(reply))
    assert mode == "diff" and code == PROGRAM.replace("math.pi * r * r", "3.1 * r * r")


def test_a_failing_block_is_named_by_its_place() -> None:
    reply = ("<<<<<<< SEARCH\nLIMIT = 3\n=======\nLIMIT = 4\n>>>>>>> REPLACE\n"
             "<<<<<<< SEARCH\n    nope = 0\n=======\n    nope = 1\n>>>>>>> REPLACE\n")
    message = "SEARCH block 2 of 2 does not match the parent program (first line: 'nope = 0'); copy the lines exactly"
    with pytest.raises(EditError, match=re.escape(message)):
        apply_edit(PROGRAM, parse_edit(reply))


def test_an_empty_search_is_refused_not_inserted_anywhere() -> None:
    message = "SEARCH block 1 of 1 does not match the parent program (first line: '')"
    with pytest.raises(EditError, match=re.escape(message)):
        apply_edit(PROGRAM, parse_edit("<<<<<<< SEARCH\n=======\nx = 1\n>>>>>>> REPLACE\n"))


def test_merge_takes_as_it_is_code_with_markers_or_that_does_not_parse() -> None:
    assert merge_definitions(PROGRAM, "# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n") is None
    assert merge_definitions(PROGRAM, "def area(r:\n    return r\n") is None


def test_merge_replaces_a_decorated_definition_whole() -> None:
    merged = merge_definitions(PROGRAM, "def area(r):\n    return 3.0 * r * r\n")
    assert merged is not None
    code, replaced_all = merged
    assert not replaced_all and "@functools.cache" not in code, "the decorator went with the definition it decorated"
    assert "def area(r):\n    return 3.0 * r * r\n" in code and "def total(rs):" in code and code.endswith(FIXED_END)


def test_merge_of_every_definition_is_a_rewrite() -> None:
    merged = merge_definitions(PROGRAM, "def area(r):\n    return r\n\n\ndef total(rs):\n    return len(rs)\n")
    assert merged is not None and merged[1] is True
    assert apply_edit(PROGRAM, parse_edit("```python\ndef area(r):\n    return r\n\n\ndef total(rs):\n"
                                          "    return len(rs)\n```"))[1] == "rewrite"


def test_merge_leaves_the_fixed_code_and_known_imports_alone() -> None:
    fenced = ("import math\nimport cmath\nimport functools\n\n\ndef run():\n    return 0\n\n\n"
              "def total(rs):\n    return max(rs)\n")
    merged = merge_definitions(PROGRAM, fenced)
    assert merged is not None
    code = merged[0]
    assert code.count("def run():") == 1 and code.endswith(FIXED_END), "a fixed definition may not change"
    assert code.count("import math") == 1 and code.count("import functools") == 1
    region_start = code.index("# EVOLVE-BLOCK-START")
    assert region_start < code.index("import cmath") < code.index("import functools"), "new imports go to the top"
    assert "return max(rs)" in code and "return sum(" not in code


def test_merge_appends_a_new_definition_to_the_region() -> None:
    merged = merge_definitions(PROGRAM, "def spread(r):\n    return r * 2\n")
    assert merged is not None and merged[1] is False
    code = merged[0]
    assert code.index("def total") < code.index("def spread") < code.index("# EVOLVE-BLOCK-END")


def test_merge_into_a_program_without_markers_treats_it_all_as_the_region() -> None:
    parent = "def a():\n    return 1\n\n\ndef b():\n    return 2\n"
    assert merge_definitions(parent, "def b():\n    return 3\n") == (parent.replace("return 2", "return 3"), False)


# --- the Debugger's patch ---

CRASH = {"stage": "quick", "status": "runtime_error", "error": "IndexError", "score": None,
         "traceback": 'Traceback (most recent call last):\n  File "/tmp/evoforge/x/program.py", line 9\nIndexError'}
PATCH = "<<<<<<< SEARCH\nRING_RADIUS = 0.31\n=======\nRING_RADIUS = 0.30\n>>>>>>> REPLACE\n"


def debug(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reply: str) -> dict[str, object]:
    """The Debugger's update for one reply about a crash, on its first attempt."""
    config = RunConfig(state_dir=tmp_path)
    use_stand_ins(monkeypatch, debugger, config)
    monkeypatch.setattr(patches, "ask", ScriptedAsk(reply))
    state = round_state(candidate=candidate(), stage_results=[CRASH], status="needs_fix")
    return debugger.debug_candidate(state, runtime(config))


@pytest.mark.parametrize(("reply", "note"), [
    ("FIX: keep the ring inside the square\n" + PATCH, "debugger: keep the ring inside the square (attempt 1)"),
    ("**Fix：** a smaller ring\n" + PATCH, "debugger: a smaller ring (attempt 1)"),
    (PATCH, "debugger: patched (attempt 1)"),
])
def test_a_patch_is_applied_and_its_fix_line_noted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reply: str,
                                                    note: str) -> None:
    update = debug(monkeypatch, tmp_path, reply)
    assert update["feedback"] == [note]
    patched = update["candidate"]
    assert isinstance(patched, dict) and "RING_RADIUS = 0.30" in patched["code"] and "0.31" not in patched["code"]


@pytest.mark.parametrize(("reply", "problem"), [
    ("I think the radius is too large.", "no code found"),
    (PATCH.replace("RING_RADIUS = 0.30", "import os\nRING_RADIUS = 0.30"), "importing 'os' is not allowed"),
    (PATCH.replace("0.31", "0.99"), "SEARCH block 1 of 1 does not match"),
    (PATCH.replace("0.30", "0.31"), "the edit leaves the program as it was"),
])
def test_an_unusable_patch_goes_back_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reply: str,
                                                     problem: str) -> None:
    state_before = round_state(candidate=candidate(), stage_results=[CRASH], status="needs_fix")
    update = debug(monkeypatch, tmp_path, reply)
    after = advance(state_before, update)
    assert "candidate" not in update and after.candidate == state_before.candidate
    [feedback] = after.feedback
    assert feedback.startswith("debugger: attempt 1: the patch could not be used: ") and problem in feedback


# --- the Analyzer's report ---

def test_the_report_keeps_two_insights_of_four_words_or_more() -> None:
    reply = ("RESULT: better\nINSIGHT: rings near the walls leave corners empty\nINSIGHT: too short\n"
             "- **Insight**： a hexagonal core   packs tighter\nINSIGHT: a third lesson, long enough to keep\n")
    report, insights = parse_report("\n\n" + reply)
    assert insights == ["rings near the walls leave corners empty", "a hexagonal core packs tighter"]
    assert report == reply.strip()


def test_a_lesson_that_names_the_candidate_or_its_parent_is_not_kept() -> None:
    reply = ("RESULT: scored 2.57\nNEXT: more\n"
             "INSIGHT: The tuned_an_argument_of_normal_0_1 candidate is a good starting point for the search\n")
    assert parse_report(reply, node_names=("tuned_an_argument_of_normal_0_1", "seed"))[1] == []
    named_parent = "INSIGHT: Jitter on Grid_Packing starts helps the optimiser"
    assert parse_report(named_parent, node_names=("other", "grid_packing"))[1] == []
    assert parse_report(named_parent, node_names=("other", ""))[1] == ["Jitter on Grid_Packing starts helps the optimiser"]


def test_a_lesson_that_copies_the_instruction_is_not_kept() -> None:
    reply = ("RESULT: the same score as the parent\nNEXT: detect noise better\n"
             "INSIGHT: Holding a reusable lesson that holds beyond this one candidate is to detect noise\n")
    assert parse_report(reply)[1] == []
    assert parse_report(reply.replace("Holding a reusable lesson that holds beyond this one candidate is",
                                      "A lesson:"))[1] == ["A lesson: to detect noise"]


def test_the_report_is_clipped_and_may_have_no_insight() -> None:
    assert parse_report("  " + "x" * (MAX_REPORT_CHARS + 500) + "  ") == ("x" * MAX_REPORT_CHARS, [])


def test_the_fallback_report_says_what_the_stages_did() -> None:
    assert fallback_report(round_state()) == "RESULT: unknown"
    state = round_state(status="runtime_failed", error="IndexError",
                        stage_results=[{"stage": "quick", "status": "runtime_error", "score": None}])
    assert fallback_report(state) == "RESULT: runtime_failed - IndexError\nstage quick: runtime_error, score None"


TUNED = {"edit_mode": "tuned_constant", "change": "RING_RADIUS from 0.3065 to 0.31"}
PRIOR = {"edit_mode": "prior_code", "change": "the code of the prior 'Staggered rows'"}


@pytest.mark.parametrize(("built", "stage", "status", "error", "report"), [
    (TUNED, {"score": 1.2}, "evaluated", None,
     "RESULT: RING_RADIUS from 0.3065 to 0.31 scored 1.2 against the parent's 0.96 (+0.24): better, a new best.\n"
     "NEXT: step this setting once more the same way, or build the next idea on this program."),
    (TUNED, {"score": 0.9}, "evaluated", None,
     "RESULT: RING_RADIUS from 0.3065 to 0.31 scored 0.9 against the parent's 0.96 (-0.06): no gain.\n"
     "NEXT: leave this setting; change the method, not a constant."),
    (PRIOR, {"score": 0.0}, "invalid", "2 circles overlap",
     "RESULT: the code of the prior 'Staggered rows' scored 0 against the parent's 0.96 (-0.96) but ended invalid: "
     "no gain.\nNEXT: keep building on the parent's own method."),
    (PRIOR, {"score": None}, "runtime_failed", "NameError: name 'optimise' is not defined",
     "RESULT: the code of the prior 'Staggered rows' ended runtime_failed: NameError: name 'optimise' is not "
     "defined.\nNEXT: this change breaks the program; take another idea, not this one again."),
])
def test_a_candidate_the_loop_built_gets_an_exact_report_without_a_model_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, built: dict[str, str], stage: dict[str, object], status: str,
    error: str | None, report: str,
) -> None:
    config = RunConfig(state_dir=tmp_path)
    use_stand_ins(monkeypatch, analyzer, config)
    model = ScriptedAsk()
    monkeypatch.setattr(analyzer, "ask", model)
    state = round_state(candidate=candidate(**built), status=status, error=error, best_score=1.0,
                        stage_results=[{"stage": "quick", "status": "ok", **stage}])
    update = analyzer.analyze_result(state, runtime(config))
    assert (update["analysis"], update["insights"], model.calls) == (report, [], [])


def test_the_model_reports_on_a_built_candidate_where_the_config_asks_for_it(monkeypatch: pytest.MonkeyPatch,
                                                                               tmp_path: Path) -> None:
    config = RunConfig(state_dir=tmp_path, model_reports_on_built_candidates=True)
    use_stand_ins(monkeypatch, analyzer, config)
    model = ScriptedAsk("RESULT: better\nNEXT: more")
    monkeypatch.setattr(analyzer, "ask", model)
    state = round_state(candidate=candidate(**TUNED), status="evaluated", stage_results=[{"score": 1.2}])
    assert analyzer.analyze_result(state, runtime(config))["analysis"] == "RESULT: better\nNEXT: more"
    assert len(model.calls) == 1


LESSON = "RESULT: better\nINSIGHT: a ring near the walls wins"


@pytest.mark.parametrize(("fields", "replies", "analysis", "insights"), [
    ({"llm_analysis": False}, (), "RESULT: evaluated", []),  # no model is asked
    ({}, (LLMCallError("down"),), "RESULT: evaluated\n(analyzer unavailable: down)", []),
    ({}, (LESSON,), LESSON, ["a ring near the walls wins"]),
])
def test_the_analyzer_writes_a_report_even_without_its_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fields: dict[str, object], replies: tuple[str | Exception, ...],
    analysis: str, insights: list[str],
) -> None:
    config = RunConfig(state_dir=tmp_path, **fields)
    use_stand_ins(monkeypatch, analyzer, config)
    model = ScriptedAsk(*replies)
    monkeypatch.setattr(analyzer, "ask", model)
    state = round_state(candidate=candidate(), status="evaluated")
    update = analyzer.analyze_result(state, runtime(config))
    assert (update["analysis"], update["insights"], len(model.calls)) == (analysis, insights, len(replies))
