"""The one evaluator every system is judged by: `evoforge evaluate`, the task's whole stage cascade in EvoForge's
sandbox, called once per candidate program, each call logged as one JSON line.

A peer's own evaluator file (written by openevolve_peer.py / shinka_peer.py) runs this module as a command in
EvoForge's venv, whatever interpreter the peer itself runs on:

    .venv/bin/python -m benchmarks.peers.evaluation TASK_DIR --log EVAL_LOG --label LABEL --program PROGRAM

prints the result dict (plus the `fitness` the peer maximises) as its last stdout line. The log line is
`{"t", "system", "score", "valid", "error", "code_sha256", "fingerprint", "seconds"}`, where `fingerprint` is
EvoForge's own duplicate detector (`evoforge.memory.fingerprint.code_hash`), so duplicate programs are counted
the same way for every system.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EVOFORGE = ROOT / ".venv" / "bin" / "evoforge"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
SANDBOX_SLACK_S = 120.0
"""Beyond the stages' own timeouts: sandbox start-up and the CLI's imports, before we call the run hung."""
INVALID_MINIMIZE_FITNESS = -1e9
"""What an invalid program scores for a peer on a task that minimises: worse than any valid program."""
_log_lock = threading.Lock()


def evaluate_with_evoforge(task_dir: Path, program_path: Path, log_path: Path, label: str) -> dict[str, Any]:
    """Evaluate `program_path` on the task in `task_dir` with `evoforge evaluate --json`.

    Returns `{"score": float (0.0 when invalid), "valid": bool, "error": str | None}` and appends one line to
    `log_path`. The JSON is read whatever the exit code (an evaluator failure may exit non-zero while an
    invalid program exits 0); a missing or garbled JSON counts as invalid, with what the command printed.
    """
    started, wall = time.time(), time.monotonic()
    code = Path(program_path).read_text(encoding="utf-8", errors="replace")
    result = _run_cli(Path(task_dir), Path(program_path))
    seconds = round(time.monotonic() - wall, 3)
    record = {"t": started, "system": label, **result, "code_sha256": hashlib.sha256(code.encode()).hexdigest(),
              "fingerprint": _fingerprint(code), "seconds": seconds}
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with _log_lock, Path(log_path).open("a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
    return result


def peer_fitness(result: dict[str, Any], direction: str) -> float:
    """The number a peer maximises (both peers only maximise `combined_score`): the score, negated on a task
    that minimises; 0.0 for an invalid program on a task that maximises (the tasks' own convention)."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if direction == "maximize":
        return float(result["score"]) if result["valid"] else 0.0
    return -float(result["score"]) if result["valid"] else INVALID_MINIMIZE_FITNESS


def _run_cli(task_dir: Path, program_path: Path) -> dict[str, Any]:
    argv = [str(EVOFORGE), "evaluate", str(task_dir), str(program_path), "--json"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_timeout_s(task_dir), cwd=ROOT,
                              env={**os.environ, "NO_COLOR": "1"})
    except subprocess.TimeoutExpired as exc:
        return _invalid(f"evoforge evaluate did not finish within {exc.timeout:.0f} s")
    except OSError as exc:
        return _invalid(f"evoforge evaluate could not start ({EVOFORGE}): {exc}")
    payload = _last_json_line(proc.stdout)
    if payload is None:
        tail = (proc.stderr or proc.stdout or "").strip()[-1500:]
        return _invalid(f"evoforge evaluate exited {proc.returncode} without its JSON line: {tail}")
    raw = payload.get("score")
    score = float(raw) if isinstance(raw, int | float) else math.nan
    valid = bool(payload.get("valid")) and math.isfinite(score)
    error = payload.get("error")
    if not valid and not error:
        error = f"stage {payload.get('stage')}: {payload.get('status')}, score {raw!r}"
    return {"score": score if valid else 0.0, "valid": valid, "error": error}


def _timeout_s(task_dir: Path) -> float:
    from evoforge.tasks.spec import load_task

    return sum(stage.timeout_s for stage in load_task(task_dir).stages) + SANDBOX_SLACK_S


def _last_json_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                payload = json.loads(line)
            except ValueError:
                return None
            return payload if isinstance(payload, dict) else None
    return None


def _invalid(error: str) -> dict[str, Any]:
    return {"score": 0.0, "valid": False, "error": error}


def _fingerprint(code: str) -> str:
    from evoforge.memory.fingerprint import code_hash

    return code_hash(code)


def main(argv: list[str] | None = None) -> int:
    """Command line for a peer's evaluator file: evaluate, log, and print the result plus `fitness` (what the
    peer maximises, see `peer_fitness`) as the last stdout line."""
    from evoforge.tasks.spec import load_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task_dir", type=Path)
    parser.add_argument("--log", type=Path, required=True, help="the evaluation log to append to")
    parser.add_argument("--label", required=True, help="the system the evaluation belongs to")
    parser.add_argument("--program", type=Path, required=True)
    args = parser.parse_args(argv)
    result = evaluate_with_evoforge(args.task_dir, args.program, args.log, args.label)
    fitness = peer_fitness(result, load_task(args.task_dir).score.direction)
    sys.stdout.write(json.dumps({**result, "fitness": fitness}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
