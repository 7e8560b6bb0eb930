"""Evaluation throughput of each sandbox backend with 1 and 2 concurrent workers, and its launch overhead.

    python benchmarks/throughput.py [--n 8] [--work-s 0.5] [--repeats 3] [--backends local docker ray] [--docker-url URL]

Each evaluation is a short CPU-bound Python program (a fixed loop calibrated to ~`--work-s` seconds on an idle
core) run through `Sandbox.run` in its own work dir; 1 or 2 threads submit them (the lead's `--workers` lanes do
the same). Each repeat runs a 1-worker batch and then a 2-worker batch back to back, so a drift in the speed the
machine gives us (a shared host) hits both sides of that repeat's ratio; the speedup reported is the median of the
per-repeat ratios, and every repeat's figures are kept. Launch overhead = median duration of an empty evaluation (`python -c pass`) through the sandbox minus
the same command run as a bare subprocess: what the backend itself costs per evaluation. Without --docker-url a
private dockerd is started (scripts/start-dockerd.sh) and stopped. Figures go to benchmarks/results/throughput.json.
Targets: overhead ≤ 0.3 s local (bubblewrap), ≤ 1 s docker; 2 workers ≥ 1.8x one worker on 2 cores — on a
machine shared with other work the 2-worker figure is bounded by the CPU that is actually free (the load average
is recorded beside it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evoforge.config import SandboxConfig  # noqa: E402  (the repository root goes on sys.path first)
from evoforge.sandbox import Job, Limits, Sandbox, get_sandbox  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "throughput.json"
WORK = "import sys\nn = int(sys.argv[1])\ntotal = 0\nfor i in range(n):\n    total += i * i\nprint(total % 7)"


def calibrate(work_s: float) -> int:
    """Loop iterations that take about `work_s` CPU seconds (CPU time, so a busy machine does not skew it)."""
    probe = 2_000_000

    def child_cpu_s(argv: list[str]) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(argv, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime

    loop_s = child_cpu_s([sys.executable, "-c", WORK, str(probe)]) - child_cpu_s([sys.executable, "-c", "pass"])
    return max(1, int(probe * work_s / max(loop_s, 1e-3)))


def _bare_seconds(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def evaluate(sandbox: Sandbox, argv: list[str], root: Path) -> float:
    workdir = Path(tempfile.mkdtemp(dir=root))
    start = time.perf_counter()
    result = sandbox.run(Job(argv, workdir, Limits(timeout_s=120, memory_mb=512)))
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"{sandbox.name}: an evaluation failed: {result.describe_failure()} {result.stderr[-500:]}")
    shutil.rmtree(workdir, ignore_errors=True)
    return elapsed


def batch(sandbox: Sandbox, work: list[str], workers: int, n: int, root: Path) -> dict[str, float]:
    """`n` evaluations submitted by `workers` threads."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        durations = list(pool.map(lambda _: evaluate(sandbox, work, root), range(n)))
    elapsed = time.perf_counter() - start
    return {"evaluations_per_s": round(n / elapsed, 3), "elapsed_s": round(elapsed, 2),
            "median_evaluation_s": round(statistics.median(durations), 3), "load_average_before": round(load_before, 2)}


def measure(sandbox: Sandbox, n: int, repeats: int, iterations: int, bare_s: float, root: Path) -> dict[str, Any]:
    empty = [evaluate(sandbox, [sys.executable, "-c", "pass"], root) for _ in range(5)]
    work = [sys.executable, "-c", WORK, str(iterations)]
    evaluate(sandbox, work, root)  # warm caches (page cache, Ray workers) before timing
    runs = [{f"workers_{k}": batch(sandbox, work, k, n, root) for k in (1, 2)} for _ in range(repeats)]
    for run in runs:
        run["speedup_2_vs_1"] = round(run["workers_2"]["evaluations_per_s"] / run["workers_1"]["evaluations_per_s"], 2)

    def median_of(workers: str, key: str) -> float:
        return round(statistics.median(run[workers][key] for run in runs), 3)

    return {"launch_overhead_s": round(statistics.median(empty) - bare_s, 3),
            "empty_evaluation_s": round(statistics.median(empty), 3),
            **{w: {key: median_of(w, key) for key in runs[0][w]} for w in ("workers_1", "workers_2")},
            "speedup_2_vs_1": round(statistics.median(run["speedup_2_vs_1"] for run in runs), 2),
            "repeats": runs}


@contextlib.contextmanager
def docker_engine(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    engine_dir = tempfile.mkdtemp(prefix="efd-bench-", dir="/tmp")
    script = ROOT / "scripts" / "start-dockerd.sh"
    started = subprocess.run(["bash", str(script), "start", engine_dir], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        sys.exit(f"could not start dockerd: {started.stderr.strip()}")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(script), "stop", engine_dir], capture_output=True, check=False)
        shutil.rmtree(engine_dir, ignore_errors=True)


def build(backend: str, docker_url: str) -> Sandbox:
    if backend == "local":
        return get_sandbox("local", "bubblewrap")
    if backend == "docker":
        return get_sandbox("docker", settings=SandboxConfig(docker={"base_url": docker_url}))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return get_sandbox("ray", "bubblewrap", SandboxConfig(backend="ray", ray={"num_cpus": 2}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="evaluations per worker setting")
    parser.add_argument("--work-s", type=float, default=0.5, help="CPU seconds of one evaluation (idle core)")
    parser.add_argument("--repeats", type=int, default=5, help="1-worker/2-worker batch pairs per backend")
    parser.add_argument("--backends", nargs="+", default=["local", "docker", "ray"],
                        choices=["local", "docker", "ray"])
    parser.add_argument("--docker-url", help="an engine to use instead of starting a private dockerd")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.n < 2:
        parser.error(f"--n must be at least 2, got {args.n}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    bare_s = _bare_seconds()
    iterations = calibrate(args.work_s)
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                          "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
                              "n": args.n, "repeats": args.repeats, "work_s": args.work_s, "loop_iterations": iterations,
                              "bare_python_start_s": round(bare_s, 3), "backends": {}}
    root = Path(tempfile.mkdtemp(prefix="evoforge-bench-"))
    try:
        with docker_engine(args.docker_url if "docker" in args.backends else "unused") as url:
            for backend in args.backends:
                sandbox = build(backend, url)
                figures = measure(sandbox, args.n, args.repeats, iterations, bare_s, root)
                report["backends"][backend] = figures
                print(f"{backend:7s} overhead {figures['launch_overhead_s']:.3f} s | 1 worker "
                      f"{figures['workers_1']['evaluations_per_s']:.2f} eval/s | 2 workers "
                      f"{figures['workers_2']['evaluations_per_s']:.2f} eval/s | speedup {figures['speedup_2_vs_1']}x "
                      f"(per repeat {[run['speedup_2_vs_1'] for run in figures['repeats']]}) "
                      f"(load {figures['workers_2']['load_average_before']})", flush=True)
                if hasattr(sandbox, "close"):
                    sandbox.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
