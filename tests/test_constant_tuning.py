"""A parameter experiment: one numeric constant of the parent's evolvable code changed (evoforge.agents.constant_tuning)."""

from __future__ import annotations

import ast
import difflib
import re

from node_stand_ins import SEED

from evoforge.agents.constant_tuning import first_new_tuning, tunings
from evoforge.tasks.spec import load_task

_NOTES = (load_task("circle_packing").root / "cognition" / "constrained_optimisation.md").read_text()
SLSQP = "import numpy as np\n" + re.search(r"```python\n(.*?)```", _NOTES, re.DOTALL).group(1)  # type: ignore[union-attr]


def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    pairs = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before.splitlines(), after.splitlines()).get_opcodes():
        if tag != "equal":
            pairs.append(("\n".join(before.splitlines()[i1:i2]), "\n".join(after.splitlines()[j1:j2])))
    return pairs


def test_every_variant_changes_one_constant_on_one_line_and_still_parses() -> None:
    variants = list(tunings(SLSQP, evolve_block=False, seed=7))
    assert len(variants) >= 5
    for tuning in variants:
        ast.parse(tuning.code)
        ((old_line, new_line),) = _changed_lines(SLSQP, tuning.code)
        assert tuning.old in old_line and tuning.new in new_line and old_line.replace(tuning.old, tuning.new, 1) == new_line
        assert SLSQP.splitlines()[tuning.line - 1] == old_line
    assert len({tuning.code for tuning in variants}) == len(variants), "each constant is drawn once"


def test_seeds_and_settings_are_tuned_but_not_shapes_counts_or_indices() -> None:
    settings = {tuning.setting for seed in range(20) for tuning in tunings(SLSQP, evolve_block=False, seed=seed)}
    assert {"maxiter", "the seed of default_rng", "an argument of normal", "an argument of full"} <= settings
    olds = {(tuning.setting, tuning.old) for seed in range(20) for tuning in tunings(SLSQP, evolve_block=False, seed=seed)}
    # reshape(n, 2), linspace(..., 5), normal(0, ...) and the slices v[: 2 * n] are shapes, counts and positions
    assert ("an argument of reshape", "2") not in olds and ("an argument of linspace", "5") not in olds
    assert ("an argument of normal", "0") not in olds
    assert all(old not in {"0", "1", "2"} or "seed" in setting for setting, old in olds)


def test_a_seed_gets_a_new_value_and_a_float_a_factor() -> None:
    for seed in range(20):
        for tuning in tunings(SLSQP, evolve_block=False, seed=seed):
            if tuning.setting == "the seed of default_rng":
                assert int(tuning.new) > 0
            elif tuning.setting == "an argument of normal":  # the jitter 0.01: an order of magnitude or a halving
                assert float(tuning.new) in {0.001, 0.005, 0.02, 0.1}


def test_the_draw_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    first = [tuning.code for tuning in tunings(SLSQP, evolve_block=False, seed=3)]
    assert first == [tuning.code for tuning in tunings(SLSQP, evolve_block=False, seed=3)]
    assert len({next(tunings(SLSQP, evolve_block=False, seed=seed)).code for seed in range(10)}) > 1


def test_only_the_evolvable_region_is_tuned() -> None:
    region_end = next(index for index, line in enumerate(SEED.splitlines(), 1) if "EVOLVE-BLOCK-END" in line)
    region_start = next(index for index, line in enumerate(SEED.splitlines(), 1) if "EVOLVE-BLOCK-START" in line)
    variants = [tuning for seed in range(10) for tuning in tunings(SEED, evolve_block=True, seed=seed)]
    assert variants and all(region_start < tuning.line < region_end for tuning in variants)
    assert any(tuning.setting == "RING_RADIUS" for tuning in variants)


def test_the_first_new_variant_skips_programs_node_memory_holds() -> None:
    known = {tuning.code for tuning in list(tunings(SLSQP, evolve_block=False, seed=5))[:2]}
    chosen = first_new_tuning(SLSQP, evolve_block=False, seed=5, is_known=known.__contains__)
    assert chosen is not None and chosen.code not in known
    assert first_new_tuning(SLSQP, evolve_block=False, seed=5, is_known=lambda code: True) is None


def test_nothing_to_tune_gives_nothing() -> None:
    assert list(tunings("def solve():\n    return 1.0\n", evolve_block=False, seed=0)) == []
    assert list(tunings("def solve(:\n    return 2.5\n", evolve_block=False, seed=0)) == []
    assert list(tunings("x = [0, 1]\ny = x[1:3]\n", evolve_block=False, seed=0)) == []


def test_the_candidate_names_what_it_changed() -> None:
    tuning = next(t for seed in range(20) for t in tunings(SLSQP, evolve_block=False, seed=seed) if t.setting == "maxiter")
    assert tuning.name == f"tuned_maxiter_{tuning.new}" and f"maxiter from 300 to {tuning.new}" in tuning.motivation
