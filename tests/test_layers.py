"""The package's layers, read from its import statements (those inside functions too): the graph wires the
agents, the agents run on `runtime/` and the services below it, and no arrow points back up."""

from __future__ import annotations

import ast
from pathlib import Path

import evoforge

PACKAGE = Path(evoforge.__file__).parent

BELOW_THE_AGENTS = ("config", "llm", "memory", "cognition", "sandbox", "tasks", "tools", "kernels", "runtime",
                    "report", "ui.wording")
"""What the agents may build on; none of it may import the agents, the graph or the commands on top."""
ABOVE_THE_AGENTS = ("graph", "commands", "dashboard", "cli", "ui.progress")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """The evoforge modules `path` imports, without the leading `evoforge.`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name.removeprefix("evoforge.") for name in names if name.startswith("evoforge."))
    return found


def _within(module: str, layers: tuple[str, ...]) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in layers)


MODULES = {_module_name(path): _imported(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_the_scan_sees_the_package() -> None:
    assert "agents.researcher" in MODULES and "runtime.services" in MODULES["agents.researcher"]
    assert "agents.researcher" in MODULES["graph.builder"]


def test_the_agents_never_import_the_graph_or_anything_above_it() -> None:
    upward = {module: sorted(m for m in imports if _within(m, ABOVE_THE_AGENTS))
              for module, imports in MODULES.items() if _within(module, ("agents",))}
    assert {module: found for module, found in upward.items() if found} == {}


def test_nothing_below_the_agents_imports_the_agents_or_the_graph() -> None:
    upward = {module: sorted(m for m in imports if _within(m, ("agents", *ABOVE_THE_AGENTS)))
              for module, imports in MODULES.items() if _within(module, BELOW_THE_AGENTS)}
    assert {module: found for module, found in upward.items() if found} == {}
