"""Program fingerprints (memory/fingerprint.py): what the Novelty-Checker treats as the same program outright.

Every pair below either must hash the same (a change that cannot alter behaviour) or must not (one that can,
however small)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from evoforge.memory.fingerprint import canonical_form, code_hash

SEED = Path(__file__).resolve().parents[1] / "evoforge" / "tasks" / "circle_packing" / "initial_program.py"

BASE = '''
"""Module docstring."""
import numpy as np

SCALE = 2.0


def spread(points, steps=3):
    """Push points apart."""
    total = np.zeros_like(points)  # accumulated moves
    for step in range(steps):
        delta = points - points.mean(axis=0)
        total = total + SCALE * delta / (step + 1)
    return points + total
'''

SAME = {
    "comments and docstrings reworded": BASE.replace('"""Push points apart."""', '"""Spread the points."""')
    .replace("# accumulated moves", "# running sum")
    .replace('"""Module docstring."""', ""),
    "reformatted": BASE.replace("total = total + SCALE * delta / (step + 1)",
                                "total = (total +\n                 SCALE * delta / (step + 1))"),
    "locals renamed": re.sub(r"\bstep\b", "k", BASE.replace("total", "moved").replace("delta", "offset")),
    "trailing whitespace and blank lines": BASE.replace("\n\n", "\n\n\n").replace("steps):", "steps):   "),
}

DIFFERENT = {
    "a constant changed": BASE.replace("SCALE = 2.0", "SCALE = 2.1"),
    "a module constant renamed (an evaluator may read it)": BASE.replace("SCALE", "FACTOR"),
    "a parameter renamed (a caller may pass it by keyword)": BASE.replace("steps", "n_steps"),
    "a builtin swapped": BASE.replace("range(steps)", "reversed(range(steps))"),
    "an operator changed": BASE.replace("delta / (step + 1)", "delta * (step + 1)"),
    "a method swapped": BASE.replace("points.mean(axis=0)", "points.max(axis=0)"),
}


@pytest.mark.parametrize("change", SAME)
def test_changes_that_cannot_alter_behaviour_keep_the_fingerprint(change: str) -> None:
    assert SAME[change] != BASE
    assert code_hash(SAME[change]) == code_hash(BASE), canonical_form(SAME[change])


@pytest.mark.parametrize("change", DIFFERENT)
def test_changes_that_can_alter_behaviour_change_the_fingerprint(change: str) -> None:
    assert code_hash(DIFFERENT[change]) != code_hash(BASE)


def test_a_local_looked_up_by_name_is_not_renamed() -> None:
    by_keyword = "def f(x):\n    size = x\n    return dict(size=size)\n"
    renamed = "def f(x):\n    n = x\n    return dict(size=n)\n"
    assert code_hash(by_keyword) != code_hash(renamed), "the key 'size' names the local"
    with_locals = "def f():\n    a = 1\n    return locals()\n"
    assert code_hash(with_locals) != code_hash(with_locals.replace("a = 1", "b = 1"))


def test_a_parameter_shadows_an_outer_local() -> None:
    outer = textwrap.dedent("""
        def f():
            y = 1
            def g(x):
                return x + y
            return g
    """)
    # g's parameter renamed to the outer local's name: g(x) would now ignore the outer y
    shadowing = outer.replace("def g(x):\n        return x + y", "def g(y):\n        return y + y")
    assert code_hash(outer) != code_hash(shadowing)
    assert code_hash(outer) == code_hash(outer.replace("y", "z"))


def test_functions_holding_a_class_keep_their_names() -> None:
    code = "def make():\n    value = 1\n    class Box:\n        value = 2\n    return Box, value\n"
    assert code_hash(code) != code_hash(code.replace("value = 1", "other = 1").replace(", value", ", other"))


def test_code_that_does_not_parse_is_compared_as_text() -> None:
    broken = "def f(:\n    return 1\n"
    assert code_hash(broken) == code_hash(broken.replace("\n", "   \n\n"))
    assert code_hash(broken) != code_hash(broken.replace("1", "2"))
    assert code_hash("a = 1\n") != code_hash("    a = 1\n"), "leading indentation is meaningful"


def test_the_seed_echoed_with_a_tidier_docstring_and_names_is_the_seed() -> None:
    seed = SEED.read_text()
    echo = (seed.replace("Weak on purpose", "Weak by design")
            .replace("wall = ", "wall_gap = ").replace("(wall,", "(wall_gap,"))
    assert echo != seed and code_hash(echo) == code_hash(seed)
    assert code_hash(seed.replace("0.3065", "0.3066")) != code_hash(seed)
