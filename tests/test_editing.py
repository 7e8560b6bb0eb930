"""SEARCH/REPLACE parsing and application, rewrites, and the evolvable region."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evoforge.agents.editing import (
    EditError,
    apply_edit,
    keep_fixed_region,
    parse_edit,
    split_evolve_block,
    unified_diff,
)
from evoforge.agents.researcher import parse_proposal

PARENT = """import numpy as np

# EVOLVE-BLOCK-START
def f(x):
    y = x + 1
    return y
# EVOLVE-BLOCK-END


def run():
    return f(1)
"""


def test_exact_diff_applies() -> None:
    reply = "<<<<<<< SEARCH\n    y = x + 1\n=======\n    y = x + 2\n>>>>>>> REPLACE\n"
    code, mode = apply_edit(PARENT, parse_edit(reply))
    assert mode == "diff" and "x + 2" in code and "x + 1" not in code


def test_diff_with_wrong_indentation_applies_loosely() -> None:
    reply = "<<<<<<< SEARCH\ny = x + 1\nreturn y\n=======\n    return x * 3\n>>>>>>> REPLACE"
    code, _ = apply_edit(PARENT, parse_edit(reply))
    assert "return x * 3" in code and "y = x + 1" not in code


def test_search_that_skipped_a_line_replaces_the_span_it_meant() -> None:
    reply = "<<<<<<< SEARCH\ndef f(x):\n    return y\n=======\ndef f(x):\n    return x * 5\n>>>>>>> REPLACE"
    code, _ = apply_edit(PARENT, parse_edit(reply))
    assert "return x * 5" in code and "y = x + 1" not in code and "def run():" in code


def test_lines_in_order_but_far_apart_do_not_match() -> None:
    far = PARENT.replace("    y = x + 1\n", "    y = x + 1\n" + "    y += 0\n" * 12)
    reply = "<<<<<<< SEARCH\ndef f(x):\n    return y\n=======\ndef f(x):\n    return 0\n>>>>>>> REPLACE"
    with pytest.raises(EditError, match="does not match"):
        apply_edit(far, parse_edit(reply))


def test_unmatched_search_names_the_block() -> None:
    reply = "<<<<<<< SEARCH\nz = 0\n=======\nz = 1\n>>>>>>> REPLACE"
    with pytest.raises(EditError, match="SEARCH block 1 of 1 does not match"):
        apply_edit(PARENT, parse_edit(reply))


def test_rewrite_is_the_fallback_when_diffs_do_not_apply() -> None:
    reply = "<<<<<<< SEARCH\nnope\n=======\nx\n>>>>>>> REPLACE\n```python\ndef f(x):\n    return 5\n```"
    code, mode = apply_edit(PARENT, parse_edit(reply))
    assert mode == "rewrite" and "return 5" in code


def test_reply_cut_off_inside_its_code_fence_is_still_used() -> None:
    edit = parse_edit("NAME: x\n```python\ndef f(x):\n    return 4\n")
    assert edit.rewrite == "def f(x):\n    return 4\n"


def test_a_reply_cut_off_mid_statement_keeps_the_definitions_it_finished() -> None:
    whole = PARENT.replace("# EVOLVE-BLOCK-START\n", "").replace("# EVOLVE-BLOCK-END\n", "")
    cut = whole.replace("y = x + 1", "y = x + 2") + '\n\nif __name__ == "__main__":\n    print(f"{run('
    code, mode = apply_edit(PARENT, parse_edit("NAME: x\n```python\n" + cut))
    assert code == PARENT.replace("y = x + 1", "y = x + 2") and mode == "rewrite"


def test_a_reply_cut_off_inside_its_only_statement_is_kept_for_the_static_check() -> None:
    cut = "def f(x):\n    return (x +\n"
    assert parse_edit("```python\n" + cut).rewrite == cut, "nothing complete to keep: the SyntaxError is reported"


def test_a_malformed_block_is_named_not_taken_for_a_program() -> None:
    # seen from Qwen2.5-Coder-1.5B: a block without its ======= line, inside a code fence
    reply = "NAME: x\n```\n<<<<<<< SEARCH\n    y = x + 1\n    return y\n>>>>>>> REPLACE\n```\n"
    with pytest.raises(EditError, match="malformed: each block needs"):
        parse_edit(reply)
    # a well-formed program in another fence is still the fallback
    edit = parse_edit(reply + "```python\ndef f(x):\n    return 6\n```\n")
    assert edit.rewrite == "def f(x):\n    return 6\n" and not edit.blocks


def test_reply_without_code_is_an_edit_error() -> None:
    with pytest.raises(EditError, match="no code found"):
        parse_edit("I'm sorry, I can't help with that.")


def test_proposal_fields() -> None:
    reply = "**NAME:** Square Grid!\nMOTIVATION: fill the square\nwith a grid.\n```python\nprint(1)\n```"
    proposal = parse_proposal(reply)
    assert proposal.name == "square_grid"
    assert proposal.motivation == "fill the square with a grid."
    assert proposal.edit.rewrite == "print(1)\n"


def test_edits_outside_the_region_are_discarded() -> None:
    child = PARENT.replace("return f(1)", "return 99").replace("x + 1", "x + 5")
    repaired, note = keep_fixed_region(PARENT, child)
    assert note and "discarded" in note
    assert "return f(1)" in repaired and "x + 5" in repaired


def test_code_without_markers_goes_inside_the_region() -> None:
    repaired, note = keep_fixed_region(PARENT, "def f(x):\n    return 7\n")
    assert note is not None
    parts = split_evolve_block(repaired)
    assert parts is not None and "return 7" in parts[1] and parts[2].strip().endswith("return f(1)")


def test_untouched_fixed_region_is_left_alone() -> None:
    child = PARENT.replace("x + 1", "x + 5")
    assert keep_fixed_region(PARENT, child) == (child, None)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_parser_never_crashes_on_arbitrary_replies(reply: str) -> None:
    try:
        edit = parse_edit(reply)
    except EditError:
        return
    with contextlib.suppress(EditError):
        apply_edit(PARENT, edit)


def test_unified_diff_marks_changes() -> None:
    diff = unified_diff(PARENT, PARENT.replace("x + 1", "x + 2"))
    assert "-    y = x + 1" in diff and "+    y = x + 2" in diff


PROGRAM = """import numpy as np

