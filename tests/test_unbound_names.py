"""Names an edit leaves unbound, bound again (evoforge.agents.unbound_names): the cases measured on the 1.5B model."""

from __future__ import annotations

import ast

from evoforge.agents.editing import Edit, SearchReplace, apply_edit
from evoforge.agents.unbound_names import bind_unbound_names, unbound_names

PARENT = """import numpy as np

N_CIRCLES = 26

# EVOLVE-BLOCK-START
def construct_packing():
    xs = np.linspace(0.1, 0.9, 5)
    centers = np.array([(x, y) for x in xs for y in xs] + [(0.2, 0.2)])
    return centers, compute_radii(centers)


def compute_radii(centers):
    from scipy.optimize import linprog
    n = len(centers)
    return linprog(-np.ones(n), bounds=[(0, 0.1)] * n, method="highs").x
# EVOLVE-BLOCK-END


def run_packing():
    centers, radii = construct_packing()
    return centers, radii, float(radii.sum())
"""
PRIOR_CODE = """def optimise(centers):
    return polish(centers), np.full(len(centers), 0.05)


def polish(centers):
    return np.clip(centers, 0.05, 0.95)
"""


def _edit(search: str, replace: str) -> str:
    return apply_edit(PARENT, Edit(blocks=(SearchReplace(search, replace),), rewrite=None))[0]


def test_a_renamed_function_the_fixed_code_calls_gets_its_name_back() -> None:
    # the reply of round 2 (2026-12-03 13:51): the candidate's name carried over to the function it changed
    child = _edit("def construct_packing():\n    xs = np.linspace(0.1, 0.9, 5)",
                  "def construct_packing_v2():\n    xs = np.linspace(0.05, 0.95, 5)")
    assert "construct_packing" in unbound_names(child)
    repaired, notes = bind_unbound_names(PARENT, child)
    assert notes == ["renamed construct_packing_v2 back to construct_packing, which the program calls"]
    assert "def construct_packing():\n    xs = np.linspace(0.05, 0.95, 5)" in repaired
    assert unbound_names(repaired) == []


def test_the_only_new_function_in_place_of_a_removed_one_is_taken_for_it() -> None:
    # round 2 (2026-12-03 15:33): the model named the function after the candidate, `improved_packing`
    child = _edit("def construct_packing():", "def improved_packing():")
    repaired, notes = bind_unbound_names(PARENT, child)
    assert notes == ["renamed improved_packing back to construct_packing, which the program calls"]
    assert repaired == PARENT, "a rename and nothing else is the parent again (the Researcher treats it as an echo)"


def test_with_two_new_functions_that_could_be_the_renamed_one_the_parents_definition_is_kept() -> None:
    child = _edit("def construct_packing():", "def construct_packing_a():\n    pass\n\n\ndef construct_packing_b():")
    repaired, notes = bind_unbound_names(PARENT, child)
    assert notes == ["added `def construct_packing()` for the unbound name construct_packing"]
    assert "def construct_packing_a():" in repaired and "def construct_packing_b():" in repaired
    assert unbound_names(repaired) == []


def test_a_local_import_of_the_parent_binds_a_new_functions_name_at_the_region_top() -> None:
    # round 5: the prior's LP moved out of compute_radii without its local import
    child = _edit("def compute_radii(centers):\n    from scipy.optimize import linprog\n",
                  "def compute_radii(centers):\n    return solve(centers)\n\n\ndef solve(centers):\n")
    child = child.replace("def solve(centers):\n    n = len", "def solve(centers):\n    n = len")
    assert unbound_names(child) == ["linprog"]
    repaired, notes = bind_unbound_names(PARENT, child)
    assert notes == ["added `from scipy.optimize import linprog` for the unbound name linprog"]
    region = repaired.split("# EVOLVE-BLOCK-START\n")[1]
    assert region.startswith("from scipy.optimize import linprog\n")
    assert unbound_names(repaired) == []


def test_a_priors_function_is_brought_in_with_the_names_it_needs_and_a_standard_module_imported() -> None:
    # round 6: construct_packing called the prior's optimise (which calls polish) and time without either
    child = _edit("    centers = np.array([(x, y) for x in xs for y in xs] + [(0.2, 0.2)])\n",
                  "    started = time.perf_counter()\n    centers, _ = optimise(np.zeros((26, 2)))\n")
    assert unbound_names(child) == ["time", "optimise"]
    repaired, notes = bind_unbound_names(PARENT, child, sources=[PRIOR_CODE])
    assert notes == ["added `import time` for the unbound name time",
                     "added `def optimise(centers)` for the unbound name optimise",
                     "added `def polish(centers)` for the unbound name polish"]
    assert unbound_names(repaired) == []
    ast.parse(repaired)
    assert repaired.endswith(PARENT[PARENT.index("# EVOLVE-BLOCK-END"):])  # the fixed code is untouched


def test_a_name_nothing_binds_is_left_for_the_static_check_to_report() -> None:
    child = _edit("    return centers, compute_radii(centers)", "    return centers, widen(compute_radii(centers))")
    assert bind_unbound_names(PARENT, child, sources=[PRIOR_CODE]) == (child, [])


def test_code_that_does_not_parse_is_given_back_unrepaired() -> None:
    broken = PARENT.replace("def compute_radii(centers):", "def compute_radii(centers)")
    assert unbound_names(broken) == []
    assert bind_unbound_names(PARENT, broken) == (broken, [])
