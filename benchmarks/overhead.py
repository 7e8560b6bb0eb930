"""Framework time per round: what a round costs beyond its model calls and its evaluations, at 1k and 100k
stored nodes, broken down by graph step (issue 13).

    python benchmarks/overhead.py [--rounds 10] [--stored 1000 100000] [--out FILE]

For each stored-node count K: a fresh state dir with the embedded Postgres, a circle_packing run registered with
`register_run`, then K synthetic nodes of that run COPY-ed into node memory (novelty and sampling filter by
run_id, so they must belong to it): valid, finite scores below the seed's, the seed program with a distinct
RING_RADIUS (any of them can be chosen as a parent and edited), random 384-d unit embeddings; the HNSW index is
rebuilt after the load. Then `start_run` runs `--rounds` rounds (prepare_run, which evaluates the seed, is left
out of the figures) with the default configuration (UCB1, novelty thresholds, bounds, bubblewrap sandbox) and a
scripted model whose Researcher sets a new RING_RADIUS every reply, so every round is usable, novel and
evaluated at both stages; the Analyzer, the novelty judge and the Debugger are scripted too.

Per round: wall = from its sample_context step to the next round's (the last: to its last checkpoint write);
model = `usage.seconds` of the node's calls in `llm_calls.jsonl`; evaluation = the sandbox's `wall_s` of each
stage in the node record; framework = wall - model - evaluation. Per step: the benchmark wraps the graph's node
functions (in this process only, before the graph is built) and subtracts a step's own model/evaluation time;
"between steps" is wall minus all steps (checkpoint writes, routing, LangGraph), "checkpoint writes" times
PostgresSaver.put / put_writes, and the MiniLM row is the embedding model's share of the steps (framework time,
like every query). The sandbox's launch cost sits inside `wall_s`, so it counts as evaluation here
(benchmarks/throughput.py measures it). With few rounds p95 is close to the maximum. Target: framework time
≤ 100 ms p50 per round at 100k stored nodes. Figures go to benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from langgraph.checkpoint.postgres import PostgresSaver
from pgvector import Vector
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
# the repository root in place of this script's folder: benchmarks/kernels.py would be found as the `kernels` package
# that transformers probes for when sentence-transformers loads MiniLM, and the import fails
sys.path[:] = [str(ROOT), *(entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "benchmarks")]

from evoforge.agents.base import TRANSCRIPT  # noqa: E402  (the repository root goes on sys.path first)
from evoforge.agents.recorder import node_id_for  # noqa: E402
from evoforge.cognition.embeddings import LocalEmbedder  # noqa: E402
from evoforge.config import RunConfig  # noqa: E402
from evoforge.graph import builder  # noqa: E402
from evoforge.graph.runner import register_run, start_run  # noqa: E402
from evoforge.memory.embedded import stop_joined_servers  # noqa: E402
from evoforge.runtime import services  # noqa: E402
from evoforge.tasks.spec import load_task  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "overhead.json"
TARGET_MS = 100.0
STEPS = ("sample_context", "propose_candidate", "check_candidate", "check_novelty", "run_evaluation",
         "debug_candidate", "analyze_result", "record_node")
MODEL_STEP = {"researcher": "propose_candidate", "analyzer": "analyze_result", "novelty_judge": "check_novelty",
              "debugger": "debug_candidate", "static_review": "check_candidate"}
"""The step each role's model is called from: its call time is taken off that step."""
FILLER_LANE = 1
"""The synthetic nodes are another lane's past rounds: their ids never meet the measured lane 0's."""
COPY_COLUMNS = ("id text, run_id text, round int4, lane int4, parent_ids text[], name text, motivation text, "
                "code text, status text, score float8, valid bool, analysis text, code_hash text, embedding vector")
IDEAS = ['Pull the ring inwards so the circles gain room from the walls.', 'Widen the ring: larger spacing between neighbours lets every circle grow.',
         "Tune the single ring's radius; the layout stays symmetric about the centre.", 'A tighter orbit trades wall clearance for contact between neighbouring discs.',
         "Spread the circles on a broader loop to use the square's corners a little better.", 'Search the radius numerically, one step at a time, and keep what scores best.',
         'Shrink the circle of centres so that the outer margin stops limiting the radii.', 'Balance wall distance against chord length: the optimum lies between the extremes.',
         'Move every centre outwards by the same amount; radii follow from the distances.', 'Probe a slightly different orbit to see how sensitive the sum of radii is to it.',
         'Treat the ring radius as the only free parameter and sweep it.', 'Closer to the middle, the walls matter less and the neighbours more.']
