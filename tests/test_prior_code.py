"""The focused prior's code as the candidate when the Researcher echoes its parent (evoforge.agents.prior_code)."""

from __future__ import annotations

from evoforge.agents.prior_code import prior_code_candidate

PARENT = """import numpy as np

# EVOLVE-BLOCK-START
def construct_packing():
    return np.zeros((26, 2)), np.zeros(26)


def compute_radii(centers):
    return np.zeros(len(centers))
# EVOLVE-BLOCK-END


def run_packing():
    return construct_packing()
"""
GRID = """def construct_packing():
    xs = np.linspace(0.1, 0.9, 5)
    centers = np.array([(x, y) for x in xs for y in xs] + [(0.2, 0.2)])
    return centers, compute_radii(centers)
"""


def _prior(content: str, kind: str = "prior") -> dict[str, str]:
    return {"kind": kind, "title": "Layouts / A grid start", "content": content}


def test_a_priors_complete_function_replaces_the_parents_own() -> None:
    child = prior_code_candidate(PARENT, _prior(f"A grid scores 2.45:\n```python\n{GRID}```\nThen polish it."))
    assert child is not None
    assert "np.linspace(0.1, 0.9, 5)" in child and "return np.zeros((26, 2))" not in child
    assert "def compute_radii(centers):\n    return np.zeros(len(centers))" in child  # the rest is kept
    assert child.endswith("def run_packing():\n    return construct_packing()\n")  # so is the fixed code


def test_every_block_of_the_prior_is_merged_in_turn() -> None:
    radii = "def compute_radii(centers):\n    return np.full(len(centers), 0.01)\n"
    child = prior_code_candidate(PARENT, _prior(f"```python\n{GRID}```\nand\n```py\n{radii}```"))
    assert child is not None and "np.linspace" in child and "np.full(len(centers), 0.01)" in child


def test_nothing_when_the_parent_has_the_code_already() -> None:
    child = prior_code_candidate(PARENT, _prior(f"```python\n{GRID}```"))
    assert child is not None
    assert prior_code_candidate(child, _prior(f"```python\n{GRID}```")) is None


def test_lessons_prose_loose_statements_and_broken_code_give_nothing() -> None:
    assert prior_code_candidate(PARENT, _prior(f"```python\n{GRID}```", kind="insight")) is None
    assert prior_code_candidate(PARENT, _prior("Use a grid of 5 x 5 circles plus one in a gap.")) is None
    assert prior_code_candidate(PARENT, _prior("```python\ncenters = np.zeros((26, 2))\n```")) is None
    assert prior_code_candidate(PARENT, _prior("```python\ndef construct_packing(:\n    pass\n```")) is None