N = 3

# EVOLVE-BLOCK-START
SCALE = 2


def layout():
    return np.arange(N) * SCALE


def radii(points):
    return points / 10
# EVOLVE-BLOCK-END


def run():
    return radii(layout())
"""


def test_a_code_block_of_one_function_replaces_only_that_function() -> None:
    reply = "NAME: x\n```python\nfrom math import sqrt\nimport numpy as np\n\ndef radii(points):\n    return sqrt(2) * points\n```"
    code, mode = apply_edit(PROGRAM, parse_edit(reply))
    assert mode == "definitions"
    assert "def layout():\n    return np.arange(N) * SCALE" in code and "SCALE = 2" in code
    assert "return sqrt(2) * points" in code and "return points / 10" not in code
    # the new import goes to the region's top; numpy, imported by the fixed code, is not imported again
    assert code.count("import numpy as np") == 1 and code.index("from math import sqrt") > code.index(BLOCK_START_LINE)
    assert code.endswith(PROGRAM[PROGRAM.index("# EVOLVE-BLOCK-END"):])


def test_a_new_function_in_a_code_block_is_added_and_the_rest_kept() -> None:
    reply = "```python\ndef spread(points):\n    return points * 1.5\n\n\ndef layout():\n    return spread(np.arange(N))\n```"
    code, mode = apply_edit(PROGRAM, parse_edit(reply))
    assert mode == "definitions" and "def spread(points)" in code and "return spread(np.arange(N))" in code
    assert code.index("def spread") < code.index("# EVOLVE-BLOCK-END") and "return points / 10" in code
    namespace: dict[str, object] = {}
    exec(compile(code, "child.py", "exec"), namespace)  # the merged program must run
    assert list(namespace["run"]()) == pytest.approx([0.0, 0.15, 0.3])  # type: ignore[operator]


def test_a_whole_program_without_markers_keeps_the_fixed_code_once() -> None:
    # the 1.5B model's habit: the whole program, markers dropped, one function changed
    whole = PROGRAM.replace("# EVOLVE-BLOCK-START\n", "").replace("# EVOLVE-BLOCK-END\n", "")
    reply = "```python\n" + whole.replace("return points / 10", "return points / 5") + "```"
    code, mode = apply_edit(PROGRAM, parse_edit(reply))
    assert mode == "rewrite" and code == PROGRAM.replace("return points / 10", "return points / 5")


@pytest.mark.parametrize("reply", [
    "<<<<<<< SEARCH\n    return points / 10\n=======\n    return points / 10\n>>>>>>> REPLACE",
    "```python\nimport math\n\ndef radii(points):\n    return points / 10\n```",
    "```python\n" + PROGRAM.replace("# EVOLVE-BLOCK-START\n", "").replace("# EVOLVE-BLOCK-END\n", "") + "```",
])
def test_an_edit_that_changes_nothing_but_imports_is_refused_with_the_reason(reply: str) -> None:
    with pytest.raises(EditError, match="leaves the program as it was"):
        apply_edit(PROGRAM, parse_edit(reply))


BLOCK_START_LINE = "# EVOLVE-BLOCK-START"


def test_fixed_code_pasted_into_the_region_is_left_out() -> None:
    # seen from the 1.5B model: a REPLACE holding the rest of the program, end marker and fixed code included
    pasted = PROGRAM.replace("    return points / 10\n# EVOLVE-BLOCK-END\n",
                             "    return points / 5\n# EVOLVE-BLOCK-END\n\n\ndef run():\n    return radii(layout())\n"
                             "# EVOLVE-BLOCK-END\n")
    child, note = keep_fixed_region(PROGRAM, pasted)
    assert child == PROGRAM.replace("return points / 10", "return points / 5")
    assert note == "fixed code repeated inside the EVOLVE-BLOCK was left out"
    unchanged = PROGRAM.replace("return points / 10", "return points / 5")
    assert keep_fixed_region(PROGRAM, unchanged) == (unchanged, None)
