#!/usr/bin/env python3
"""Evaluator of the circle_packing task (standalone: numpy and the standard library only).

    python evaluate.py PROGRAM RESULTS_DIR --stage NAME

The candidate never runs in this process: a child python (its own session, its own scratch cwd, no
knowledge of RESULTS_DIR) imports PROGRAM, calls `run_packing()` and writes the raw arrays to a scratch
file. This process then checks the packing itself and writes RESULTS_DIR/metrics.json last, replacing
anything the candidate may have put there. Stage settings (JSON in EVOFORGE_STAGE_SETTINGS) override the
per-stage defaults below.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

import numpy as np

N_CIRCLES = 26
BEST_KNOWN_SUM = 2.6359830849
SETTINGS_ENV = "EVOFORGE_STAGE_SETTINGS"
STAGE_DEFAULTS = {
    "quick": {"program_timeout_s": 50.0, "repeats": 1, "tolerance": 1e-6, "report_layout": False},
    "full": {"program_timeout_s": 120.0, "repeats": 2, "tolerance": 1e-6, "report_layout": True},
}
MAX_PAYLOAD_BYTES = 2_000_000
TAIL_CHARS = 2000
MAX_LISTED_VIOLATIONS = 3

# Runs in the child. Kept free of this file's names so the candidate can patch nothing the checker uses.
CHILD_SOURCE = r"""
import importlib.util, json, sys, time, traceback
program, out_path = sys.argv[1], sys.argv[2]

def emit(payload):
    with open(out_path, "w") as handle:
        json.dump(payload, handle)

