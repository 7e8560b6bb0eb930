"""Feature descriptors that place a node in a MAP-Elites grid.

Built-ins:
- `complexity`: decision points and structure in the code — branches, loops, handlers, boolean
  operators, comprehensions, functions and lambdas (a cyclomatic-complexity count).
- `code_length`: non-blank lines of code.
- `diversity`: cosine distance between the node's embedding (idea and code) and the run's seed:
  how far, structurally and semantically, the program has moved from where the run started.
Any other name reads the numeric metric of that name from the evaluator's report.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence

from evoforge.config import FeatureDimension
from evoforge.memory.nodes import NodeRecord
from evoforge.tasks.tree import BundleError, decode_bundle, is_bundle

_DECISIONS = (
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.ExceptHandler,
    ast.With,
    ast.AsyncWith,
    ast.IfExp,
    ast.BoolOp,
    ast.comprehension,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.Lambda,
    ast.match_case,
)


def complexity(code: str) -> float | None:
    """Decision points of the program (of a tree program's Python files together); None when it does not parse."""
    if is_bundle(code):
        try:
            parts = [complexity(text) for path, text in decode_bundle(code).items() if path.endswith(".py")]
        except BundleError:
            return None
        return float(sum(parts)) if parts and None not in parts else None  # type: ignore[arg-type]
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    return float(sum(isinstance(node, _DECISIONS) for node in ast.walk(tree)))


def code_length(code: str) -> float:
    return float(sum(1 for line in code.splitlines() if line.strip()))


def cosine_distance(a: Sequence[float] | None, b: Sequence[float] | None) -> float | None:
    if a is None or b is None:
        return None
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norm == 0:
        return None
    return 1.0 - sum(x * y for x, y in zip(a, b, strict=True)) / norm


def feature_values(
    node: NodeRecord, dimensions: Sequence[FeatureDimension], reference: Sequence[float] | None
) -> list[float] | None:
    """The node's value on every dimension; None when one cannot be computed (the node stays out of
    the grid). `reference` is the seed's embedding, used by `diversity`."""
    values: list[float] = []
    for dimension in dimensions:
        value: float | None
        if dimension.name == "complexity":
            value = complexity(node.code)
        elif dimension.name == "code_length":
            value = code_length(node.code)
        elif dimension.name == "diversity":
            value = cosine_distance(node.embedding, reference)
        else:
            raw = node.metrics.get(dimension.name)
            numeric = isinstance(raw, (int, float)) and not isinstance(raw, bool)
            value = float(raw) if numeric and math.isfinite(float(raw)) else None  # type: ignore[arg-type]
        if value is None:
            return None
        values.append(value)
    return values


def cell_of(values: Sequence[float], dimensions: Sequence[FeatureDimension]) -> list[int]:
    """The grid cell of feature values: each clamped to [low, high] and cut into `bins` equal parts."""
    cell: list[int] = []
    for value, dimension in zip(values, dimensions, strict=True):
        fraction = (min(max(value, dimension.low), dimension.high) - dimension.low) / (
            dimension.high - dimension.low
        )
        cell.append(min(int(fraction * dimension.bins), dimension.bins - 1))
    return cell
