"""The report's figures, drawn with matplotlib's object API (Agg, no pyplot state) into PNG files.

Each figure is saved as `<name>.png` with a `<name>.json` sidecar holding exactly the data plotted, so a
reader (or a test) can check a figure without parsing pixels.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from evoforge.memory.nodes import NodeRecord, is_finite_score
from evoforge.report.data import RunData, figure_score, is_failure, is_seed
from evoforge.ui.wording import counted

DPI = 100
FUNNEL_COLOURS = {"generated": "#7f8c8d", "evaluated": "#2e86c1", "improved": "#27ae60"}
REJECTION_COLOUR = "#c0392b"
HUMAN_REJECTION_COLOUR = "#8e44ad"
MAX_LABELLED_NODES = 30
LINEAGE_Y_LABEL = "family branch"
"""Vertical position only groups a family (a node's descendants sit beside it); it carries no value."""


@dataclass
class Plot:
    name: str
    image: Path
    sidecar: Path
    data: dict[str, Any]


def _save(fig: Figure, out_dir: Path, name: str, data: dict[str, Any]) -> Plot:
    image, sidecar = out_dir / f"{name}.png", out_dir / f"{name}.json"
    fig.savefig(image, dpi=DPI, bbox_inches="tight")
    sidecar.write_text(json.dumps(data, indent=1, default=str))
    return Plot(name, image, sidecar, data)


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def _score_of(node: NodeRecord) -> float:
    """The score of a node already known to have a finite one."""
    assert node.score is not None
    return node.score


def _series_label(data: RunData) -> Callable[[NodeRecord], str]:
    lanes = {n.lane for n in data.nodes}
    islands = {n.island for n in data.nodes}

    def label(node: NodeRecord) -> str:
        parts = ([f"lane {node.lane}"] if len(lanes) > 1 else []) + (
            [f"island {node.island}"] if len(islands) > 1 else [])
        return " / ".join(parts) or "all nodes"

    return label


def _best_so_far(data: RunData, nodes: list[NodeRecord]) -> list[list[float]]:
    """(round, best valid score up to and including that round) for every round from the first valid one."""
    best: float | None = None
    steps: list[list[float]] = []
    by_round: dict[int, list[NodeRecord]] = defaultdict(list)
    for node in nodes:
        by_round[node.round].append(node)
    for round_ in sorted(by_round):
        for node in by_round[round_]:
            score = node.score
            if node.valid and score is not None and is_finite_score(score) and (
                best is None or data.better(score, best)
            ):
                best = score
        if best is not None:
            steps.append([round_, best])
    return steps


def _draw_unscored(band: Any, nodes: list[NodeRecord]) -> list[str]:
    """The nodes a score axis cannot place, one row per status, at their round; returns the rows' statuses."""
    statuses: list[str] = sorted({n.status for n in nodes})
    for row, status in enumerate(statuses):
        counts: dict[int, int] = defaultdict(int)
        for n in nodes:
            if n.status == status:
                counts[n.round] += 1
        colour = HUMAN_REJECTION_COLOUR if status == "rejected_by_human" else REJECTION_COLOUR
        band.scatter(list(counts), [row] * len(counts), marker="X", s=40, color=colour)
        for round_, count in counts.items():
            if count > 1:
                band.annotate(f"×{count}", (round_, row), xytext=(5, -3), textcoords="offset points", fontsize=7)
    band.set_yticks(range(len(statuses)), [status.replace("_", " ") for status in statuses], fontsize=8)
    band.set_ylim(-0.6, len(statuses) - 0.4)
    band.set_ylabel("no score", fontsize=8)
    band.grid(axis="x", alpha=0.3)
    return statuses


def plot_scores(data: RunData, out_dir: Path) -> Plot:
    """Every node's score against its round, per lane/island, with the best-so-far line; below, in a band of
    their own, the nodes with no score to show (failed before one, or a stage a person rejected)."""
    unscored = [n for n in data.nodes if figure_score(n) is None]
    bands = len({n.status for n in unscored})
    fig = Figure(figsize=(9, 4.5 + 0.3 * bands), layout="constrained")
    band = None
    if unscored:
        ax, band = fig.subplots(2, 1, sharex=True, height_ratios=[6, 1 + 0.6 * bands])
    else:
        ax = fig.add_subplot()
    label = _series_label(data)
    groups: dict[str, list[NodeRecord]] = defaultdict(list)
    for node in data.nodes:
        groups[label(node)].append(node)
    series = []
    colours = [f"C{i}" for i in range(10)]
    for index, (name, nodes) in enumerate(sorted(groups.items())):
        colour = colours[index % len(colours)]
        points: list[list[Any]] = [[n.round, n.score, n.valid] for n in nodes if figure_score(n) is not None]
        valid = [p for p in points if p[2]]
        invalid = [p for p in points if not p[2]]
        if valid:
            ax.scatter([p[0] for p in valid], [p[1] for p in valid], color=colour, s=28, label=f"{name}: valid")
        if invalid:
            ax.scatter([p[0] for p in invalid], [p[1] for p in invalid], color=colour, marker="x", s=28,
                       label=f"{name}: not valid")
        best = _best_so_far(data, nodes)
        if best and len(groups) > 1:
            ax.step([b[0] for b in best], [b[1] for b in best], where="post", color=colour, alpha=0.6)
        series.append({"label": name, "points": points, "best": best})
    overall = _best_so_far(data, data.nodes)
    if overall:
        ax.step([b[0] for b in overall], [b[1] for b in overall], where="post", color="black", lw=1.8,
                label="best so far")
        improving = [data.by_id[i] for i in data.improving_ids]
        ax.scatter([n.round for n in improving], [_score_of(n) for n in improving], marker="*", s=140,
                   facecolor="gold", edgecolor="black", zorder=5, label="new best")
    if not any(s["points"] for s in series):
        _empty(ax, "no scored node yet")
    else:
        ax.set_ylabel(f"score ({data.direction})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    band_statuses = _draw_unscored(band, unscored) if band is not None else []
    if data.nodes:
        bottom = band if band is not None else ax
        bottom.set_xlabel("round")
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Score by round")
    return _save(fig, out_dir, "scores", {
        "series": series, "best": overall, "scored_nodes": sum(len(s["points"]) for s in series),
        "unscored": [{"id": n.id, "round": n.round, "status": n.status} for n in unscored],
        "unscored_rows": band_statuses})


def _tree_positions(data: RunData) -> dict[str, float]:
    """Vertical position of each node: leaves in depth-first order, a parent centred on its children.
    Only the first parent shapes the layout (iteratively, so a long chain cannot hit the recursion limit)."""
    children: dict[str, list[str]] = defaultdict(list)
    roots = []
    for node in data.nodes:
        parent = node.parent_ids[0] if node.parent_ids else None
        if parent in data.by_id and parent != node.id:
            children[parent].append(node.id)
        else:
            roots.append(node.id)
    y: dict[str, float] = {}
    next_leaf = 0.0
    stack: list[tuple[str, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        node_id, expanded = stack.pop()
        if node_id in y:
            continue
        kids = [kid for kid in children[node_id] if kid not in y]
        if expanded or not kids:
            placed = [y[kid] for kid in children[node_id] if kid in y]
            if placed:
                y[node_id] = sum(placed) / len(placed)
            else:
                y[node_id], next_leaf = next_leaf, next_leaf + 1
            continue
        stack.append((node_id, True))
        stack.extend((kid, False) for kid in reversed(kids))
    return y


def plot_lineage(data: RunData, out_dir: Path) -> Plot:
    """Parents → children by round, coloured by score; failures marked with a red cross."""
    y = _tree_positions(data)
    leaves = max(y.values(), default=0) + 1
    fig = Figure(figsize=(10, max(3.0, min(0.32 * leaves + 1.5, 40.0))), layout="constrained")
    ax = fig.add_subplot()
    edges = [[parent, node.id] for node in data.nodes for parent in node.parent_ids if parent in data.by_id]
    if edges:
        segments = [[(data.by_id[p].round, y[p]), (data.by_id[c].round, y[c])] for p, c in edges]
        ax.add_collection(LineCollection(segments, colors="#999", linewidths=0.8, zorder=1))
    scores = [score for n in data.nodes if (score := figure_score(n)) is not None]
    cmap = "viridis" if data.direction == "maximize" else "viridis_r"
    norm = Normalize(min(scores), max(scores)) if scores else Normalize(0, 1)
    best = data.best_node
    drawn = []
    mappable = None
    for failed in (False, True):
        group = [n for n in data.nodes if is_failure(n) == failed]
        if not group:
            continue
        scored = [n for n in group if figure_score(n) is not None]
        unscored = [n for n in group if figure_score(n) is None]
        marker = "X" if failed else "o"
        edge = REJECTION_COLOUR if failed else "black"
        if scored:
            mappable = ax.scatter([n.round for n in scored], [y[n.id] for n in scored], c=[_score_of(n) for n in scored],
                                  cmap=cmap, norm=norm, marker=marker, s=70, edgecolors=edge, zorder=3,
                                  label="failed (scored)" if failed else "evaluated")
        if unscored:
            ax.scatter([n.round for n in unscored], [y[n.id] for n in unscored], color="#d5d8dc", marker=marker,
                       s=70, edgecolors=edge, zorder=3,
                       label="failed or rejected (no score)" if failed else "no score")
        drawn += group
    if mappable is not None:
        fig.colorbar(mappable, ax=ax, label="score", fraction=0.04)
    if best is not None:
        ax.scatter([best.round], [y[best.id]], marker="*", s=260, facecolor="gold", edgecolor="black", zorder=4,
                   label="best")
    if len(data.nodes) <= MAX_LABELLED_NODES:
        for node in data.nodes:
            ax.annotate(node.name[:18], (node.round, y[node.id]), xytext=(6, 4), textcoords="offset points",
                        fontsize=7, color="#333")
    if not data.nodes:
        _empty(ax, "no node yet")
    else:
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yticks([])
        ax.set_ylabel(LINEAGE_Y_LABEL)
        ax.margins(x=0.08, y=0.12)
        fig.legend(fontsize=8, loc="outside lower center", ncol=5, frameon=False)
    ax.set_title("Lineage (parent → child)")
    nodes = [{"id": n.id, "name": n.name, "round": n.round, "y": y[n.id], "score": figure_score(n),
              "status": n.status, "failed": is_failure(n), "improving": n.id in data.improving_ids} for n in drawn]
    return _save(fig, out_dir, "lineage", {"nodes": nodes, "edges": edges,
                                           "axes": {"x": ax.get_xlabel(), "y": ax.get_ylabel()}})


def plot_funnel(data: RunData, out_dir: Path) -> Plot:
    """How many candidates reached each stage (the seed is not a candidate)."""
    stages = data.funnel()
    fig = Figure(figsize=(8, 3.6))
    ax = fig.add_subplot()
    labels = [stage for stage, _ in stages]
    counts = [count for _, count in stages]
    colours = [FUNNEL_COLOURS.get(stage, REJECTION_COLOUR) for stage in labels]
    bars = ax.barh(range(len(labels)), counts, color=colours)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.bar_label(bars, padding=3, fontsize=9)
    ax.set_xlabel("candidates")
    ax.set_xlim(0, max(counts + [1]) * 1.15)
    ax.set_title("Candidate funnel")
    return _save(fig, out_dir, "funnel", {"stages": labels, "counts": counts,
                                          "seeds": sum(is_seed(n) for n in data.nodes)})


def plot_costs(data: RunData, out_dir: Path) -> Plot:
    """Tokens, LLM and evaluation time, CPU time and peak memory per round."""
    rows = data.costs_by_round()
    rounds = [row["round"] for row in rows]
    fig = Figure(figsize=(10, 6))
    axes = fig.subplots(2, 2, sharex=True)
    (tokens, seconds), (cpu, memory) = axes
    tokens.bar(rounds, [r["tokens_in"] for r in rows], label="prompt", color="#5dade2")
    tokens.bar(rounds, [r["tokens_out"] for r in rows], bottom=[r["tokens_in"] for r in rows],
               label="completion", color="#1f618d")
    tokens.set_title("LLM tokens", fontsize=10)
    width = 0.4
    seconds.bar([r - width / 2 for r in rounds], [r["llm_seconds"] for r in rows], width, label="LLM", color="#af7ac5")
    seconds.bar([r + width / 2 for r in rounds], [r["eval_seconds"] for r in rows], width, label="evaluation",
                color="#48c9b0")
    seconds.set_title("seconds", fontsize=10)
    cpu.bar(rounds, [r["cpu_s"] for r in rows], color="#f5b041")
    cpu.set_title("evaluation CPU seconds", fontsize=10)
    memory.bar(rounds, [r["peak_memory_mb"] for r in rows], color="#ec7063")
    memory.set_title("peak evaluation memory (MB)", fontsize=10)
    for ax in (tokens, seconds):
        ax.legend(fontsize=8)
    for ax in (cpu, memory):
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not rows:
        for ax in axes.flat:
            _empty(ax, "no node yet")
    fig.suptitle("Costs per round")
    fig.tight_layout()
    return _save(fig, out_dir, "costs", {"rounds": rows})


def plot_roles(data: RunData, out_dir: Path) -> Plot:
    """LLM tokens and seconds per agent role over the whole run."""
    roles = data.usage_by_role()
    names = list(roles)
    fig = Figure(figsize=(10, 3.4))
    tokens, seconds = fig.subplots(1, 2)
    if names:
        tokens.barh(names, [roles[n]["tokens_in"] for n in names], label="prompt", color="#5dade2")
        tokens.barh(names, [roles[n]["tokens_out"] for n in names], left=[roles[n]["tokens_in"] for n in names],
                    label="completion", color="#1f618d")
        tokens.legend(fontsize=8)
        bars = seconds.barh(names, [roles[n]["seconds"] for n in names], color="#af7ac5")
        seconds.bar_label(bars, labels=[counted(int(roles[n]['calls']), 'call') for n in names], padding=3, fontsize=8)
        seconds.set_xlim(0, max(roles[n]["seconds"] for n in names) * 1.3 or 1)
    else:
        _empty(tokens, "no LLM call recorded")
        _empty(seconds, "no LLM call recorded")
    tokens.set_title("tokens per role", fontsize=10)
    seconds.set_title("LLM seconds per role", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "roles", {"roles": roles})


PLOTTERS: tuple[Callable[[RunData, Path], Plot], ...] = (plot_scores, plot_lineage, plot_funnel, plot_costs,
                                                          plot_roles)
