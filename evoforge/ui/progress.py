"""What a person sees of a run in the terminal: a live line per round, and summaries."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evoforge.config import RunConfig


class RoundReporter:
    """Follows the graph's step updates; a progress bar on a terminal, one plain line per round otherwise."""

    def __init__(self, console: Console, config: RunConfig) -> None:
        self.console = console
        self.rounds = config.rounds
        self.round = 0
        self.candidate = ""
        self.status = ""
        self.score: float | None = None
        self.best: float | None = None
        self._progress: Progress | None = None
        self._bar: Any = None

    def __enter__(self) -> RoundReporter:
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]round"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"), console=self.console, transient=False,
            )
            self._progress.start()
            self._bar = self._progress.add_task("starting (seed evaluation)", total=self.rounds)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _describe(self, phase: str) -> str:
        return f"best {self.best if self.best is not None else '-'} | {self.candidate or '…'} | {phase}"

    def update(self, node: str, update: dict[str, Any]) -> None:
        if "round" in update:
            self.round = update["round"]
        if update.get("candidate"):
            self.candidate = update["candidate"].get("name", "")
        if update.get("status"):
            self.status = update["status"]
        for result in update.get("stage_results") or []:
            self.score = result.get("score")
        if "best_score" in update:
            self.best = update["best_score"]
        if node == "record_node":
            line = (f"round {self.round}/{self.rounds}: {self.candidate or '-'} {self.status or '-'} "
                    f"score={self.score} best={self.best}")
            if self._progress is not None:
                self._progress.update(self._bar, completed=self.round, description=self._describe("recorded"))
                self._progress.console.print(line, highlight=False)
            else:
                self.console.print(line, highlight=False)
            self.candidate, self.status, self.score = "", "", None
        elif self._progress is not None:
            self._progress.update(self._bar, completed=max(self.round - 1, 0), description=self._describe(node))


def print_outcome(console: Console, outcome: Any, nodes: Any, config: RunConfig) -> None:
    """The end of `evoforge run`: best score, best program's path, where the record is, or what waits."""
    state = outcome.state
    if outcome.pending_approvals:
        for request in outcome.pending_approvals:
            console.print(f"[bold yellow]waiting for approval[/]: run {outcome.run_id}, candidate "
                          f"{request.get('candidate')!r}, stage {request.get('stage')} (cost {request.get('cost')})")
        console.print(f"answer with: evoforge approve {outcome.run_id} [--reject] [--set KEY=VALUE]")
        return
    run_dir = config.runs_dir / outcome.run_id
    console.print(f"run {outcome.run_id}: {state.get('stop_reason') or 'stopped'}")
    best_id = state.get("best_node_id")
    if best_id:
        node = nodes.get_node(best_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        best_path = run_dir / "best_program.py"
        best_path.write_text(node.code)
        console.print(f"best score: {node.score} (node {best_id}, {node.name})")
        console.print(f"best program: {best_path}")
    else:
        console.print("no valid node yet")
    console.print(f"run record: database {nodes.database.url} (run id {outcome.run_id}); files under {run_dir}")


def print_run_status(console: Console, nodes: Any, run_id: str) -> None:
    run = nodes.get_run(run_id)
    totals = nodes.run_totals(run_id)
    console.print(f"run {run_id} — task {run.task}, {run.status}" + (f" ({run.stop_reason})" if run.stop_reason else ""))
    console.print(f"nodes {totals.get('nodes')}, best {totals.get('best_score')}, tokens "
                  f"{totals.get('tokens_in', 0)}+{totals.get('tokens_out', 0)}, eval {totals.get('eval_seconds', 0):.0f}s")
    table = Table("round", "node", "name", "status", "score")
    for node in nodes.list_nodes(run_id)[-15:]:
        table.add_row(str(node.round), node.id, node.name, node.status, f"{node.score}")
    console.print(table)
    from evoforge.graph.runner import pending_approvals

    for request in pending_approvals(run_id):
        console.print(f"[bold yellow]pending approval[/]: candidate {request.get('candidate')!r}, stage "
                      f"{request.get('stage')} (cost {request.get('cost')}) → evoforge approve {run_id}")
