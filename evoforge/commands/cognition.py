"""`evoforge cognition add | search | list | provenance`: the cognition base from the command line.

Every command works on the database of the run configuration (`--config`, else `EVOFORGE_*` and the
defaults: the embedded server under the state dir) with the configured embedding model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from evoforge.ui.wording import counted

if TYPE_CHECKING:
    from evoforge.cognition.store import CognitionItem, CognitionStore

cognition_app = typer.Typer(
    no_args_is_help=True, help="The cognition base: human priors and learned insights."
)
console = Console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration.")]
TaskOption = Annotated[str | None, typer.Option("--task", "-t", help="Task name; omitted: every task.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
SNIPPET_CHARS = 160


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def _store(config_file: Path | None) -> CognitionStore:
    from evoforge.cognition.store import CognitionStore
    from evoforge.config import ConfigError, load_config
    from evoforge.memory.database import EmbeddingMismatchError
    from evoforge.runtime.services import embedder_for, open_store

    try:
        config = load_config(config_file)
        database, _ = open_store(config)
    except (ConfigError, EmbeddingMismatchError) as exc:
        _fail(str(exc))
        raise
    return CognitionStore(database, embedder_for(config))


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


def _item_dict(item: CognitionItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "task": item.task,
        "kind": item.kind,
        "title": item.title,
        "content": item.content,
        "source": item.source,
        "node_id": item.node_id,
        "similarity": item.similarity,
    }


def _print_items(items: list[CognitionItem], as_json: bool, *, similarity: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps([_item_dict(item) for item in items], indent=1) + "\n")
        return
    columns = ["#", *(["similarity"] if similarity else []), "kind", "task", "title", "content", "source"]
    table = Table(*columns, show_lines=False)
    for rank, item in enumerate(items, 1):
        origin = f"node {item.node_id}" if item.node_id else item.source
        table.add_row(
            str(rank),
            *([f"{item.similarity:.3f}"] if similarity else []),
            item.kind,
            item.task or "(all)",
            item.title,
            _snippet(item.content),
            origin,
        )
    Console().print(table)


@cognition_app.command("add")
def add(
    paths: Annotated[list[Path], typer.Argument(help="Markdown, text or PDF files, or folders of them.")],
    task: TaskOption = None,
    config_file: ConfigOption = None,
) -> None:
    """Ingest notes as retrievable items; adding the same text again adds nothing."""
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        _fail(f"no such file or folder: {', '.join(missing)}")
    store = _store(config_file)
    added = store.ingest_files(paths, task)
    console.print(
        f"added {counted(added, 'new item')}; {counted(store.count(task), 'item')} now held for {task or 'every task'}"
    )


@cognition_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="What to look for, in words.")],
    task: TaskOption = None,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many items.")] = 5,
    min_similarity: Annotated[float, typer.Option("--min-similarity", min=-1, max=1)] = -1.0,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """The items most similar to QUERY (a task's items and the global ones)."""
    items = _store(config_file).search([query], task=task, k=k, min_similarity=min_similarity)
    _print_items(items, as_json, similarity=True)


@cognition_app.command("list")
def list_items(
    task: TaskOption = None,
    kind: Annotated[str | None, typer.Option("--kind", help="prior | insight")] = None,
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """Every item (of a task and the global ones), oldest first."""
    try:
        items = _store(config_file).list(task, kind)
    except ValueError as exc:
        _fail(str(exc))
        raise
    _print_items(items, as_json, similarity=False)


@cognition_app.command("provenance")
def provenance(
    node_id: Annotated[str, typer.Argument(help="A node id (see `evoforge status RUN`).")],
    as_json: JsonOption = False,
    config_file: ConfigOption = None,
) -> None:
    """Which items inspired NODE_ID (with the node each learned insight came from), and who reused
    the insights learnt from it."""
    from evoforge.cognition.provenance import node_provenance

    store = _store(config_file)
    try:
        answer = node_provenance(store.database, node_id)
    except LookupError as exc:
        _fail(str(exc))
        raise
    if as_json:
        sys.stdout.write(json.dumps(answer.to_dict(), indent=1, default=str) + "\n")
        return
    out = Console()
    node = answer.node
    out.print(f"node {node.id} ({node.name}, round {node.round}, {node.status}, score {node.score})")
    table = Table("#", "kind", "title", "learnt from", "content", title="its Researcher saw")
    for rank, seen in enumerate(answer.seen, 1):
        origin = f"{seen.origin.id} ({seen.origin.name})" if seen.origin else seen.item.source
        table.add_row(str(rank), seen.item.kind, seen.item.title, origin, _snippet(seen.item.content))
    out.print(table if answer.seen else "its Researcher saw no cognition items")
    for item in answer.taught:
        readers = ", ".join(ref.id for ref in answer.reused_by[item.id]) or "no node yet"
        out.print(f"taught: {_snippet(item.content)} — read by {readers}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.add_typer(cognition_app, name="cognition")
