"""Side-by-side search benchmark: EvoForge, OpenEvolve and ShinkaEvolve on one task, one model server, one budget.

    python benchmarks/search.py [--task circle_packing] [--budget-min 20] [--systems evoforge openevolve shinka]
                                [--ablate cognition] [--ablate analyzer] [--model qwen2.5-coder-1.5b] [--merge]

One embedded llama.cpp server (the same build, model, context and threads) serves the systems one after another;
each talks to it through a counting proxy (benchmarks/peers/proxy.py) under the same wall-clock budget, after
which its whole process tree is killed. The server is restarted between systems, so a call a killed system left
running, or a prompt cache it warmed, never reaches the next one. Every program is scored by the task's own evaluator through EvoForge's sandbox and stage
cascade (the peers through `evoforge evaluate`), so validity is judged the same strict way for all. Recorded per
system: best-so-far against wall time and against tokens, model calls, prompt/completion tokens, candidates
generated / evaluated / valid, duplicate programs evaluated (the same fingerprint as an earlier evaluated one,
evoforge/memory/fingerprint.py), replies that yielded no program, and round latency. The peers live in their own
venv (their pins would downgrade EvoForge's openai, httpx and rich): `.venv/bin/python -m benchmarks.peers`
creates it; a missing peer is named and skipped. `--ablate` adds EvoForge runs with cognition retrieval off or
the Analyzer's model call off (the paper's ablation), each under `--ablation-budget-min` (default: the same
budget); compare them with the full run's best at that minute, which its curve gives. `--systems` with no name
and `--merge` runs the ablations alone beside the results already in `--out`.

Results: benchmarks/results/search.json and search.png, and a table on stdout. Run it on quiet cores: a second
model server, a test run or a build beside it slows every model call 3-10x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.peers import PeerMissing, openevolve_peer, shinka_peer  # noqa: E402
from benchmarks.peers.budget import run_under_budget  # noqa: E402
from benchmarks.peers.proxy import CountingProxy  # noqa: E402
from evoforge.config import load_config  # noqa: E402  (the repository root goes on sys.path first)
from evoforge.llm.cpu_build import STAMP_NAME  # noqa: E402
from evoforge.llm.local import LocalModelServer, ensure_model_file  # noqa: E402
from evoforge.llm.models import models_dir  # noqa: E402
from evoforge.runtime.services import open_store  # noqa: E402
from evoforge.tasks.spec import load_task  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PEERS = {"openevolve": openevolve_peer, "shinka": shinka_peer}
DEFAULT_LANES = 1
"""One sequence at a time: on 2 cores, 2 or 3 Researcher-sized calls batched on one server took as long as the
same calls one after another (benchmarks/results/server.json: reading prompts is compute-bound), so more lanes
only lengthen each lane's rounds there. A machine with more cores, or a GPU, gains from `--lanes`."""
ABLATIONS = {
    "cognition": {"cognition": {"top_k": 0}},
    "analyzer": {"llm_analysis": False},
}


