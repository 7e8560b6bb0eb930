"""Writes a run report: index.html with its figures beside it, readable with no network."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from evoforge.report.data import RunData
from evoforge.report.plots import PLOTTERS

TOP_NODES = 5


def number_text(value: Any) -> str:
    """A figure as pages show it: 6 significant digits for a float, a dash for none."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=str)


def _diff_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    return {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "")


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("evoforge.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(number=number_text, pretty=pretty_json, diff_class=_diff_class)
    return env


def write_report(data: RunData, out_dir: Path, *, top: int = TOP_NODES) -> Path:
    """Draw the figures into `out_dir` and write `out_dir/index.html`; returns its path.

    The page only references the PNG files beside it (styles are inline), so the directory can be
    copied anywhere and opened offline. Writing again (e.g. while the run goes on) replaces the report.
    """
    if top < 0:
        raise ValueError(f"top: expected a count >= 0, got {top}")
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {plot.name: plot.image.name for plot in (plotter(data, out_dir) for plotter in PLOTTERS)}
    rows = data.costs_by_round()
    totals = {key: sum(row[key] for row in rows) for key in ("tokens_in", "tokens_out", "llm_seconds",
                                                             "eval_seconds", "cpu_s")}
    html = _environment().get_template("report.html.jinja").render(
        data=data,
        run=data.run,
        best=data.best_node,
        plots=plots,
        funnel=data.funnel(),
        statuses=data.status_counts(),
        rounds=rows,
        totals=totals,
        roles=data.usage_by_role(),
        cognition_uses=data.cognition_uses(),
        top_nodes=data.top_nodes(top),
        improving=set(data.improving_ids),
        in_progress=data.run.status == "running",
    )
    index = out_dir / "index.html"
    partial = out_dir / ".index.html.partial"
    partial.write_text(html, encoding="utf-8")
    partial.replace(index)  # a browser refreshing mid-write never sees half a page
    return index
