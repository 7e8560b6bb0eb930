"""`python evaluate.py PROGRAM RESULTS_DIR --stage NAME`: train the tree's model with its recipe (run.py, in a
child process, inside the tree) and score its recall on held-out MQAR batches.

PROGRAM is the candidate's whole tree. The budget and the held-out seed come from the stage settings, so a
recipe cannot buy more steps, and the held-out batches are never the training ones."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

SETTINGS_ENV = "EVOFORGE_STAGE_SETTINGS"
TRACEBACK_START = "Traceback (most recent call last):"


def record_tree_view(tree: Path, results: Path) -> None:
    """results/tree_view.json: every file of the tree as the sandbox shows it (sha256, writable or not), so a
    run's record says what each candidate ran on."""
    view = {}
    for path in sorted(p for p in tree.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        view[path.relative_to(tree).as_posix()] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                                   "writable": os.access(path, os.W_OK)}
    results.mkdir(parents=True, exist_ok=True)
    (results / "tree_view.json").write_text(json.dumps(view, indent=1))


def evaluate(program: Path, stage: str) -> dict[str, Any]:
    settings = json.loads(os.environ.get(SETTINGS_ENV) or "{}")
    tree = program.resolve()
    record_tree_view(tree, Path(sys.argv[2]))  # the results dir of the command line
    child = subprocess.run([sys.executable, str(tree / "run.py"), json.dumps(settings)], cwd=tree,
                           capture_output=True, text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    if child.returncode != 0:
        start = child.stderr.rfind(TRACEBACK_START)
        trace = child.stderr[start:].strip() if start >= 0 else child.stderr[-3000:].strip()
        last = trace.splitlines()[-1] if trace else f"exit status {child.returncode}"
        return {"score": None, "valid": False, "metrics": {}, "error": f"training failed: {last}", "feedback": None,
                "traceback": trace or f"run.py exited with status {child.returncode} and no traceback"}
    try:
        result = json.loads(child.stdout.strip().splitlines()[-1])
        accuracy = float(result["accuracy"])
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        return {"score": None, "valid": False, "metrics": {}, "feedback": None,
                "error": f"run.py printed no result line ({exc}); stdout ended: {child.stdout[-300:]!r}"}
    if not math.isfinite(accuracy) or not 0.0 <= accuracy <= 1.0:
        return {"score": None, "valid": False, "metrics": {}, "feedback": None,
                "error": f"accuracy must be in [0, 1], got {accuracy!r}"}
    loss = float(result.get("final_loss", float("nan")))
    metrics = {"mqar_accuracy": accuracy, "final_train_loss": loss if math.isfinite(loss) else None,
               "train_seconds": round(float(result.get("seconds", 0.0)), 2), "steps": settings.get("steps")}
    chance = 1.0 / max(1, int(settings.get("num_values", 1)))
    feedback = (f"held-out recall accuracy {accuracy:.3f} (chance {chance:.3f}) after {settings.get('steps')} steps; "
                f"final training loss {loss:.3f}")
    return {"score": accuracy, "valid": True, "metrics": metrics, "error": None, "feedback": feedback,
            "traceback": None, "artifacts": {}}


def main() -> None:
    """The contract's command line; an exception here is the evaluator's own fault, reported as such. (No import
    of evoforge: the script runs with nothing but torch and yaml, in any sandbox image.)"""
    program, results = Path(sys.argv[1]), Path(sys.argv[2])
    stage = sys.argv[sys.argv.index("--stage") + 1] if "--stage" in sys.argv else "quick"
    results.mkdir(parents=True, exist_ok=True)
    try:
        report = evaluate(program, stage)
    except Exception as exc:  # an evaluator fault (bad settings, a broken environment)
        report = {"score": None, "valid": False, "metrics": {}, "error": f"evaluator error: {exc}",
                  "feedback": None, "traceback": None, "evaluator_traceback": traceback.format_exc()}
    (results / "metrics.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
