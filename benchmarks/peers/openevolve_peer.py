"""OpenEvolve 0.4.0 on an EvoForge task: its config and evaluator written into a work dir, its own command line
(`python -m openevolve.cli`) run under a wall-clock budget, every candidate judged by `evoforge evaluate`.

Settings are OpenEvolve's defaults (5 islands, MAP-Elites over complexity/diversity, diff-based evolution, 3 top
+ 2 diverse programs in the prompt, evaluator artifacts fed back) except where the benchmark needs otherwise:

- one model (the benchmark's endpoint), temperature 0.3 (OpenEvolve's default is 0.7; 0.3 is what EvoForge uses
  on a local model, so every system samples alike), max_tokens 1024 (not 4096: a CPU model writes ~20 tokens/s);
- `llm.timeout` is the budget (default 60 s: a CPU model's call takes 1–3 minutes, so every call would time out
  and be retried three times);
- `parallel` workers (`evaluator.parallel_evaluations`), each an iteration of its own (its model call and its
  evaluation), as many as the model server has slots: the same concurrency EvoForge's lanes get;
- `evaluator.cascade_evaluation: false`: the cascade is EvoForge's, inside `evoforge evaluate`, and the
  evaluator timeout covers all its stages;
- `max_code_length` is the task's `rules.max_code_chars`, so both systems may write programs of the same size;
- `random_seed` is the benchmark's seed. OpenEvolve derives one LLM seed from it and sends that same `seed`
  with every request.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from . import PEER_LABELS, peer_python, peer_summary
from .budget import run_under_budget
from .evaluation import ROOT, SANDBOX_SLACK_S, VENV_PYTHON

LABEL = PEER_LABELS["openevolve"]
MAX_ITERATIONS = 1_000_000
"""The wall-clock budget ends the run, not an iteration count."""
# One line per finished iteration, from OpenEvolve's process-parallel controller (a success or an error).
ITERATION_LINE = re.compile(r" - Iteration (\d+)(?:: Program | error: )")

EVALUATOR_TEMPLATE = '''"""OpenEvolve's evaluator for the EvoForge search benchmark (written by benchmarks/peers/openevolve_peer.py).

Each candidate goes through `evoforge evaluate` (EvoForge's sandbox and stage cascade) via EvoForge's venv.
"""

import json
import subprocess

from openevolve.evaluation_result import EvaluationResult

COMMAND = {command!r}
ROOT = {root!r}


def evaluate(program_path):
    proc = subprocess.run([*COMMAND, str(program_path)], cwd=ROOT, capture_output=True, text=True)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        error = "the EvoForge evaluation printed no result: " + (proc.stderr or proc.stdout)[-1500:]
        return EvaluationResult(metrics={{"combined_score": 0.0, "valid": 0.0}}, artifacts={{"error": error}})
    artifacts = {{"error": result["error"]}} if result["error"] else {{}}
    return EvaluationResult(metrics={{"combined_score": result["fitness"], "valid": float(result["valid"])}},
                            artifacts=artifacts)
'''


def run(task_dir: Path, base_url: str, model: str, budget_s: float, work_dir: Path, eval_log: Path,
        seed: int = 0, parallel: int = 1) -> dict[str, Any]:
    """Run OpenEvolve on the task in `task_dir` against `base_url`/`model` for `budget_s` seconds.

    Writes initial_program.py, evaluator.py and config.yaml into `work_dir`, OpenEvolve's output under
    `work_dir/openevolve_output` and its console log to `work_dir/openevolve.log`; each evaluation is appended
    to `eval_log` (system "openevolve"). Returns `{"iterations", "best_score", "evaluations", "valid",
    "killed", "seconds", "notes"}`. Raises `PeerMissing` when OpenEvolve is not installed.
    """
    from evoforge.tasks.spec import load_task

    python = peer_python("openevolve")
    spec = load_task(task_dir)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    program = work_dir / "initial_program.py"
    shutil.copyfile(spec.root / spec.program, program)
    evaluator = work_dir / "evaluator.py"
    command = [str(VENV_PYTHON), "-m", "benchmarks.peers.evaluation", str(spec.root), "--log",
               str(Path(eval_log).resolve()), "--label", LABEL, "--program"]
    evaluator.write_text(EVALUATOR_TEMPLATE.format(command=command, root=str(ROOT)))
    config = work_dir / "config.yaml"
    config.write_text(yaml.safe_dump(_config(spec, base_url, model, budget_s, seed, parallel), sort_keys=False))
    console = work_dir / "openevolve.log"
    argv = [str(python), "-m", "openevolve.cli", str(program), str(evaluator), "--config", str(config),
            "--output", str(work_dir / "openevolve_output"), "--iterations", str(MAX_ITERATIONS)]
    ended = run_under_budget(argv, budget_s, console, cwd=work_dir, env=_env())
    iterations = len(set(ITERATION_LINE.findall(console.read_text(errors="replace"))))
    notes = ("best program taken from the evaluation log: OpenEvolve writes best/ only when it ends by itself"
             if ended.killed else f"OpenEvolve exited by itself with code {ended.returncode}")
    return peer_summary(eval_log, LABEL, iterations, ended, notes)


def _config(spec: Any, base_url: str, model: str, budget_s: float, seed: int, parallel: int) -> dict[str, Any]:
    return {
        "max_iterations": MAX_ITERATIONS,
        "random_seed": seed,
        "language": "python",
        "diff_based_evolution": True,
        "max_code_length": spec.rules.max_code_chars,
        "llm": {
            "api_base": base_url,
            "api_key": "local",
            "models": [{"name": model, "weight": 1.0}],
            "temperature": 0.3,
            "max_tokens": 1024,
            "timeout": int(budget_s) + 60,
        },
        "prompt": {"system_message": spec.description},
        "database": {"random_seed": seed},
        "evaluator": {
            "timeout": int(sum(stage.timeout_s for stage in spec.stages) + SANDBOX_SLACK_S),
            "cascade_evaluation": False,
            "parallel_evaluations": parallel,
        },
    }


def _env() -> dict[str, str]:
    # Unbuffered, so the log holds every line written up to the SIGKILL.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OPENAI_API_KEY": "local"}