def call_candidate():
    phase = "importing the program"
    try:
        spec = importlib.util.spec_from_file_location("candidate_program", program)
        module = importlib.util.module_from_spec(spec)
        sys.modules["candidate_program"] = module
        spec.loader.exec_module(module)
        if not callable(getattr(module, "run_packing", None)):
            return None, {"ok": False, "error": "the program defines no callable run_packing()"}
        phase = "run_packing()"
        return module.run_packing(), None
    except BaseException as exc:
        return None, {"ok": False, "error": f"{phase} raised {type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()}

import numpy as np
start = time.perf_counter()
result, failure = call_candidate()
if failure is not None:
    emit(failure)
    sys.exit(0)
seconds = time.perf_counter() - start
if not isinstance(result, (tuple, list)) or len(result) not in (2, 3):
    emit({"ok": False, "error": "run_packing() must return (centers, radii, sum_radii); got " + type(result).__name__
          + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")})
    sys.exit(0)
try:
    centers = np.asarray(result[0], dtype=float)
    radii = np.asarray(result[1], dtype=float)
except (TypeError, ValueError) as exc:
    emit({"ok": False, "error": f"run_packing() returned centers/radii that are not numeric arrays: {exc}"})
    sys.exit(0)
try:
    reported = float(result[2]) if len(result) == 3 else None
except (TypeError, ValueError):
    reported = None
emit({"ok": True, "centers": centers.tolist(), "radii": radii.tolist(), "reported_sum": reported,
      "seconds": seconds})
"""


def stage_settings(stage: str) -> dict[str, Any]:
    """The stage's defaults overridden by EVOFORGE_STAGE_SETTINGS; ValueError names a bad key or value."""
    settings = dict(STAGE_DEFAULTS.get(stage, STAGE_DEFAULTS["quick"]))
    raw = os.environ.get(SETTINGS_ENV, "").strip()
    try:
        given = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ValueError(f"{SETTINGS_ENV} is not valid JSON ({exc}): {raw!r}") from exc
    if not isinstance(given, dict):
        raise ValueError(f"{SETTINGS_ENV} must be a JSON object, got {raw!r}")
    unknown = sorted(set(given) - set(settings))
    if unknown:
        raise ValueError(f"unknown stage setting(s) {unknown}; known: {sorted(settings)}")
    settings.update(given)
    if not (isinstance(settings["program_timeout_s"], (int, float)) and settings["program_timeout_s"] > 0):
        raise ValueError(
            f"program_timeout_s must be a positive number, got {settings['program_timeout_s']!r}"
        )
    if not (isinstance(settings["repeats"], int) and settings["repeats"] >= 1):
        raise ValueError(f"repeats must be an integer >= 1, got {settings['repeats']!r}")
    if not (isinstance(settings["tolerance"], (int, float)) and settings["tolerance"] >= 0):
        raise ValueError(f"tolerance must be a number >= 0, got {settings['tolerance']!r}")
    return settings


class _Relay(threading.Thread):
    """Copies a child's output stream to ours, keeping its last TAIL_CHARS bytes: the output reaches the
    sandbox's own bounded capture and output limit (a flood is stopped and named there), not a scratch file
    that fills /tmp."""

    def __init__(self, source: IO[bytes], target: IO[bytes]):
        super().__init__(daemon=True)
        self.source, self.target, self.tail = source, target, b""

    def run(self) -> None:
        while chunk := os.read(self.source.fileno(), 65536):
            self.tail = (self.tail + chunk)[-TAIL_CHARS:]
            with contextlib.suppress(OSError):  # our own stream closed: keep draining the child
                self.target.write(chunk)
                self.target.flush()
        self.source.close()

    def text(self) -> str:
        self.join(timeout=2.0)  # a grandchild the session kill missed may hold the pipe open
        return self.tail.decode("utf-8", errors="replace")


def run_candidate(program: Path, timeout_s: float) -> dict[str, Any]:
    """Run the candidate in a child process: its payload (`ok`, arrays or `error`) plus its output tails."""
    scratch = Path(tempfile.mkdtemp(prefix="circle-packing-"))
    out_path = scratch / "packing_output.json"
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_SOURCE, str(program.resolve()), str(out_path)],
            cwd=scratch,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert child.stdout is not None and child.stderr is not None
        relays = [_Relay(child.stdout, sys.stdout.buffer), _Relay(child.stderr, sys.stderr.buffer)]
        for relay in relays:
            relay.start()
        timed_out = False
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        # Kill the whole session, so nothing the candidate started outlives this check.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        run = {"stdout_tail": relays[0].text(), "stderr_tail": relays[1].text()}
        if timed_out:
            error = f"the program did not finish within {timeout_s:g} s (killed)"
        elif not out_path.is_file():
            error = f"the program exited (status {child.returncode}) without returning a packing"
        elif out_path.stat().st_size > MAX_PAYLOAD_BYTES:
            error = "the program's result is implausibly large"
        else:
            try:
                payload = json.loads(out_path.read_text())
            except (ValueError, UnicodeDecodeError):
                payload = None
            if isinstance(payload, dict):
                return {**run, **payload}
            error = "the program's result could not be read"
        return {**run, "ok": False, "error": error}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_packing(centers_raw: object, radii_raw: object, tolerance: float) -> dict[str, Any]:
    """Independent validity check. Returns metrics plus `problems` (sentences, empty when valid with tolerance)."""
    try:
        centers = np.asarray(centers_raw, dtype=float)
        radii = np.asarray(radii_raw, dtype=float)
    except (TypeError, ValueError) as exc:
        return {
            "problems": [f"centers/radii are not rectangular numeric arrays: {exc}"],
            "valid_strict": False,
        }
    problems: list[str] = []
    if centers.shape != (N_CIRCLES, 2):
        problems.append(f"centers must have shape ({N_CIRCLES}, 2), got {centers.shape}")
    if radii.shape != (N_CIRCLES,):
        problems.append(f"radii must have shape ({N_CIRCLES},), got {radii.shape}")
    if problems:
        return {"problems": problems, "valid_strict": False}
    bad = sorted(
        set(
            np.flatnonzero(~np.isfinite(radii)).tolist()
            + np.flatnonzero(~np.isfinite(centers).all(1)).tolist()
        )
    )
    if bad:
        return {"problems": [f"NaN or infinite values in circles {bad}"], "valid_strict": False}
    negative = np.flatnonzero(radii < 0).tolist()
    if negative:
        problems.append(f"negative radii in circles {negative} (smallest {radii.min():.3g})")

    # escape[i] > 0: circle i sticks out of the square by that much (worst side).
    sides = np.stack(
        [radii - centers[:, 0], radii - centers[:, 1], centers[:, 0] + radii - 1, centers[:, 1] + radii - 1],
        1,
    )
    escape = sides.max(axis=1)
    for i in np.argsort(-escape)[:MAX_LISTED_VIOLATIONS]:
        if escape[i] > tolerance:
            side = ["left", "bottom", "right", "top"][int(sides[i].argmax())]
            problems.append(
                f"circle {i} (centre ({centers[i, 0]:.4f}, {centers[i, 1]:.4f}), r={radii[i]:.4f}) "
                f"crosses the {side} edge by {escape[i]:.3g}"
            )
    distance = np.sqrt(((centers[:, None, :] - centers[None, :, :]) ** 2).sum(-1))
    overlap = radii[:, None] + radii[None, :] - distance
    upper = np.triu_indices(N_CIRCLES, k=1)
    pair_overlap = overlap[upper]
    for k in np.argsort(-pair_overlap)[:MAX_LISTED_VIOLATIONS]:
        if pair_overlap[k] > tolerance:
            i, j = upper[0][k], upper[1][k]
            problems.append(
                f"circles {i} and {j} overlap by {pair_overlap[k]:.3g} "
                f"(r{i} + r{j} = {radii[i] + radii[j]:.4f}, centre distance {distance[i, j]:.4f})"
            )
    n_overlapping = int((pair_overlap > tolerance).sum())
    if n_overlapping > MAX_LISTED_VIOLATIONS:
        problems.append(f"{n_overlapping} overlapping pairs in all")
    max_overlap, max_escape = float(max(pair_overlap.max(), 0.0)), float(max(escape.max(), 0.0))
    return {
        "problems": problems,
        "valid_strict": not negative and max_overlap <= 0 and max_escape <= 0,
        "sum_radii": float(radii.sum()),
        "max_overlap": max_overlap,
        "max_escape": max_escape,
        "min_radius": float(radii.min()),
        "max_radius": float(radii.max()),
        "touching_pairs": int((np.abs(pair_overlap) <= 1e-6).sum()),
        "wall_contacts": int((np.abs(sides) <= 1e-6).sum()),
    }


def evaluate(program: Path, results_dir: Path, stage: str) -> dict[str, Any]:
    """The whole metrics.json content for one stage."""
    started = time.perf_counter()
    settings = stage_settings(stage)
    runs, checks = [], []
    for _ in range(settings["repeats"]):
        run = run_candidate(program, float(settings["program_timeout_s"]))
        runs.append(run)
        if not run.get("ok"):
            output = "\n".join(
                f"{name}: ...{run[key][-600:]}"
                for name, key in (("stdout", "stdout_tail"), ("stderr", "stderr_tail"))
                if run.get(key)
            )
            return {
                "score": 0.0,
                "valid": False,
                "error": run.get("error", "the program failed"),
                "traceback": run.get("traceback"),
                "feedback": output or None,
                "metrics": {
                    "n_circles": N_CIRCLES,
                    "valid_tol": False,
                    "valid_strict": False,
                    "eval_seconds": time.perf_counter() - started,
                },
            }
        checks.append(check_packing(run.get("centers"), run.get("radii"), float(settings["tolerance"])))
        if checks[-1]["problems"]:
            break
    check, run = checks[-1], runs[-1]
    valid = not check["problems"]
    metrics: dict[str, Any] = {"sum_radii": None, "max_overlap": None, "max_escape": None}
    metrics.update((key, value) for key, value in check.items() if key != "problems")
    metrics.update(
        n_circles=N_CIRCLES,
        valid_tol=valid,
        repeats=len(runs),
        tolerance=settings["tolerance"],
        program_seconds=max(float(r.get("seconds") or 0.0) for r in runs),
        fraction_of_best_known=check.get("sum_radii", 0.0) / BEST_KNOWN_SUM,
        eval_seconds=time.perf_counter() - started,
    )
    notes = []
    reported = run.get("reported_sum")
    if "sum_radii" in check:
        metrics["reported_sum"] = reported
        metrics["sum_mismatch"] = reported is not None and not math.isclose(
            reported, check["sum_radii"], abs_tol=1e-6
        )
        if metrics["sum_mismatch"]:
            notes.append(
                f"the reported sum ({reported}) disagrees with the radii; the recomputed sum "
                f"{check['sum_radii']:.6f} is used"
            )
    sums = [c["sum_radii"] for c in checks if "sum_radii" in c]
    if valid and len(sums) > 1:
        metrics["sum_radii_spread"] = max(sums) - min(sums)
        notes.append(
            f"{len(sums)} runs gave sums {', '.join(f'{s:.6f}' for s in sums)}; the score is the smallest"
        )
    score = min(sums) if valid else 0.0
    artifacts: dict[str, Any] = {"stdout_tail": run["stdout_tail"]} if run.get("stdout_tail") else {}
    if settings["report_layout"] and "sum_radii" in check:
        artifacts |= {
            "centers": np.round(run["centers"], 6).tolist(),
            "radii": np.round(run["radii"], 6).tolist(),
            "picture": "packing.svg",
        }
        (results_dir / "packing.svg").write_text(
            packing_svg(np.asarray(run["centers"]), np.asarray(run["radii"]))
        )
    if valid:
        summary = (
            f"valid packing: sum of radii {score:.6f} = {100 * score / BEST_KNOWN_SUM:.1f}% of the best known "
            f"{BEST_KNOWN_SUM:.6f}; radii {check['min_radius']:.4f}..{check['max_radius']:.4f}; "
            f"{check['touching_pairs']} touching pairs, {check['wall_contacts']} wall contacts"
            + (
                ""
                if check["valid_strict"]
                else f"; valid only within the {settings['tolerance']:g} tolerance"
            )
        )
    else:
        summary = "invalid packing: " + "; ".join(check["problems"])
    return {
        "score": score,
        "valid": valid,
        "metrics": metrics,
        "error": None if valid else check["problems"][0],
        "feedback": "\n".join([summary, *notes]),
        "traceback": None,
        "artifacts": artifacts,
    }


def packing_svg(centers: np.ndarray, radii: np.ndarray, size: int = 400) -> str:
    """A picture of the packing for the Analyzer (y axis pointing up)."""
    shapes = "".join(
        f'<circle cx="{x * size:.2f}" cy="{(1 - y) * size:.2f}" r="{max(r, 0) * size:.2f}" '
        f'fill="#9ecae1" stroke="#08519c"/>'
        for (x, y), r in zip(centers, radii, strict=True)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} {size}">'
        f'<rect width="{size}" height="{size}" fill="white" stroke="black"/>{shapes}</svg>\n'
    )


def write_metrics(results_dir: Path, report: dict[str, Any]) -> None:
    """Atomically replace metrics.json (strict JSON: non-finite numbers become null)."""

    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [finite(v) for v in value]
        return value

    tmp = results_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(finite(report), indent=2, allow_nan=False))
    os.replace(tmp, results_dir / "metrics.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("program", type=Path)
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--stage", default="quick")
    args = parser.parse_args(argv)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    try:
        report = evaluate(args.program, args.results_dir, args.stage)
    except Exception as exc:  # the evaluator's own failure must still produce a readable metrics.json
        traceback.print_exc()
        report = {
            "score": 0.0,
            "valid": False,
            "metrics": {},
            "error": f"evaluator failed: {type(exc).__name__}: {exc}",
        }
    write_metrics(args.results_dir, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
