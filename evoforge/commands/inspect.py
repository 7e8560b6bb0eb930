"""`evoforge` commands that look at a run: report, show, diff, export."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from evoforge.config import RunConfig
from evoforge.ui.wording import counted

if TYPE_CHECKING:
    from evoforge.cognition.store import CognitionStore
    from evoforge.memory.nodes import NodeRecord, NodeStore

log = logging.getLogger(__name__)

errors = Console(stderr=True)


def _fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def _open() -> tuple[RunConfig, NodeStore]:
    """The configuration (from the environment) and the node memory it points at."""
    from evoforge.config import ConfigError, load_config
    from evoforge.runtime.services import open_store

    try:
        config = load_config(None)
    except ConfigError as exc:
        _fail(str(exc))
        raise
    return config, open_store(config)[1]


def _node(nodes: NodeStore, node_id: str) -> NodeRecord:
    node = nodes.get_node(node_id)
    if node is None:
        _fail(f"no node {node_id!r}")
    assert node is not None
    return node


def cognition_reader(config: RunConfig, nodes: NodeStore) -> CognitionStore | None:
    """The cognition base, only read by id (which embeds nothing, so no model is loaded); None when the
    configured embedder cannot even be built (e.g. an endpoint without its key), and items go unnamed."""
    from evoforge.cognition.store import CognitionStore
    from evoforge.runtime.services import embedder_for

    try:
        return CognitionStore(nodes.database, embedder_for(config))
    except ValueError as exc:
        log.warning("cognition items will be shown by id only: %s", exc)
        return None


def node_as_json(node: NodeRecord, *, embedding: bool = False) -> dict[str, Any]:
    """Every field of a node as JSON-ready values (the embedding only when asked for)."""
    record = asdict(node)
    if not embedding:
        record.pop("embedding")
    record["created_at"] = node.created_at.isoformat() if node.created_at else None
    return record


def report(
    run_id: str,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory; default <state_dir>/runs/RUN/report.")] = None,
    top: Annotated[int, typer.Option("--top", help="How many of the best nodes to show in full.")] = 5,
) -> None:
    """Write an HTML report of a run (finished or in progress) that opens without a network."""
    from evoforge.report import collect_run, write_report

    config, nodes = _open()
    try:
        data = collect_run(nodes, run_id, cognition=cognition_reader(config, nodes))
    except KeyError:
        _fail(f"no run {run_id!r}")
        raise
    out_dir = out or config.run_dir(run_id) / "report"
    index = write_report(data, out_dir, top=top)
    errors.print(f"report of {counted(len(data.nodes), 'node')} ({data.run.status}): {index}")


def show(
    node_id: str,
    calls: Annotated[bool, typer.Option("--calls", help="Also every model call made for it: prompt and reply.")] = False,
) -> None:
    """Show a node: motivation, code, metrics, analysis, parents, cognition used (and with --calls, its model calls)."""
    config, nodes = _open()
    node = _node(nodes, node_id)
    out = Console(highlight=False)
    out.rule(f"{escape(node.name)} — {node.id}")
    facts = Table.grid(padding=(0, 2))
    for key, value in (("run", node.run_id), ("round / lane / island", f"{node.round} / {node.lane} / {node.island}"),
                       ("status", node.status), ("score", f"{node.score} ({'valid' if node.valid else 'not valid'})"),
                       ("policy", node.policy or "–"),
                       ("cost", f"{node.tokens_in}+{node.tokens_out} tokens, {node.llm_seconds:.1f}s LLM, "
                                f"{node.eval_seconds:.1f}s evaluation")):
        facts.add_row(key, escape(str(value)))
    out.print(facts)
    for label, ids in (("parents", node.parent_ids), ("inspirations", node.inspiration_ids)):
        for other in nodes.get_nodes(ids):
            out.print(escape(f"{label[:-1]}: {other.id} {other.name} (score {other.score}, {other.status})"))
    for title, text in (("motivation", node.motivation), ("error", node.error), ("feedback", node.feedback),
                        ("analysis", node.analysis)):
        if text:
            out.rule(title, align="left")
            out.print(escape(text))
    out.rule("metrics", align="left")
    out.print_json(json.dumps(node.metrics, default=str))
    for stage in node.stage_results:
        out.print(escape(f"stage {stage.get('stage')}: {stage.get('status')}, score {stage.get('score')}, "
                         f"{stage.get('wall_s', 0):.1f}s wall, {stage.get('cpu_s', 0):.1f}s CPU, "
                         f"{stage.get('peak_memory_mb', 0):.0f} MB"))
    if node.cognition_ids:
        out.rule("cognition used", align="left")
        cognition = cognition_reader(config, nodes)
        items = {item.id: item for item in cognition.get(node.cognition_ids)} if cognition else {}
        for item_id in node.cognition_ids:
            item = items.get(item_id)
            out.print(escape(f"[{item.kind}] {item.title} ({item.source})" if item else item_id))
    _print_code(out, node, nodes)
    if calls:
        _print_calls(out, config.node_dir(node.run_id, node.id))


def _print_code(out: Console, node: NodeRecord, nodes: NodeStore) -> None:
    """The node's program; a tree program file by file, each marked changed (against its parent) or not."""
    from evoforge.tasks.tree import decode_bundle, is_bundle

    if not is_bundle(node.code):
        out.rule("code", align="left")
        out.print(Syntax(node.code, "python", line_numbers=True, word_wrap=True))
        return
    files = decode_bundle(node.code)
    parents = nodes.get_nodes(node.parent_ids[:1])
    before = decode_bundle(parents[0].code) if parents and is_bundle(parents[0].code) else None
    for path, text in files.items():
        change = "" if before is None else " (new)" if path not in before else \
            " (changed)" if before[path] != text else " (unchanged)"
        out.rule(escape(f"file {path}{change}"), align="left")
        lexer = Syntax.guess_lexer(path, text)
        out.print(Syntax(text, lexer, line_numbers=True, word_wrap=True))
    for path in sorted(set(before or {}) - set(files)):
        out.rule(escape(f"file {path} (deleted)"), align="left")


