"""Node memory and cognition at scale: insert throughput, sampling latency per policy and retrieval latency
(p50 / p95) at 1k, 10k and 100k nodes / cognition items, on the embedded Postgres (or --database-url).

    python benchmarks/memory.py [--sizes 1000 10000 100000] [--repeats 40] [--skip-embedder] [--out FILE]

Fixtures are synthetic: clustered random 384-d unit vectors (the shape of MiniLM embeddings), a random
parent tree, 10% failed nodes, short programs. They are bulk-loaded the way the environment notes advise
(COPY, then build the HNSW index); the row-by-row path a run uses (`NodeStore.record_node`, index kept
up to date) is timed too. Retrieval is timed with ready query vectors (the database's share); MiniLM's time
to embed the queries is reported on its own line. Target: sampling + retrieval under 20 ms p50 at 100k.
Not part of the test suite. Figures go to benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector
from psycopg import sql
from psycopg.types.json import Jsonb

from evoforge.cognition.embeddings import LocalEmbedder
from evoforge.cognition.store import CognitionStore
from evoforge.config import SamplingConfig
from evoforge.memory.database import Database
from evoforge.memory.embedded import EmbeddedPostgres
from evoforge.memory.nodes import NodeRecord, NodeStore, code_hash
from evoforge.memory.sampling import select_context

RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"
RUN, TASK, DIM = "bench", "bench_task", 384
POLICIES = ("greedy", "random", "ucb1", "top_k", "map_elites")
TARGET_MS = 20.0
COPY_COLUMNS = {
    "nodes": "id text, run_id text, round int4, lane int4, parent_ids text[], name text, motivation text, "
    "code text, status text, score float8, valid bool, metrics jsonb, analysis text, code_hash text, embedding vector",
    "cognition": "id text, task text, kind text, title text, content text, source text, content_hash text, "
    "embedding vector",
}
"""Columns (and their types, for binary COPY) that the synthetic rows fill."""


class FixedEmbedder:
    """Hands out ready query vectors, so retrieval timing measures the database, not the model."""

    name, dim = "all-MiniLM-L6-v2", DIM

    def __init__(self, rng: np.random.Generator, centroids: np.ndarray) -> None:
        self.rng, self.centroids = rng, centroids

    def embed(self, texts: list[str]) -> list[list[float]]:
        return unit_vectors(self.rng, self.centroids, len(texts)).tolist()


def unit_vectors(rng: np.random.Generator, centroids: np.ndarray, n: int) -> np.ndarray:
    """n vectors scattered around random centroids, normalised (float32, shape (n, DIM))."""
    picks = centroids[rng.integers(0, len(centroids), n)]
    vectors = picks + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    # min: the cost with the least interference from other work on a shared machine
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "min_ms": round(ordered[0], 3),
    }


def timed(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    call()  # warm caches and plans
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


def rebuild_index(database: Database, table: str, index: str, load: Callable[[Any], int]) -> dict[str, float]:
    """Drop the HNSW index, COPY rows in with `load(copy)`, build the index again; seconds and rows/s."""
    with database.pool.connection() as conn:
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index)))
        started = time.perf_counter()
        columns, types = zip(*(pair.split() for pair in COPY_COLUMNS[table].split(", ")), strict=True)
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(list(types))
            rows = load(copy)
        copied = time.perf_counter() - started
        conn.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops)").format(
                sql.Identifier(index), sql.Identifier(table)
            )
        )
        built = time.perf_counter() - started
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        conn.execute("VACUUM ANALYZE node_stats")
    return {
        "rows": rows,
        "copy_s": round(copied, 2),
        "copy_rows_per_s": round(rows / copied),
        "hnsw_build_s": round(built, 2),
    }


def node_rows(rng: np.random.Generator, centroids: np.ndarray, start: int, stop: int):
    vectors = unit_vectors(rng, centroids, stop - start)
    for i, vector in zip(range(start, stop), vectors, strict=True):
        failed = i > 0 and rng.random() < 0.1
        score = None if failed else float(rng.normal(1.5, 0.4))
        code = f"def construct():\n    x = {i % 97}\n" + "    if x > 3:\n        x -= 1\n" * int(i % 5)
        parent = [f"{RUN}-r{int(rng.integers(0, i)):06d}-l0"] if i else []
        yield (
            f"{RUN}-r{i:06d}-l0",
            RUN,
            i,
            0,
            parent,
            f"node_{i}",
            f"idea {i % 1000}",
            code,
            "runtime_failed" if failed else "evaluated",
            score,
            not failed,
            Jsonb({"x": float(rng.random())}),
            f"analysis {i % 500}",
            code_hash(code),
            Vector(vector),
        )


def cognition_rows(rng: np.random.Generator, centroids: np.ndarray, start: int, stop: int):
    vectors = unit_vectors(rng, centroids, stop - start)
    for i, vector in zip(range(start, stop), vectors, strict=True):
        content = f"passage {i}: lesson number {i} about packing circles"
        yield (
            f"cog-bench-{i:07d}",
            TASK,
            "prior" if i % 3 else "insight",
            f"item {i}",
            content,
            "bench.md",
            f"{i:064x}",
            Vector(vector),
        )


def write_rows(rows) -> Callable[[Any], int]:
    def load(copy: Any) -> int:
        count = 0
        for row in rows:
            copy.write_row(row)
            count += 1
        return count

    return load


def sample_latencies(store: NodeStore, next_round: list[int], repeats: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}

    def selector(policy: str) -> Callable[[], Any]:
        settings = SamplingConfig(policy=policy, inspirations=2)  # type: ignore[arg-type]

        def call() -> Any:
            next_round[0] += 1
            return select_context(store, RUN, lane=0, round=next_round[0], sampling=settings)

        return call

    for policy in POLICIES:
        if policy == "map_elites":
            with store.database.pool.connection() as conn:
                conn.execute("DELETE FROM elites WHERE run_id = %s", (RUN,))
                conn.execute("DELETE FROM policy_state WHERE run_id = %s", (RUN,))
            started = time.perf_counter()
            selector(policy)()  # the first selection takes the whole run into the archive
            results["map_elites archive build (s)"] = {"seconds": round(time.perf_counter() - started, 2)}
        results[policy] = timed(selector(policy), repeats)
    with store.database.pool.connection() as conn:  # every eligible node visited: UCB1's full computation
        conn.execute(
            "INSERT INTO selections (run_id, lane, round, parent_id, policy) "
            "SELECT run_id, 1, %s + row_number() OVER (), node_id, 'bench' FROM node_stats "
            "WHERE run_id = %s AND eligible AND visits = 0",
            (next_round[0], RUN),
        )
        next_round[0] += store.count_nodes(RUN)
        conn.execute("VACUUM ANALYZE node_stats")
    results["ucb1 (all visited)"] = timed(selector("ucb1"), repeats)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--database-url", help="A Postgres with pgvector (default: a private embedded one).")
    parser.add_argument("--skip-embedder", action="store_true", help="Do not time MiniLM on the queries.")
    parser.add_argument(
        "--shared-buffers", help="Restart the embedded server with this shared_buffers (e.g. 768MB)."
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    state_dir = Path(tempfile.mkdtemp(prefix="evoforge-bench-"))
    state_dir.chmod(0o755)
    server = None if args.database_url else EmbeddedPostgres.start(state_dir)
    if server is not None and args.shared_buffers:
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(sql.Literal(args.shared_buffers))
            )
        server.stop()
        server.ensure_running()
    database = Database.open(args.database_url or server.url(), state_dir)  # type: ignore[union-attr]
    rng = np.random.default_rng(0)
    centroids = np.random.default_rng(1).standard_normal((64, DIM)).astype(np.float32)
    with database.pool.connection() as conn:
        shared_buffers = conn.execute("SHOW shared_buffers").fetchone()["shared_buffers"]  # type: ignore[index]
    report: dict[str, Any] = {
        "machine": platform.platform(),
        "python": sys.version.split()[0],
        "pgvector": ".".join(map(str, database.vector_version)),
        "shared_buffers": shared_buffers,
        "load_average": os.getloadavg(),
        "sizes": {},
    }
    try:
        store = NodeStore(database)
        with database.pool.connection() as conn:
            conn.execute("DELETE FROM runs WHERE id = %s", (RUN,))
            conn.execute("DELETE FROM cognition WHERE task = %s", (TASK,))
        store.create_run(RUN, TASK, "", {})
        cognition = CognitionStore(database, FixedEmbedder(rng, centroids))
        loaded, next_round = 0, [10 * max(args.sizes)]
        for size in sorted(args.sizes):
            figures: dict[str, Any] = {}
            figures["nodes bulk load"] = rebuild_index(
                database, "nodes", "nodes_embedding_idx", write_rows(node_rows(rng, centroids, loaded, size))
            )
            figures["cognition bulk load"] = rebuild_index(
                database,
                "cognition",
                "cognition_embedding_idx",
                write_rows(cognition_rows(rng, centroids, loaded, size)),
            )
            loaded = size
            extra = [
                NodeRecord(
                    id=f"{RUN}-x{size}-{i}",
                    run_id=RUN,
                    round=next_round[0] + i,
                    code=f"y = {i}\n",
                    score=1.0,
                    valid=True,
                    embedding=unit_vectors(rng, centroids, 1)[0].tolist(),
                )
                for i in range(200)
            ]
            next_round[0] += 200
            started = time.perf_counter()
            for record in extra:
                store.record_node(record)
            figures["record_node rows/s (HNSW kept)"] = round(len(extra) / (time.perf_counter() - started))
            figures["sampling"] = sample_latencies(store, next_round, args.repeats)
            figures["retrieval (3 queries, k=4)"] = timed(
                lambda: cognition.search(["a", "b", "c"], task=TASK, k=4, min_similarity=-1.0), args.repeats
            )
            query = unit_vectors(rng, centroids, 1)[0].tolist()
            figures["novelty nearest node"] = timed(
                lambda q=query: store.nearest_nodes(RUN, q, 1), args.repeats
            )
            retrieval = figures["retrieval (3 queries, k=4)"]["p50_ms"]
            figures["target: sampling + retrieval p50 < 20 ms"] = {
                policy: round(figures["sampling"][policy]["p50_ms"] + retrieval, 2)
                for policy in (*POLICIES, "ucb1 (all visited)")
            }
            figures["load average (1, 5, 15 min)"] = [round(x, 2) for x in os.getloadavg()]
            report["sizes"][str(size)] = figures
            print(f"\n== {size} nodes / cognition items ==")
            print(json.dumps(figures, indent=1))
        if not args.skip_embedder:
            embedder = LocalEmbedder()
            embedder.embed(["load"])
            texts = [
                "Place circles on a hexagonal lattice.",
                "The grid left the corners empty; fill them.",
                "SLSQP with pairwise constraints converged.",
            ]
            report["MiniLM embedding of 3 query texts"] = timed(lambda: embedder.embed(texts), 20)
            print("MiniLM, 3 queries:", report["MiniLM embedding of 3 query texts"])
    finally:
        database.close()
        if server is not None:
            server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
