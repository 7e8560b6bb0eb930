"""What a person sees of a run in the terminal: a live display while it runs, and summaries."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evoforge.config import RunConfig
from evoforge.ui.wording import counted

if TYPE_CHECKING:  # the runner brings in the whole graph, which this display needs only as a type
    from evoforge.graph.runner import LanePosition


def format_score(score: float | None) -> str:
    return "-" if score is None else f"{score:.6g}"


@dataclass
class LaneActivity:
    """What one research lane is doing, from the updates it streamed."""

    round: int = 0
    """The lane's current round."""
    done: int = 0
    """Rounds the lane has recorded."""
    step: str = "starting"
    """The graph node that ran last."""
    candidate: str = ""
    status: str = ""
    score: float | None = None
    last_result: str = ""
    """The lane's last recorded node: name, status, score."""


class RoundReporter:
    """Follows the graph's step updates of every lane (an update's `lane`, 0 when absent): on a terminal a
    progress bar over the run's rounds with one live row per lane; otherwise one plain line per round.
    Lanes run in threads, so updates may arrive concurrently."""

    def __init__(self, console: Console, config: RunConfig) -> None:
        self.console = console
        self.rounds = config.rounds
        self.best: float | None = None
        self.last_result = ""
        self.lanes: dict[int, LaneActivity] = {}
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._live: Live | None = None
        self._bar: Any = None

    def __enter__(self) -> RoundReporter:
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]rounds"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"), console=self.console,
            )
            self._bar = self._progress.add_task("starting (seed evaluation)", total=self.rounds)
            self._live = Live(Group(self._progress, self), console=self.console, refresh_per_second=4)
            self._live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()

    def start_from(self, positions: dict[int, LanePosition]) -> None:
        """Take the lanes' checkpointed positions (the runner's `lane_positions`) of a run picked up again."""
        with self._lock:
            for number, position in positions.items():
                lane = self.lanes.setdefault(number, LaneActivity())
                lane.step = "checkpoint"
                lane.round, lane.done = position["round"], position["rounds_done"]
                candidate = position.get("candidate")
                lane.candidate = candidate.get("name", "") if candidate else ""
                if position.get("best_score") is not None:
                    self.best = position["best_score"]
            completed = self.completed
        if self._progress is not None:
            self._progress.update(self._bar, completed=completed, description=f"resumed after {counted(completed, 'round')}")

    @property
    def completed(self) -> int:
        """Rounds recorded over every lane."""
        return sum(lane.done for lane in self.lanes.values())

    def __rich__(self) -> Table:
        """The live rows: one per lane."""
        table = Table.grid(padding=(0, 2))
        with self._lock:
            for number, lane in sorted(self.lanes.items()):
                table.add_row(f"lane {number}", f"round {lane.round}", lane.step, escape(lane.candidate or "…"),
                              f"last: {escape(lane.last_result or '-')}")
        return table

    def update(self, node: str, update: dict[str, Any]) -> None:
        """Take one step's state update (the runner's `on_update` callback)."""
        with self._lock:
            line = self._apply(node, update)
            description = f"best {format_score(self.best)} | last: {self.last_result or '-'}"
            completed = self.completed
        if self._progress is not None:
            self._progress.update(self._bar, completed=completed, description=escape(description))
        if line is not None:
            (self._progress.console if self._progress is not None else self.console).print(line, highlight=False,
                                                                                             markup=False)

    def _apply(self, node: str, update: dict[str, Any]) -> str | None:
        """Fold an update into the lanes; returns the line to print when a round was recorded."""
        number = update["lane"] if isinstance(update.get("lane"), int) else 0
        lane = self.lanes.setdefault(number, LaneActivity())
        lane.step = node
        if isinstance(update.get("round"), int):
            lane.round = update["round"]
            lane.done = max(lane.done, lane.round - 1)
        if update.get("candidate"):
            lane.candidate = update["candidate"].get("name", "")
        if update.get("status"):
            lane.status = update["status"]
        for result in update.get("stage_results") or []:
            lane.score = result.get("score")
        if update.get("best_score") is not None:
            self.best = update["best_score"]
        if node != "record_node":
            return None
        lane.done = max(lane.done, lane.round)
        lane.last_result = f"{lane.candidate or '-'} {lane.status or '-'} {format_score(lane.score)}"
        self.last_result = lane.last_result
        several = len(self.lanes) > 1
        where = f"round {self.completed}/{self.rounds}" + (f" (lane {number}, its round {lane.round})" if several else "")
        line = (f"{where}: {lane.candidate or '-'} {lane.status or '-'} score={format_score(lane.score)} "
                f"best={format_score(self.best)}")
        if several:
            line += " | " + ", ".join(f"lane {n} round {other.round} {other.step}"
                                      for n, other in sorted(self.lanes.items()) if other is not lane)
        lane.candidate, lane.status, lane.score = "", "", None
        return line


def print_outcome(console: Console, outcome: Any, nodes: Any, config: RunConfig) -> None:
    """The end of `evoforge run`: best score, best program's path, where the record is, or what waits."""
    state = outcome.state
    if outcome.pending_approvals:
        for request in outcome.pending_approvals:
            console.print(f"[bold yellow]waiting for approval[/]: run {outcome.run_id}, candidate "
                          f"{request.get('candidate')!r}, stage {request.get('stage')} (cost {request.get('cost')})")
        console.print(f"answer with: evoforge approve {outcome.run_id} [--reject] [--set KEY=VALUE]")
        return
    run_dir = config.run_dir(outcome.run_id)
    console.print(f"run {outcome.run_id}: {state.get('stop_reason') or 'stopped'}")
    best_id = state.get("best_node_id")
    if best_id:
        node = nodes.get_node(best_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        best_path = _write_best(node, nodes, run_dir)
        console.print(f"best score: {node.score} (node {best_id}, {node.name})")
        console.print(f"best program: {best_path}")
    else:
        console.print("no valid node yet")
    console.print(f"run record: database {nodes.database.url} (run id {outcome.run_id}); files under {run_dir}")


def _write_best(node: Any, nodes: Any, run_dir: Path) -> Path:
    """The best program under the run's directory: best_program.py, or for a tree task best_program/, the whole
    tree ready to run."""
    from evoforge.tasks.spec import load_task
    from evoforge.tasks.tree import is_bundle

    if not is_bundle(node.code):
        path = run_dir / "best_program.py"
        path.write_text(node.code)
        return path
    path = run_dir / "best_program"
    if path.exists():
        shutil.rmtree(path)
    load_task(nodes.get_run(node.run_id).task_dir).program_tree.materialize(node.code, path, read_only=False)
    return path


def print_run_status(console: Console, nodes: Any, run_id: str, status: tuple[str, str | None]) -> None:
    """One run's progress; `status` and its reason as the runner's `run_status` tells them."""
    run = nodes.get_run(run_id)
    totals = nodes.run_totals(run_id)
    state, reason = status
    console.print(f"run {run_id} — task {run.task}, {state}" + (f" ({escape(reason)})" if reason else ""))
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