def read_calls(node_dir: Path) -> list[dict[str, Any]] | None:
    """The node's model-call transcript (agents/base.py writes it), oldest call first; None when it has none.
    A line cut short by a kill mid-write comes back as `{"unreadable": reason}`, so the rest is still shown."""
    from evoforge.agents.base import TRANSCRIPT

    path = node_dir / TRANSCRIPT
    if not path.is_file():
        return None
    calls: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            calls.append(json.loads(line))
        except json.JSONDecodeError as exc:
            calls.append({"unreadable": str(exc)})
    return calls


def _print_calls(out: Console, node_dir: Path) -> None:
    from evoforge.agents.base import TRANSCRIPT

    calls = read_calls(node_dir)
    if calls is None:
        out.print(escape(f"no model calls recorded at {node_dir / TRANSCRIPT}"))
        return
    for number, call in enumerate(calls, 1):
        if "unreadable" in call:
            out.print(escape(f"call {number}: unreadable line ({call['unreadable']})"))
            continue
        out.rule(escape(f"call {number}: {call['role']}, attempt {call['attempt']}, seed {call['seed']}, {call['at']}"),
                 align="left")
        for message in call["messages"]:
            out.print(f"[bold]{escape(message['type'])}[/]")
            out.print(escape(message["content"]))
        out.print("[bold]reply[/]" if "reply" in call else "[bold red]failed[/]")
        out.print(escape(call.get("reply", call.get("error", ""))))


def diff(node_a: str, node_b: str) -> None:
    """Unified diff of two nodes' code (A → B)."""
    from evoforge.report.data import code_diff

    _, nodes = _open()
    a, b = _node(nodes, node_a), _node(nodes, node_b)
    text = "\n".join(code_diff(a.code, b.code, f"{a.id} ({a.name})", f"{b.id} ({b.name})"))
    if not text:
        errors.print("the two nodes have the same code")
        return
    if sys.stdout.isatty():
        Console().print(Syntax(text, "diff"))
    else:
        sys.stdout.write(text + "\n")


def export(
    run_id: str,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: jsonl (one node per line).")] = "jsonl",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File; default standard output.")] = None,
    embeddings: Annotated[bool, typer.Option("--embeddings", help="Include each node's embedding.")] = False,
) -> None:
    """Export every node of a run, for analysis elsewhere."""
    if fmt != "jsonl":
        _fail(f"--format: expected 'jsonl', got {fmt!r}")
    _, nodes = _open()
    if nodes.get_run(run_id) is None:
        _fail(f"no run {run_id!r}")
    lines = [json.dumps(node_as_json(node, embedding=embeddings), default=str) + "\n"
             for node in nodes.list_nodes(run_id)]
    if out is None:
        sys.stdout.writelines(lines)
    else:
        out.write_text("".join(lines))
        errors.print(f"{counted(len(lines), 'node')} written to {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    for command in (report, show, diff, export):
        app.command()(command)
