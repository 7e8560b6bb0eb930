"""ShinkaEvolve 0.0.7 on an EvoForge task: a Shinka task directory (initial.py, evaluate.py, shinka.yaml) written
into a work dir, Shinka's own command line (`shinka_run`) run under a wall-clock budget, every candidate judged
by `evoforge evaluate`.

Shinka's evaluation contract: `python evaluate.py --program_path P --results_dir R` writes R/metrics.json
(`combined_score`, `public`, `private`, `text_feedback`) and R/correct.json (`correct`, `error`); only correct
programs become parents. Settings are Shinka's defaults (2 islands, weighted parent selection, diff / full /
cross patches at 0.6 / 0.3 / 0.1, up to 3 resamples of a patch that does not apply) except:

- one model, given as `local/<model>@<base_url>` (Shinka's form for an OpenAI-compatible server), with
  `llm_dynamic_selection: null` (the UCB bandit chooses between models; there is one) and
  `llm_kwargs: {temperatures: [0.3], max_tokens: 1024}` (defaults: [0.0, 0.5, 1.0] and 16384; 0.3 is what EvoForge
  uses on a local model, so every system samples alike);
- `embedding_model: null`: the default (text-embedding-3-small) is OpenAI's hosted API; without it Shinka skips
  its embedding novelty filter (its LLM novelty judge and meta-recommendations are off by default anyway);
- `parallel` proposals and evaluations at once, as many as the model server has slots (the concurrency
  EvoForge's lanes get), and one database worker;
- Shinka has no seed option: the launcher seeds Python's and numpy's global generators, which its sampling uses.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import yaml

from . import PEER_LABELS, peer_python, peer_summary
from .budget import run_under_budget
from .evaluation import ROOT, VENV_PYTHON

log = logging.getLogger(__name__)

LABEL = PEER_LABELS["shinka"]
MAX_GENERATIONS = 1_000_000
"""The wall-clock budget ends the run, not a generation count."""

EVALUATE_TEMPLATE = '''"""ShinkaEvolve's evaluator for the EvoForge search benchmark (written by benchmarks/peers/shinka_peer.py).

Each candidate goes through `evoforge evaluate` (EvoForge's sandbox and stage cascade) via EvoForge's venv.
"""

import argparse
import json
import os
import subprocess

COMMAND = {command!r}
ROOT = {root!r}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--program_path", required=True)
    parser.add_argument("--results_dir", required=True)
    args = parser.parse_args()
    proc = subprocess.run([*COMMAND, os.path.abspath(args.program_path)], cwd=ROOT, capture_output=True,
                          text=True)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        error = "the EvoForge evaluation printed no result: " + (proc.stderr or proc.stdout)[-1500:]
        result = {{"score": 0.0, "valid": False, "error": error, "fitness": 0.0}}
    os.makedirs(args.results_dir, exist_ok=True)
    metrics = {{"combined_score": result["fitness"], "public": {{"score": result["score"]}}, "private": {{}},
               "text_feedback": result["error"] or ""}}
    with open(os.path.join(args.results_dir, "metrics.json"), "w") as out:
        json.dump(metrics, out)
    with open(os.path.join(args.results_dir, "correct.json"), "w") as out:
        json.dump({{"correct": result["valid"], "error": result["error"]}}, out)


if __name__ == "__main__":
    main()
'''

LAUNCHER_TEMPLATE = '''"""Seeds the global generators ShinkaEvolve samples from, then runs shinka_run with the given arguments."""

import random
import sys

import numpy as np

from shinka.cli.run import main

random.seed({seed})
np.random.seed({seed})
sys.exit(main(sys.argv[1:]))
'''


def run(task_dir: Path, base_url: str, model: str, budget_s: float, work_dir: Path, eval_log: Path,
        seed: int = 0, parallel: int = 1) -> dict[str, Any]:
    """Run ShinkaEvolve on the task in `task_dir` against `base_url`/`model` for `budget_s` seconds.

    Writes the Shinka task directory to `work_dir/task`, Shinka's results (gen_*/, best/, programs.sqlite) to
    `work_dir/results` and its console log to `work_dir/shinka.log`; each evaluation is appended to `eval_log`
    (system "shinka"). Returns `{"iterations", "best_score", "evaluations", "valid", "killed",
    "seconds", "notes"}`. Raises `PeerMissing` when ShinkaEvolve is not installed.
    """
    from evoforge.tasks.spec import load_task

    python = peer_python("shinka")
    spec = load_task(task_dir)
    work_dir = Path(work_dir).resolve()
    task = work_dir / "task"
    task.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec.root / spec.program, task / "initial.py")
    command = [str(VENV_PYTHON), "-m", "benchmarks.peers.evaluation", str(spec.root), "--log",
               str(Path(eval_log).resolve()), "--label", LABEL, "--program"]
    (task / "evaluate.py").write_text(EVALUATE_TEMPLATE.format(command=command, root=str(ROOT)))
    (task / "shinka.yaml").write_text(yaml.safe_dump(_config(spec, base_url, model, parallel), sort_keys=False))
    launcher = work_dir / "launch_shinka.py"
    launcher.write_text(LAUNCHER_TEMPLATE.format(seed=int(seed)))
    results = work_dir / "results"
    argv = [str(python), str(launcher), "--task-dir", str(task), "--results_dir", str(results),
            "--num_generations", str(MAX_GENERATIONS), "--config-fname", "shinka.yaml"]
    # LOCAL_OPENAI_API_KEY is the key Shinka sends to a local/... model (it defaults to "local" as well).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOCAL_OPENAI_API_KEY": "local"}
    ended = run_under_budget(argv, budget_s, work_dir / "shinka.log", cwd=work_dir, env=env)
    notes = (f"Shinka keeps its best program in {results / 'best'}; killed at the budget"
             if ended.killed else f"ShinkaEvolve exited by itself with code {ended.returncode}")
    return peer_summary(eval_log, LABEL, _generations(results), ended, notes)


def _config(spec: Any, base_url: str, model: str, parallel: int) -> dict[str, Any]:
    return {
        "evo": {
            "task_sys_msg": spec.description,
            "language": "python",
            "llm_models": [f"local/{model}@{base_url}"],
            "llm_dynamic_selection": None,
            "llm_kwargs": {"temperatures": [0.3], "max_tokens": 1024},
            "embedding_model": None,
        },
        # as many proposals and evaluations at once as the model server has slots (EvoForge's lanes)
        "max_evaluation_jobs": parallel,
        "max_proposal_jobs": parallel,
        "max_db_workers": 1,
        "verbose": True,
    }


def _generations(results: Path) -> int:
    """Generations Shinka finished after the seed (a failed proposal is stored as a generation too)."""
    database = results / "programs.sqlite"
    if database.is_file():
        try:
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
                (count,) = conn.execute("SELECT COUNT(*) FROM programs WHERE generation > 0").fetchone()
            return int(count)
        except sqlite3.Error as exc:
            # A run killed mid-write can leave the database unreadable; its gen_* folders remain.
            log.warning("reading %s failed (%s); counting gen_* folders instead", database, exc)
    return len([d for d in results.glob("gen_*") if d.name != "gen_0"])