def run_evoforge(task_dir: Path, base_url: str, model: str, budget_s: float, work: Path, label: str,
                 overrides: dict[str, Any], lanes: int) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    """One EvoForge run on the embedded defaults, its model at `base_url`, killed at the budget.

    Returns the start time, the recorded nodes as evaluations ({t, score, valid, fingerprint, ...}) and the
    funnel its nodes record: Researcher replies generated, those that yielded no program, and the evaluated programs
    by origin (edit mode) with the best score of each.
    """
    state_dir = work / f"evoforge-{label}"
    config_data: dict[str, Any] = {
        "state_dir": str(state_dir),
        "llm": {"provider": "local", "base_url": base_url, "model": model},
        "workers": lanes,
        **overrides,
    }
    config_path = work / f"evoforge-{label}.yaml"
    config_path.write_text(yaml.safe_dump(config_data))
    run_id = f"bench-{label}"
    command = [str(ROOT / ".venv" / "bin" / "evoforge"), "run", str(task_dir), "--rounds", "100000",
               "--config", str(config_path), "--run-id", run_id]
    started = time.time()
    run_under_budget(command, budget_s, work / f"evoforge-{label}.log", cwd=work)
    config = load_config(config_path)
    database, store = open_store(config)
    try:
        nodes = store.list_nodes(run_id)
    finally:
        database.close()
    evaluations = [{
        "t": node.created_at.timestamp() if node.created_at else started,
        "evaluated": bool(node.stage_results),
        "score": node.score if node.valid else 0.0,
        "valid": node.valid,
        "fingerprint": node.code_hash if node.stage_results else None,
        "lane": node.lane,
    } for node in nodes]
    funnel = {
        "generated": sum(int(node.resources.get("usage", {}).get("researcher", {}).get("calls", 0)) for node in nodes),
        # every unusable reply of a round, the last included
        "unparsed": sum(int(node.resources.get("retries", {}).get("parse", 0)) for node in nodes),
    }
    # where each evaluated program came from: the model's edit (diff, rewrite, definitions) or a fallback the loop
    # ran when the reply left its parent unchanged (prior_code, tuned_constant); the best score of each
    pick = max if load_task(task_dir).score.direction == "maximize" else min
    origins: dict[str, dict[str, Any]] = {}
    for node in nodes:
        if node.stage_results and node.round > 0:
            origin = origins.setdefault(str(node.resources.get("edit_mode") or "unrecorded"),
                                        {"evaluated": 0, "valid": 0, "best": None})
            origin["evaluated"] += 1
            if node.valid and node.score is not None:
                origin["valid"] += 1
                origin["best"] = node.score if origin["best"] is None else pick(origin["best"], node.score)
    return started, evaluations, {**funnel, "origins": origins}


def run_peer(name: str, task_dir: Path, base_url: str, model: str, budget_s: float, work: Path,
             seed: int, lanes: int) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    eval_log = work / f"{name}-evaluations.jsonl"
    started = time.time()
    summary = PEERS[name].run(task_dir, base_url, model, budget_s, work / name, eval_log, seed=seed, parallel=lanes)
    lines = eval_log.read_text().splitlines() if eval_log.exists() else []
    evaluations = []
    for line in lines:
        record = json.loads(line)
        evaluations.append({"t": record["t"], "evaluated": True, "score": record["score"] if record["valid"] else 0.0,
                            "valid": record["valid"], "fingerprint": record.get("fingerprint")})
    return started, evaluations, summary


