"""Evaluate a policy-optimisation rule against GRPO: `python evaluate.py PROGRAM RESULTS_DIR --stage quick|full`.

For each seed, one supervised warm start is shared by two RL runs under identical settings and random streams:
the candidate's rule and the seed rule (GRPO, initial_program.py). Each run is a child process (train_child.py)
that saves the policy weights at every checkpoint; this process scores the weights itself on held-out problems
the child never sees. Score = mean over seeds of (area under the candidate's accuracy curve - GRPO's), where the
area is the mean accuracy over the checkpoints after step 0: positive means the rule learns faster than GRPO.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

if TYPE_CHECKING:  # run with this task's directory on sys.path; type-checked as part of the package
    from evoforge.tasks.rl_algorithm import rl_env
else:
    import rl_env

from evoforge.tasks.task_scripts import evaluator_main  # noqa: E402

REFERENCE = HERE / "initial_program.py"
DEFAULTS = {
    "quick": {"seeds": [0], "steps": 30, "workers": 2, "run_timeout_s": 300, "metric": "sampled"},
    "full": {"seeds": [0, 1, 2], "steps": 80, "workers": 2, "run_timeout_s": 900, "metric": "sampled"},
}


def stage_settings(stage: str) -> dict[str, Any]:
    if stage not in DEFAULTS:
        raise ValueError(f"--stage must be one of {sorted(DEFAULTS)}, got {stage!r}")
    raw = os.environ.get("EVOFORGE_STAGE_SETTINGS", "").strip()
    given = json.loads(raw) if raw else {}
    if not isinstance(given, dict):
        raise ValueError(f"EVOFORGE_STAGE_SETTINGS must be a JSON object, got {raw!r}")
    settings = {**DEFAULTS[stage], **given}
    if settings["metric"] not in ("greedy", "sampled"):
        raise ValueError(f"settings.metric must be 'greedy' or 'sampled', got {settings['metric']!r}")
    unknown = set(given) - set(DEFAULTS[stage]) - set(rl_env.EnvConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown stage settings {sorted(unknown)}")
    return settings


def _run_all(jobs: list[dict[str, Any]], workers: int, timeout_s: float) -> None:
    """Run child jobs, `workers` at a time; a candidate failure cancels the jobs not yet started."""
    pending, running = list(jobs), list[dict[str, Any]]()
    while pending or running:
        while pending and len(running) < workers:
            job = pending.pop(0)
            job["log"] = open(job["out"] / "stderr.txt", "w")  # noqa: SIM115 - closed when the job ends
            job["proc"] = subprocess.Popen(job["argv"], stdout=job["log"], stderr=subprocess.STDOUT, cwd=job["out"],
                                           env=job["env"], start_new_session=True)
            job["started"] = time.time()
            running.append(job)
        time.sleep(0.2)
        for job in list(running):
            code = job["proc"].poll()
            if code is None and time.time() - job["started"] > timeout_s:
                job["proc"].kill()
                job["proc"].wait()
                job["timed_out"] = True
                code = job["proc"].returncode
            if code is not None:
                job["log"].close()
                job["seconds"] = round(time.time() - job["started"], 1)
                running.remove(job)
                if job["rule"] == "candidate" and _failure(job):
                    pending.clear()
                    for other in running:
                        try:
                            os.killpg(other["proc"].pid, 9)
                        except ProcessLookupError:
                            print(f"job {other['rule']}/{other['seed']} had already exited", file=sys.stderr)


def _failure(job: dict[str, Any]) -> dict[str, Any] | None:
    if job.get("timed_out"):
        return {"error": f"an RL run of the rule exceeded run_timeout_s (seed {job['seed']})", "traceback": None}
    result_file = job["out"] / "result.json"
    if not result_file.is_file():
        tail = (job["out"] / "stderr.txt").read_text()[-2000:]
        return {"error": f"the training process exited with status {job['proc'].returncode} without a result",
                "traceback": tail}
    result = json.loads(result_file.read_text())
    return None if result.get("ok") else result


def _curve(job: dict[str, Any], cfg: rl_env.EnvConfig,
           eval_problems: tuple[torch.Tensor, torch.Tensor]) -> dict[str, list[float]]:
    policy = rl_env.Policy(cfg)
    curve: dict[str, list[float]] = {"step": [], "greedy": [], "sampled": []}
    for path in sorted(job["out"].glob("step_*.pt")):
        policy.load_state_dict(torch.load(path, weights_only=True))
        scores = rl_env.evaluate_policy(policy, cfg, *eval_problems)
        curve["step"].append(int(path.stem.split("_")[1]))
        curve["greedy"].append(round(scores["greedy"], 4))
        curve["sampled"].append(round(scores["sampled"], 4))
    return curve


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.pstdev(values), 4)}


def evaluate(program: Path, stage: str) -> dict[str, Any]:
    settings = stage_settings(stage)
    cfg = rl_env.EnvConfig.from_settings(settings)
    torch.set_num_threads(1)
    started = time.time()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    runs: dict[int, dict[str, Any]] = {}
    jobs = []
    with tempfile.TemporaryDirectory(prefix="rl-eval-") as scratch:
        for seed in settings["seeds"]:
            init, warm_steps = rl_env.warm_start(cfg, seed)
            init_path = Path(scratch) / f"init_{seed}.pt"
            torch.save(init.state_dict(), init_path)
            problems = rl_env.eval_set(cfg, seed)
            runs[seed] = {"warm_steps": warm_steps, "problems": problems,
                          "start": rl_env.evaluate_policy(init, cfg, *problems)}
            for rule, path in (("candidate", program.resolve()), ("grpo", REFERENCE)):
                out = Path(scratch) / f"{rule}_{seed}"
                out.mkdir()
                argv = [sys.executable, "-I", str(HERE / "train_child.py"), str(path), str(init_path), str(out),
                        json.dumps(settings), str(seed)]
                jobs.append({"rule": rule, "seed": seed, "out": out, "argv": argv, "env": env})
        _run_all(jobs, int(settings["workers"]), float(settings["run_timeout_s"]))
        metrics: dict[str, Any] = {"stage": stage, "settings": settings}
        launched = [j for j in jobs if "proc" in j]
        for job in sorted(launched, key=lambda j: j["rule"] != "candidate"):  # a candidate's failure explains the rest
            failure = _failure(job)
            if failure:
                who = "the candidate rule" if job["rule"] == "candidate" else "the GRPO reference (evaluator fault)"
                error = f"{who} failed on seed {job['seed']}: {failure['error']}"
                return {"score": None, "valid": False, "metrics": metrics, "error": error,
                        "traceback": failure.get("traceback"), "feedback": error}
        for job in launched:
            result = json.loads((job["out"] / "result.json").read_text())
            runs[job["seed"]][job["rule"]] = {**_curve(job, cfg, runs[job["seed"]]["problems"]),
                                              "train_reward_child_reported": result["train_reward"],
                                              "seconds": job["seconds"]}
    metric = settings["metric"]
    per_seed, curves = [], {}
    for seed, run in runs.items():
        area = {r: statistics.fmean(run[r][metric][1:]) for r in ("candidate", "grpo")}
        per_seed.append({"seed": seed, "warm_steps": run["warm_steps"], "start_accuracy": round(run["start"][metric], 4),
                         "auc_candidate": round(area["candidate"], 4), "auc_grpo": round(area["grpo"], 4),
                         "final_candidate": run["candidate"][metric][-1], "final_grpo": run["grpo"][metric][-1],
                         "seconds_candidate": run["candidate"]["seconds"], "seconds_grpo": run["grpo"]["seconds"]})
        curves[str(seed)] = {r: {k: v for k, v in run[r].items() if k != "seconds"} for r in ("candidate", "grpo")}
    score = statistics.fmean(s["auc_candidate"] - s["auc_grpo"] for s in per_seed)
    metrics.update({
        "metric": metric,
        "final_accuracy_candidate": _mean_std([s["final_candidate"] for s in per_seed]),
        "final_accuracy_grpo": _mean_std([s["final_grpo"] for s in per_seed]),
        "auc_candidate": _mean_std([s["auc_candidate"] for s in per_seed]),
        "auc_grpo": _mean_std([s["auc_grpo"] for s in per_seed]),
        "per_seed": per_seed,
        "seconds": round(time.time() - started, 1),
    })
    c, g = metrics["auc_candidate"], metrics["auc_grpo"]
    feedback = (f"mean {metric} accuracy over the RL curve {c['mean']} ± {c['std']} vs GRPO {g['mean']} ± {g['std']} "
                f"({len(per_seed)} seed(s)); final {metrics['final_accuracy_candidate']['mean']} vs "
                f"{metrics['final_accuracy_grpo']['mean']}")
    return {"score": round(score, 6), "valid": True, "metrics": metrics, "error": None, "feedback": feedback,
            "artifacts": {"learning_curves": curves}}


if __name__ == "__main__":
    evaluator_main(evaluate, __doc__.splitlines()[0])
