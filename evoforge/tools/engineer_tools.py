"""The Engineer's read-only LangChain tools for looking at what an evaluation stage left behind.

Both take the stage directory a `StageResult` names as `results_dir` (its `results/` subfolder works too).
Problems come back as text the model can act on, never as exceptions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from langchain_core.tools import tool

from evoforge.tasks.spec import METRICS_FILE
from evoforge.tools.job_files import RESULTS_DIR, read_job_file

MAX_LINES = 500
_MAX_LOG_BYTES = 50_000_000  # stdout.txt/stderr.txt are already capped by the sandbox; this is a backstop


def _stage_dir(results_dir: str) -> Path:
    path = Path(results_dir)
    return path.parent if path.name == RESULTS_DIR else path


@tool
def read_log_tail(results_dir: str, stream: Literal["stdout", "stderr"], lines: int = 40) -> str:
    """Return the last `lines` lines (1-500) of the evaluation's stdout or stderr in the stage directory
    `results_dir`."""
    if stream not in ("stdout", "stderr"):
        return f"stream must be 'stdout' or 'stderr', got {stream!r}"
    if not 1 <= lines <= MAX_LINES:
        return f"lines must be between 1 and {MAX_LINES}, got {lines}"
    path = _stage_dir(results_dir) / f"{stream}.txt"
    try:
        text = read_job_file(path, limit=_MAX_LOG_BYTES).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"no {stream}.txt in {path.parent}: has this stage been run there?"
    except OSError as exc:
        return f"cannot read {path}: {exc}"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"({stream} was empty)"


@tool
def read_metrics(results_dir: str) -> str:
    """Return the evaluator's metrics.json of the stage directory `results_dir` as JSON text."""
    stage_dir = _stage_dir(results_dir)
    for path in (stage_dir / RESULTS_DIR / METRICS_FILE, stage_dir / METRICS_FILE):
        try:
            raw = read_job_file(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return json.dumps({"error": f"cannot read {path}: {exc}"})
        try:
            return json.dumps(json.loads(raw), indent=1)
        except ValueError as exc:
            return json.dumps({"error": f"{path} is not valid JSON: {exc}",
                               "content_head": raw[:2000].decode("utf-8", errors="replace")})
    return json.dumps({"error": f"no {METRICS_FILE} in {stage_dir} or its {RESULTS_DIR}/ folder"})

