"""What the Researcher sees of a parent: docstrings dropped, the fixed code kept as it is."""

from __future__ import annotations

import ast

from evoforge.agents.code_view import editable_parent, short_paths, without_docstrings
from evoforge.agents.editing import split_evolve_block
from evoforge.tasks.spec import load_task

PROGRAM = '''"""Module docstring."""

import numpy as np

# EVOLVE-BLOCK-START
def construct():
    """Two lines
    of docstring."""
    return np.zeros(3)


def only_doc():
    """A body that is only a docstring keeps it."""


def inline(): "kept: it shares its line"; return 1
# EVOLVE-BLOCK-END


def run():
    """Fixed entry point."""
    return construct()
'''


def test_docstrings_are_dropped_only_inside_the_evolvable_region_for_editing() -> None:
    edited = editable_parent(PROGRAM)
    before, block, after = split_evolve_block(edited)
    original_before, _, original_after = split_evolve_block(PROGRAM)
    assert (before, after) == (original_before, original_after), "the fixed code must stay byte-for-byte"
    assert "Two lines" not in block and "of docstring" not in block
    assert "def construct():\n    return np.zeros(3)\n" in block
    assert '"""A body that is only a docstring keeps it."""' in block
    assert '"kept: it shares its line"' in block
    ast.parse(edited)


def test_the_shown_parent_has_no_docstrings_anywhere() -> None:
    shown = without_docstrings(PROGRAM)
    assert "Module docstring" not in shown and "Fixed entry point" not in shown and "Two lines" not in shown
    assert "def run():\n    return construct()\n" in shown
    ast.parse(shown)


def test_code_that_does_not_parse_is_left_as_it_is() -> None:
    broken = 'def f(:\n    """doc"""\n'
    assert without_docstrings(broken) == broken and editable_parent(broken) == broken


def test_the_circle_packing_seed_is_shown_without_its_long_docstrings() -> None:
    task = load_task("circle_packing")
    seed = (task.root / task.program).read_text()
    shown = without_docstrings(editable_parent(seed))
    assert len(shown) < 0.75 * len(seed)
    assert "def compute_radii(centers):\n    wall = " in shown


def test_tracebacks_name_files_by_their_base_name() -> None:
    traceback = (
        'Traceback (most recent call last):\n  File "<string>", line 19, in call_candidate\n'
        '  File "/tmp/state/runs/r/nodes/n/quick-try0/program.py", line 32, in run_packing\n'
        '    centers, radii = construct_packing()\n'
        '  File "/venv/lib/python3.11/site-packages/numpy/_core/_methods.py", line 45, in _amin\n'
    )
    short = short_paths(traceback)
    assert 'File "program.py", line 32, in run_packing' in short and 'File "_methods.py", line 45' in short
    assert 'File "<string>", line 19' in short and "/tmp/state" not in short
    assert "    centers, radii = construct_packing()" in short