SPANS: list[tuple[str, str, float, float]] = []
"""(kind, name, start, end) of every timed step ('step'), checkpoint write ('checkpoint') and MiniLM call
('embed'), in perf_counter seconds."""


def timed(kind: str, name: str, function: Any) -> Any:
    @functools.wraps(function)  # keeps __name__ and the signature LangGraph reads (state, runtime)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPANS.append((kind, name, started, time.perf_counter()))

    return wrapper


def instrument() -> None:
    """Wrap the node callables build_graph() reads from builder's globals, the checkpointer's writes and the
    embedding model (the one cost inside several steps that is neither SQL nor the sandbox)."""
    for name in ("prepare_run", *STEPS):
        setattr(builder, name, timed("step", name, getattr(builder, name)))
    for method in ("put", "put_writes"):
        setattr(PostgresSaver, method, timed("checkpoint", method, getattr(PostgresSaver, method)))
    LocalEmbedder.embed = timed("embed", "embed", LocalEmbedder.embed)  # type: ignore[method-assign]


def covered(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of the intervals: put_writes runs in a thread beside put, so a sum would
    count their overlap twice."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def write_script(path: Path, rounds: int, salt: float) -> None:
    """Distinct replies (radius and wording) for every call a round might make, retries included: with `cycle`
    a repeated reply would be a duplicate of an earlier round. `salt` (in [0, 1)) shifts the radii per
    measurement: the Novelty-Checker keeps the process's last embeddings, and the same candidate in a later
    measurement would skip its embedding."""
    count = max(len(IDEAS), 3 * rounds + 5)
    radii = [0.26 + 0.09 * (j + salt) / count for j in range(count)]  # valid layouts, far from the fillers' 0.2
    researcher = [f"NAME: ring_{j}\nMOTIVATION: {IDEAS[j % len(IDEAS)]} (radius {r:.6f})\n"
                  f"```python\nRING_RADIUS = {r:.6f}\n```\n" for j, r in enumerate(radii)]
    analyzer = [f"RESULT: the ring at radius {r:.6f} was evaluated as reported in the stages.\n"
                f"WORKED: the layout stayed valid.\nFAILED: the middle and the corners stay empty.\n"
                f"NEXT: cover the whole square.\nINSIGHT: A single ring of radius {r:.6f} leaves the middle of "
                f"the square empty, whatever its radius.\n" for r in radii]
    script = {"researcher": {"cycle": True, "replies": researcher},
              "analyzer": {"cycle": True, "replies": analyzer},
              "novelty_judge": {"cycle": True, "replies": ["NOVEL: the ring radius differs from the nearest node's."]},
              "debugger": {"cycle": True, "replies": [f"FIX: restore a valid radius.\n```python\nRING_RADIUS = "
                                                      f"{r:.6f}\n```\n" for r in radii]}}
    path.write_text(yaml.safe_dump(script, sort_keys=False))


def filler_rows(run_id: str, count: int, dim: int, seed_code: str):
    """`count` valid nodes: the seed with RING_RADIUS 0.2 + i * 1e-7, random parents among the earlier ones."""
    rng = np.random.default_rng(0)
    line = next(text for text in seed_code.splitlines() if text.startswith("RING_RADIUS ="))
    for start in range(0, count, 10_000):
        size = min(10_000, count - start)
        vectors = rng.standard_normal((size, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for offset, vector in enumerate(vectors):
            i = start + offset + 1
            radius, score = f"{0.2 + i * 1e-7:.7f}", float(rng.uniform(0.5, 0.95))
            code = seed_code.replace(line, f"RING_RADIUS = {radius}")
            parent = [node_id_for(run_id, int(rng.integers(1, i)), FILLER_LANE)] if i > 1 else []
            # any distinct hash will do for the index; the real fingerprint (an AST walk) would cost ~1 min at 100k
            digest = hashlib.sha256(code.encode()).hexdigest()
            yield (node_id_for(run_id, i, FILLER_LANE), run_id, i, FILLER_LANE, parent, f"ring_{radius}",
                   f"Move the ring of centres to radius {radius}.", code, "evaluated", score, True,
                   f"RESULT: valid, sum of radii {score:.4f}. NEXT: try another radius.", digest, Vector(vector))


def fill(database: Any, run_id: str, count: int, seed_code: str) -> dict[str, float]:
    """COPY the synthetic nodes with the HNSW index dropped, then build it again (the way the environment notes
    advise for a bulk load; a row-by-row insert keeping the index would take minutes at 100k)."""
    columns, types = zip(*(pair.split() for pair in COPY_COLUMNS.split(", ")), strict=True)
    with database.pool.connection() as conn:
        conn.execute("DROP INDEX IF EXISTS nodes_embedding_idx")
        started = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(f"COPY nodes ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(types))
            for row in filler_rows(run_id, count, database.embedding_dim, seed_code):
                copy.write_row(row)
        copied = time.perf_counter() - started
        conn.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        conn.execute("CREATE INDEX nodes_embedding_idx ON nodes USING hnsw (embedding vector_cosine_ops)")
        indexed = time.perf_counter() - started
    with database.pool.connection() as conn:
        autocommit, conn.autocommit = conn.autocommit, True  # VACUUM cannot run in a transaction
        conn.execute("VACUUM ANALYZE nodes, node_stats, run_stats")
        conn.execute("CHECKPOINT")  # the load's WAL is flushed now, not by a checkpoint during the rounds
        conn.autocommit = autocommit
    return {"copy_s": round(copied, 2), "hnsw_build_s": round(indexed, 2)}


def round_figures(config: RunConfig, run_id: str, spans: list[tuple[str, str, float, float]]) -> list[dict[str, Any]]:
    """Per round (ms): wall, model, evaluation, framework, each step's own framework time, checkpoint writes."""
    def ms(seconds: float) -> float:
        return round(1000 * seconds, 1)

    nodes = services.get_services(config).nodes
    starts = [s[2] for s in spans if s[:2] == ("step", "sample_context")]
    rounds = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else max(s[3] for s in spans if s[2] >= start)
        inside = [s for s in spans if start <= s[2] < end]
        steps: dict[str, float] = {}
        calls: dict[str, int] = {}
        embedded: dict[str, float] = {}
        for _, name, began, ended in (s for s in inside if s[0] == "step"):
            steps[name] = steps.get(name, 0.0) + ended - began
            calls[name] = calls.get(name, 0) + 1
            embedded[name] = embedded.get(name, 0.0) + sum(e[3] - e[2] for e in inside
                                                           if e[0] == "embed" and began <= e[2] < ended)
        node_id = node_id_for(run_id, index + 1, 0)
        node = nodes.get_node(node_id)
        transcript = config.node_dir(run_id, node_id) / TRANSCRIPT
        model: dict[str, float] = {}
        for call in map(json.loads, transcript.read_text().splitlines() if transcript.exists() else []):
            step = MODEL_STEP[call["role"]]
            model[step] = model.get(step, 0.0) + float((call.get("usage") or {}).get("seconds", 0.0))
        evaluation = sum(float(stage.get("wall_s") or 0.0) for stage in (node.stage_results if node else []))
        own = {name: seconds - model.get(name, 0.0) - (evaluation if name == "run_evaluation" else 0.0)
               for name, seconds in steps.items()}
        wall = end - start
        rounds.append({
            "round": index + 1, "status": node.status if node else "missing", "score": node.score if node else None,
            "parent": node.parent_ids[0] if node and node.parent_ids else None,
            "novelty_similarity": (node.novelty or {}).get("similarity") if node else None,
            "wall_ms": ms(wall), "model_ms": ms(sum(model.values())), "evaluation_ms": ms(evaluation),
            "framework_ms": ms(wall - sum(model.values()) - evaluation),
            "between_steps_ms": ms(wall - sum(steps.values())),
            "checkpoint_writes_ms": ms(covered([(s[2], s[3]) for s in inside if s[0] == "checkpoint"])),
            "checkpoint_puts": sum(1 for s in inside if s[:2] == ("checkpoint", "put")),
            "embedding_ms": ms(sum(embedded.values())), "embedding_calls": sum(1 for s in inside if s[0] == "embed"),
            "steps_ms": {name: ms(seconds) for name, seconds in own.items()}, "step_calls": calls,
            "embedding_ms_by_step": {name: ms(seconds) for name, seconds in embedded.items() if seconds},
        })
    return rounds


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1)}


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("framework_ms", "wall_ms", "model_ms", "evaluation_ms", "between_steps_ms", "checkpoint_writes_ms",
            "embedding_ms")
    summary: dict[str, Any] = {key.removesuffix("_ms"): percentiles([r[key] for r in rounds]) for key in keys}
    # a step a round skipped counts as 0 ms in that round, so the step figures add up per round
    summary["steps"] = {name: {**percentiles([r["steps_ms"].get(name, 0.0) for r in rounds]),
                               "calls_per_round": round(statistics.mean(r["step_calls"].get(name, 0) for r in rounds), 2)}
                        for name in STEPS}
    return summary


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores so far, from /proc/stat: the machine's load while a run is measured."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # idle and iowait are not busy


def measure(stored: int, rounds: int, salt: float) -> dict[str, Any]:
    state_dir = Path(tempfile.mkdtemp(prefix="evoforge-overhead-"))
    state_dir.chmod(0o755)  # the embedded server runs as its own user under root and must reach its cluster
    try:
        script = state_dir / "script.yaml"
        write_script(script, rounds, salt)
        config = RunConfig(task="circle_packing", rounds=rounds, state_dir=state_dir,
                           llm={"provider": "scripted", "script": str(script)})
        run_id = register_run(config, f"overhead-{stored}")
        database = services.get_services(config).database
        loaded = fill(database, run_id, stored, load_task(config.task).seed_code())
        SPANS.clear()
        load_before = [round(x, 2) for x in os.getloadavg()]
        started, busy_before, own_before = time.perf_counter(), cpu_busy(), os.times()
        outcome = start_run(config, run_id)
        elapsed, busy_after, own_after = time.perf_counter() - started, cpu_busy(), os.times()
        busy = (busy_after[0] - busy_before[0]) / max(busy_after[1] - busy_before[1], 1.0)
        own_cpu = sum(after - before for after, before in zip(own_after[:4], own_before[:4], strict=True))
        per_round = round_figures(config, run_id, list(SPANS))
        prepare = sum(s[3] - s[2] for s in SPANS if s[:2] == ("step", "prepare_run"))
        return {"stored_nodes": stored, "bulk_load": loaded, "stop_reason": outcome.state.get("stop_reason"),
                "run_s": round(elapsed, 2), "prepare_run_s": round(prepare, 2),
                "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
                # all cores' busy share over the run, and this process's (with its sandboxes') CPU seconds beside it:
                # busy * cores * run_s well above own_cpu_s: other work (or the Postgres server) shared the machine
                "cpu_busy_during_run": round(busy, 3), "own_cpu_s": round(own_cpu, 2),
                **summarise(per_round), "rounds": per_round}
    finally:
        services.clear_services()  # closes the run's database before its server stops
        stop_joined_servers()
        shutil.rmtree(state_dir, ignore_errors=True)


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout.strip()  # reads the repository, never writes it
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "commit": commit or "unknown"}


def print_table(report: dict[str, Any]) -> None:
    table = Table(title="Framework time per round (ms): wall - model - evaluation")
    table.add_column("")
    for stored in report["stored"]:
        table.add_column(f"{int(stored):,} nodes p50", justify="right")
        table.add_column("p95", justify="right")
    rows = [("framework", "framework"), ("wall", "wall"), ("model", "model"), ("evaluation", "evaluation"),
            *((f"  {name}", name) for name in STEPS),
            ("  between steps", "between_steps"), ("    of which checkpoint writes", "checkpoint_writes"),
            ("  MiniLM embeddings, inside the steps", "embedding")]
    for label, key in rows:
        cells = []
        for figures in report["stored"].values():
            values = figures["steps"][key] if key in STEPS else figures[key]
            cells += [f"{values['p50_ms']:.1f}", f"{values['p95_ms']:.1f}"]
        table.add_row(label, *cells)
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--stored", type=int, nargs="+", default=[1000, 100_000], help="synthetic nodes per run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.rounds < 1 or min(args.stored) < 1:
        parser.error("--rounds and --stored must be at least 1")
    instrument()
    host = machine()
    report: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": host.pop("commit"),
                              "machine": host, "task": "circle_packing", "rounds": args.rounds,
                              "target": f"framework p50 <= {TARGET_MS:.0f} ms per round at 100k stored nodes",
                              "stored": {}}
    for index, stored in enumerate(args.stored):
        figures = measure(stored, args.rounds, index / len(args.stored))
        report["stored"][str(stored)] = figures
        print(f"{stored:>7,} stored: framework p50 {figures['framework']['p50_ms']} ms, "
              f"p95 {figures['framework']['p95_ms']} ms ({figures['stop_reason']})", flush=True)
    if "100000" in report["stored"]:
        report["target_met"] = report["stored"]["100000"]["framework"]["p50_ms"] <= TARGET_MS
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
