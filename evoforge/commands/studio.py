"""`evoforge` commands for time travel over a run's checkpoints, as LangGraph Studio offers it in the browser:
`history` lists (or shows) the steps a run took, `replay` re-runs a past step as a fork with other settings."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

errors = Console(stderr=True)

RoundOption = Annotated[int | None, typer.Option("--round", "-r", help="The round (the seed is round 0).")]
LaneOption = Annotated[int, typer.Option("--lane", help="The run's lane (0 when it has one).")]
OccurrenceOption = Annotated[int, typer.Option("--occurrence", help="Which run of the step in that round (0: the first).")]


def _fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def parse_settings(items: list[str]) -> dict[str, Any]:
    """`dotted.key=VALUE` pairs (VALUE read as YAML) as nested overrides."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise ValueError(f"--set takes dotted.key=VALUE, got {item!r}")
        target = overrides
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValueError(f"--set {item!r}: {part!r} was given a value already")
        target[parts[-1]] = yaml.safe_load(value)
    return overrides


def describe_update(update: dict[str, Any]) -> str:
    """One line on what a step wrote: the decisions, not the bulk (code and prompts stay in `history --node`)."""
    parts: list[str] = []
    if parent := update.get("parent"):
        parts.append(f"parent {parent.get('name')}")
    if candidate := update.get("candidate"):
        parts.append(f"candidate {candidate.get('name')}")
    if (report := update.get("static_report")) is not None:
        parts.append("static check ok" if report.get("ok") else f"static check: {'; '.join(report.get('reasons', []))}")
    if (report := update.get("novelty_report")) is not None:
        parts.append(f"novelty {report.get('verdict')} (nearest {report.get('nearest_name')})")
    for result in update.get("stage_results") or []:
        parts.append(f"stage {result.get('stage')} {result.get('status')}, score {result.get('score')}")
    if approval := update.get("approval"):
        parts.append(f"human: {approval.get('action')}" + (f" ({approval['reason']})" if approval.get("reason") else ""))
    if update.get("status"):
        parts.append(f"status {update['status']}")
    if update.get("analysis"):
        parts.append(update["analysis"].strip().splitlines()[0][:100])
    if "best_score" in update:
        parts.append(f"best {update['best_score']}")
    if update.get("stop_reason"):
        parts.append(f"stop: {update['stop_reason']}")
    return "; ".join(parts) or ", ".join(sorted(update))


def history(
    run_id: str,
    round_: RoundOption = None,
    node: Annotated[str | None, typer.Option("--node", help="Show this step of --round in full.")] = None,
    occurrence: OccurrenceOption = 0,
    lane: LaneOption = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the steps a run took (one per checkpoint), or show one: the state it was given and what it wrote."""
    from evoforge.graph.replay import ReplayError, inspect_step
    from evoforge.graph.replay import history as run_history
    from evoforge.graph.runner import RunNotFound

    if node is not None and round_ is None:
        _fail("--node needs --round")
    try:
        if node is not None and round_ is not None:
            step = inspect_step(run_id, round_, node, occurrence=occurrence, lane=lane)
            sys.stdout.write(json.dumps(asdict(step), indent=1, default=str) + "\n")
            return
        steps = run_history(run_id, lane=lane)
    except (RunNotFound, ReplayError) as exc:
        _fail(str(exc))
        raise
    steps = [step for step in steps if round_ is None or step.round == round_]
    if as_json:
        sys.stdout.write(json.dumps([asdict(step) for step in steps], default=str) + "\n")
        return
    table = Table("step", "round", "node", "what it wrote", "checkpoint")
    for step in steps:
        wrote = describe_update(step.wrote) if step.wrote is not None else (
            "waiting for approval" if step.asked else "not finished")
        table.add_row(str(step.step), str(step.round), step.node, escape(wrote), step.checkpoint_id)
    Console(width=200).print(table)
    errors.print(f"one step in full: evoforge history {run_id} --round N --node NAME; "
                 f"re-run from it: evoforge replay {run_id} --round N --from-node NAME")


def replay(
    run_id: str,
    round_: Annotated[int, typer.Option("--round", "-r", help="The round to re-run.")],
    from_node: Annotated[str, typer.Option("--from-node", help="The step to re-run from.")] = "analyze_result",
    model: Annotated[str | None, typer.Option("--model", help="Another model name for that step's agent.")] = None,
    setting: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a setting: dotted.key=VALUE (YAML), e.g. roles.analyzer.model=NAME.")] = None,
    overrides_file: Annotated[Path | None, typer.Option("--config", "-c", help="YAML file of overrides.")] = None,
    occurrence: OccurrenceOption = 0,
    lane: LaneOption = 0,
    fork_id: Annotated[str | None, typer.Option("--fork-id", help="Run id of the fork (default: RUN_ID-fork-…).")] = None,
) -> None:
    """Re-run round N of a run from the checkpoint before --from-node, as a new run (the original is untouched)."""
    from evoforge.config import ConfigError
    from evoforge.graph.replay import ReplayError, fork_run, merge_overrides, model_override
    from evoforge.graph.runner import RunNotFound, stored_config
    from evoforge.runtime.services import open_store

    try:
        overrides: dict[str, Any] = {}
        if overrides_file is not None:
            loaded = yaml.safe_load(overrides_file.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"--config {overrides_file}: expected a mapping, got {type(loaded).__name__}")
            overrides = loaded
        if model is not None:
            overrides = merge_overrides(model_override(stored_config(run_id), from_node, model), overrides)
        overrides = merge_overrides(overrides, parse_settings(setting or []))
        outcome = fork_run(run_id, round_, from_node=from_node, overrides=overrides, occurrence=occurrence,
                           lane=lane, fork_id=fork_id,
                           on_update=lambda node, update: errors.print(f"fork: {node}: {escape(describe_update(update))}"))
    except (RunNotFound, ReplayError, ConfigError, ValueError, OSError, yaml.YAMLError) as exc:
        _fail(str(exc))
        raise
    console = Console()
    console.print(f"fork {outcome.run_id} of run {run_id}, round {round_} from {from_node}")
    if outcome.pending_approvals:
        for request in outcome.pending_approvals:
            console.print(f"waiting for approval: candidate {request.get('candidate')!r}, stage {request.get('stage')} "
                          f"(cost {request.get('cost')}) → evoforge approve {outcome.run_id}")
        return
    _, nodes = open_store(stored_config(outcome.run_id))
    for node in nodes.list_nodes(outcome.run_id):
        console.print(f"node {node.id}: {node.status}, score {node.score}")
        if node.analysis:
            console.print(escape(node.analysis))
    console.print(f"the original run {run_id} is unchanged; compare: evoforge history {outcome.run_id}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command()(history)
    app.command()(replay)
