"""A parameter experiment on the parent: one numeric constant of its evolvable code changed, without the model.

What the Researcher falls back on when its reply leaves the program unchanged and no retrieved prior's code is
left to run (prior_code.py). Measured (benchmarks/search.py, circle_packing, the embedded 1.5B model, 2026-12-03
16:21): 8 of 13 rounds were lost to replies that echoed their parent, on parents that already held every
prior's code; a retry gave the same echo. Such a parent is usually a good program whose next gains lie in its
parameters (a random seed, an iteration count, a step size, a tolerance), which is the experiment a person
would run next. The change is named in the candidate, so the Analyzer and node memory say what was tried.

A constant is a candidate for tuning by where it stands: a random seed (an argument of `default_rng`,
`manual_seed`, `seed=`...), a named setting (a keyword argument, a dict entry under a string key, an assignment
to a name, a parameter's default), or a float argument or operand. Indices and subscripts, booleans, the
integers 0 and 1 outside seeds, and other integer arguments (`reshape(n, 2)`, `linspace(0, 1, 5)`) are left
alone: they are mostly shapes and counts the evaluator checks, and changing them breaks the program rather
than tuning it.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from evoforge.agents.editing import split_evolve_block

TUNED_CONSTANT = "tuned_constant"
"""The edit mode of a candidate made here."""
_SEED_CALL = re.compile(r"seed|rng|random_?state|prngkey", re.IGNORECASE)
_TIER_WEIGHTS = {"seed": 3.0, "named": 3.0, "float": 2.0}
"""How often each kind of constant is drawn: seeds and named settings are what a person tunes first."""
_SMALL_OR_LARGE_FACTORS = (0.1, 0.5, 2.0, 10.0)
"""For a float below 0.05 or above 10 in size (tolerances, jitters, step sizes, penalty weights): an order of
magnitude matters more than a few percent."""
_MODERATE_FACTORS = (0.8, 0.9, 1.1, 1.25)
"""For other floats (positions, fractions, rates): a large factor mostly leaves the feasible range."""
_INTEGER_FACTORS = (0.5, 2.0)


@dataclass(frozen=True)
class Tuning:
    """A parent with one constant changed."""

    code: str
    setting: str
    """What the constant sets, in words: `maxiter`, `the seed of default_rng`, `an argument of normal`."""
    old: str
    new: str
    line: int
    """1-based line of the constant in the parent."""

    @property
    def name(self) -> str:
        label = re.sub(r"[^0-9A-Za-z]+", "_", f"{self.setting}_{self.new}").strip("_").lower()
        return f"tuned_{label}"[:60]

    @property
    def motivation(self) -> str:
        return (f"A parameter experiment on the parent: {self.setting} from {self.old} to {self.new} (line "
                f"{self.line}); the Researcher's reply left the program unchanged and no retrieved prior's code "
                "was left to run.")


@dataclass(frozen=True)
class _Site:
    constant: ast.Constant
    value: int | float
    tier: str
    setting: str


def _call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _target_name(target: ast.expr) -> str:
    if isinstance(target, ast.Name):
        return target.id
    return target.attr if isinstance(target, ast.Attribute) else ""


def _tier(value: int | float, *, seed: bool, named: bool) -> str | None:
    if seed and isinstance(value, int):
        return "seed"
    if isinstance(value, int) and value in (0, 1):
        return None
    if named:
        return "named"
    return "float" if isinstance(value, float) else None


class _Sites(ast.NodeVisitor):
    """The tunable constants of a module, each with its tier and what it sets."""

    def __init__(self) -> None:
        self.sites: list[_Site] = []

    def _add(self, node: ast.AST, *, setting: str, seed: bool = False, named: bool = False) -> None:
        if not isinstance(node, ast.Constant):
            return
        value = node.value
        if type(value) is not int and type(value) is not float:  # bool is an int too
            return
        tier = _tier(value, seed=seed, named=named)
        if tier is not None:
            self.sites.append(_Site(node, value, tier, setting))

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self.visit(node.value)  # an index or a slice is a position, not a setting

    def visit_Call(self, node: ast.Call) -> None:
        name = _call_name(node)
        seeded = bool(_SEED_CALL.search(name))
        for arg in node.args:
            label = f"the seed of {name}" if seeded else f"an argument of {name or 'a call'}"
            self._add(arg, setting=label, seed=seeded)
        for keyword in node.keywords:
            if keyword.arg is not None:
                is_seed = bool(_SEED_CALL.search(keyword.arg))
                self._add(keyword.value, setting=keyword.arg, seed=is_seed, named=True)
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                self._add(value, setting=key.value, seed=bool(_SEED_CALL.search(key.value)), named=True)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if len(node.targets) == 1 and (name := _target_name(node.targets[0])):
            self._add(node.value, setting=name, seed=bool(_SEED_CALL.search(name)), named=True)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # a parameter's default is a setting of its function: `def optimise(start, steps=300)`
        arguments = node.args
        positional = [*arguments.posonlyargs, *arguments.args]
        pairs = [*zip(positional[len(positional) - len(arguments.defaults):], arguments.defaults, strict=True),
                 *((arg, default) for arg, default in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
                   if default is not None)]
        for arg, default in pairs:
            self._add(default, setting=arg.arg, seed=bool(_SEED_CALL.search(arg.arg)), named=True)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_BinOp(self, node: ast.BinOp) -> None:
        for operand in (node.left, node.right):  # `1 - 1e-7`, `mu * 10.0`; an integer there is mostly a shape
            if isinstance(operand, ast.Constant) and type(operand.value) is float:
                self._add(operand, setting="a constant in an expression")
        self.generic_visit(node)


def _already_seen(site: _Site, sites: list[_Site]) -> bool:
    return any(other.constant is site.constant for other in sites)


def _tunable_sites(tree: ast.Module, first_line: int, last_line: int) -> list[_Site]:
    """Sites between the 1-based lines `first_line` and `last_line`, each constant once (its first reading wins:
    a keyword's value is not also a call's argument)."""
    finder = _Sites()
    finder.visit(tree)
    unique: list[_Site] = []
    for site in finder.sites:
        if first_line <= site.constant.lineno <= last_line and not _already_seen(site, unique):
            unique.append(site)
    return unique


def _format(value: int | float, like: int | float) -> str:
    if isinstance(like, int):
        return str(int(value))
    text = format(value, ".6g")
    return text if any(mark in text for mark in ".en") else f"{text}.0"


def _new_values(value: int | float, tier: str, rng: random.Random) -> list[int | float]:
    """Changed values for a constant of `tier`, in the order to try them."""
    if tier == "seed":
        return [value + rng.randrange(1, 1000)]
    if isinstance(value, int):
        factors = list(_INTEGER_FACTORS)
        rng.shuffle(factors)
        values = [max(2, round(value * factor)) for factor in factors]
        return [new for new in dict.fromkeys(values) if new != value]
    factors = list(_SMALL_OR_LARGE_FACTORS if abs(value) < 0.05 or abs(value) > 10 else _MODERATE_FACTORS)
    rng.shuffle(factors)
    return [value * factor for factor in factors]


def _replaced(code: str, constant: ast.Constant, text: str) -> str:
    lines = code.splitlines(keepends=True)
    index = constant.lineno - 1
    line = lines[index]
    # ast columns count UTF-8 bytes
    raw = line.encode()
    start, end = constant.col_offset, constant.end_col_offset
    assert end is not None and constant.end_lineno == constant.lineno
    lines[index] = (raw[:start] + text.encode() + raw[end:]).decode()
    return "".join(lines)


def _region_lines(code: str, *, evolve_block: bool) -> tuple[int, int]:
    """1-based first and last line an edit may touch."""
    parts = split_evolve_block(code) if evolve_block else None
    if parts is None:
        return 1, len(code.splitlines())
    before, region, _ = parts
    first = before.count("\n") + 1
    return first, first + region.count("\n")


def tunings(code: str, *, evolve_block: bool, seed: int) -> Iterator[Tuning]:
    """Variants of `code` with one constant of its evolvable region changed, drawn by kind (see the module
    docstring) from a generator seeded with `seed`; nothing when the code does not parse or has no such constant.
    Each constant is drawn once, so the variants differ from each other."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return
    sites = [site for site in _tunable_sites(tree, *_region_lines(code, evolve_block=evolve_block))
             if site.constant.end_lineno == site.constant.lineno]
    rng = random.Random(seed)
    while sites:
        site = rng.choices(sites, weights=[_TIER_WEIGHTS[site.tier] for site in sites])[0]
        sites.remove(site)
        old = site.value
        old_text = ast.get_source_segment(code, site.constant) or repr(old)
        for value in _new_values(old, site.tier, rng):
            new_text = _format(value, old)
            if new_text != old_text:
                yield Tuning(_replaced(code, site.constant, new_text), site.setting, old_text, new_text,
                             site.constant.lineno)
                break


def first_new_tuning(code: str, *, evolve_block: bool, seed: int,
                     is_known: Callable[[str], bool], tries: int = 32) -> Tuning | None:
    """The first of `tunings` whose program `is_known` says node memory does not hold, among the first `tries`."""
    for count, tuning in enumerate(tunings(code, evolve_block=evolve_block, seed=seed)):
        if count >= tries:
            break
        if not is_known(tuning.code):
            return tuning
    return None