def summarise(label: str, started: float, budget_s: float, evaluations: list[dict[str, Any]],
              calls: list[dict[str, Any]], direction: str, funnel: dict[str, Any] | None, lanes: int = 1
              ) -> dict[str, Any]:
    """The figures of one system: curves of best-so-far against time and tokens, and the candidate funnel.

    `funnel` is what a system records itself (EvoForge); None takes every model call as a generated candidate
    and every call without an evaluated program as an unusable reply (the peers)."""
    better = (lambda a, b: a > b) if direction == "maximize" else (lambda a, b: a < b)
    calls = sorted(calls, key=lambda c: c["t"])
    tokens_at = []
    total = 0
    for call in calls:
        total += int(call.get("prompt_tokens") or 0) + int(call.get("completion_tokens") or 0)
        tokens_at.append((call["t"] + float(call.get("seconds") or 0.0), total))

    def tokens_by(t: float) -> int:
        spent = [tokens for end, tokens in tokens_at if end <= t]
        return spent[-1] if spent else 0

    best: float | None = None
    curve_time, curve_tokens = [], []
    seen: set[str] = set()
    duplicates = 0
    for record in sorted(evaluations, key=lambda r: r["t"]):
        if not record["evaluated"]:
            continue
        fingerprint = record.get("fingerprint")
        if fingerprint:
            duplicates += fingerprint in seen
            seen.add(fingerprint)
        if record["valid"] and (best is None or better(record["score"], best)):
            best = record["score"]
        if best is not None:
            curve_time.append([round((record["t"] - started) / 60, 3), best])
            curve_tokens.append([tokens_by(record["t"]), best])
    evaluated = [r for r in evaluations if r["evaluated"]]
    funnel = funnel or {"generated": len(calls), "unparsed": max(0, len(calls) - len(evaluated))}
    times = sorted(r["t"] for r in evaluations)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # with several lanes a round (one lane's proposal to its record) takes longer than the interval between any
    # two records; EvoForge records each node's lane, a peer's records are one stream, whose gaps are its rounds
    # only when it ran one proposal at a time
    if evaluations and all("lane" in r for r in evaluations):
        streams = [sorted(r["t"] for r in evaluations if r["lane"] == lane) for lane in {r["lane"] for r in evaluations}]
    else:
        streams = [times] if lanes == 1 else []
    lane_gaps = [b - a for own in streams for a, b in zip(own, own[1:], strict=False)]
    return {
        "system": label,
        "budget_min": budget_s / 60,
        "best": best,
        "model_calls": len(calls),
        "prompt_tokens": sum(int(c.get("prompt_tokens") or 0) for c in calls),
        "completion_tokens": sum(int(c.get("completion_tokens") or 0) for c in calls),
        "model_seconds": round(sum(float(c.get("seconds") or 0.0) for c in calls), 1),
        "generated": funnel["generated"],
        "evaluated": len(evaluated),
        "valid": sum(1 for r in evaluated if r["valid"]),
        "duplicates_evaluated": duplicates,
        "unparsed_replies": funnel["unparsed"],
        "node_interval_p50_s": round(statistics.median(gaps), 1) if gaps else None,
        "lanes": lanes,
        "round_p50_s": round(statistics.median(lane_gaps), 1) if lane_gaps else None,
        **({"origins": funnel["origins"]} if "origins" in funnel else {}),
        "curve_time_min": curve_time,
        "curve_tokens": curve_tokens,
    }


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_time, by_tokens) = plt.subplots(1, 2, figsize=(12, 4.5))
    for result in results:
        for axis, key in ((by_time, "curve_time_min"), (by_tokens, "curve_tokens")):
            points = result[key]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.step(xs, ys, where="post", label=f"{result['system']} (best {result['best']:.4f})")
    by_time.set(xlabel="wall time (minutes)", ylabel="best score so far", title=title)
    by_tokens.set(xlabel="model tokens (prompt + completion)", ylabel="best score so far", title="against tokens")
    for axis in (by_time, by_tokens):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="search benchmark")
    columns = ["system", "best", "model_calls", "prompt_tokens", "completion_tokens", "generated", "evaluated",
               "valid", "duplicates_evaluated", "unparsed_replies", "lanes", "round_p50_s", "node_interval_p50_s",
               "date"]
    for column in columns:
        table.add_column(column.replace("_", " "), justify="left" if column == "system" else "right")
    for result in results:
        # results merged from a run before a column existed leave it empty
        table.add_row(*(f"{result[c]:.4f}" if c == "best" and result[c] is not None
                        else str(result.get(c, ""))[:16].replace("T", " ") if c == "date"  # a merge joins dates
                        else str(result.get(c, "")) for c in columns))
    # a log file (a benchmark left running under nohup) gets the whole table, not 13 columns squeezed into 80
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    stamp = ROOT / ".venv" / STAMP_NAME
    return {"cpu": cpu, "cores": os.cpu_count(), "llama_build": stamp.read_text().strip() if stamp.exists() else None,
            "load_avg_at_start": os.getloadavg(), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="circle_packing", help="a built-in task name or a task directory")
    parser.add_argument("--budget-min", type=float, default=20.0, help="wall-clock budget per system, minutes")
    parser.add_argument("--systems", nargs="*", default=["evoforge", "openevolve", "shinka"],
                        choices=["evoforge", *PEERS])
    parser.add_argument("--ablate", action="append", default=[], choices=sorted(ABLATIONS))
    parser.add_argument("--ablation-budget-min", type=float, default=None,
                        help="budget of each ablation run (default: --budget-min)")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lanes", type=int, default=DEFAULT_LANES,
                        help="model server slots, and each system's concurrent proposals (EvoForge's lanes, "
                             "OpenEvolve's parallel evaluations, Shinka's proposal and evaluation jobs)")
    parser.add_argument("--work", type=Path, default=None, help="where runs keep their files (default: a new dir)")
    parser.add_argument("--out", type=Path, default=RESULTS / "search.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep the results in --out of the systems this run does not measure (each result "
                             "carries its own date), e.g. to re-measure EvoForge beside the peers' last run")
    args = parser.parse_args()

    task = load_task(args.task)
    work = args.work or Path(f"/tmp/evoforge-search-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    work.mkdir(parents=True, exist_ok=True)
    budget_s = args.budget_min * 60
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    host = machine()
    model_file = ensure_model_file(args.model, models_dir())
    ablation_budget_s = (args.ablation_budget_min or args.budget_min) * 60
    plan = [(name, None, budget_s) for name in args.systems]
    plan += [(f"evoforge-no-{name}", name, ablation_budget_s) for name in args.ablate]
    results, missing = [], {}
    kept = []
    if args.merge and args.out.exists():
        labels = {label for label, _, _ in plan}
        earlier = json.loads(args.out.read_text())
        if (earlier["task"], earlier["model"]) != (task.name, args.model):
            parser.error(f"--merge: {args.out} holds {earlier['task']} with {earlier['model']}, not {task.name} "
                         f"with {args.model}")
        # each kept result keeps the date and the machine it was measured on (a merge may join two machines' rows)
        kept = [dict(result, date=result.get("date", earlier["date"]), work_dir=result.get("work_dir", earlier["work_dir"]),
                     machine=result.get("machine", earlier["machine"]))
                for result in earlier["results"] if result["system"] not in labels]
    for label, ablation, budget in plan:
        print(f"[search] {label}: {budget / 60:g} min on {task.name}", flush=True)
        system_started_at = datetime.now(UTC).isoformat(timespec="seconds")
        server = LocalModelServer(model_file, n_ctx=8192, log_dir=work / "logs", alias=args.model, n_threads=2,
                                  slots=args.lanes)
        server.start()
        proxy = CountingProxy(server.url, work / f"{label}-llm_calls.jsonl")
        base_url = proxy.start()
        proxy.set_label(label)
        try:
            funnel = None
            if label in PEERS:
                try:
                    started, evaluations, _ = run_peer(label, task.root, base_url, args.model, budget, work,
                                                       args.seed, args.lanes)
                except PeerMissing as exc:
                    missing[label] = str(exc)
                    print(f"[search] {label} skipped: {exc}", flush=True)
                    continue
            else:
                overrides = ABLATIONS[ablation] if ablation else {}
                started, evaluations, funnel = run_evoforge(task.root, base_url, args.model, budget, work, label,
                                                            overrides, args.lanes)
            result = summarise(label, started, budget, evaluations, proxy.records(), task.score.direction, funnel,
                               args.lanes)
            # a server that died mid-run fails every later call at once: say so beside the figures it spoiled
            result["server_died"] = not server.running
            if result["server_died"]:
                print(f"[search] {label}: the model server died during the run:\n{server.log_tail()}", flush=True)
        finally:
            proxy.stop()
            server.stop()
        results.append(dict(result, date=system_started_at, work_dir=str(work), machine=host))
        print(f"[search] {label}: best {result['best']}, {result['evaluated']} evaluated", flush=True)
        # written after every system, so a benchmark stopped part way keeps what it measured
        payload = {"task": task.name, "model": args.model, "date": started_at, "machine": host,
                   "budget_min": args.budget_min, "missing_peers": missing, "work_dir": str(work),
                   "results": [*kept, *results]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1))
        plot([*kept, *results], args.out.with_suffix(".png"), f"{task.name}, {args.model}, {host['cores']} cores")
    print_table([*kept, *results])
    if missing:
        print("missing peers: " + "; ".join(f"{k}: {v}" for k, v in missing.items()))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
