"""The rl_algorithm task: its evaluator run exactly as the sandbox runs it, and its static check."""

from __future__ import annotations

from pathlib import Path

import pytest
from task_script_runs import TaskScripts

from evoforge.tasks.spec import EvaluationReport, load_task

TASK = load_task("rl_algorithm")
FIXTURES = Path(__file__).parent / "fixtures" / "rl_algorithm"
# Small enough for the test budget; at these settings the better rule is ahead of GRPO at both checkpoints.
TINY = {"seeds": [0], "steps": 20, "eval_every": 10, "eval_problems": 300}


SCRIPTS = TaskScripts(TASK)
evaluate, static_check = SCRIPTS.evaluate, SCRIPTS.static_check


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory) -> EvaluationReport:
    return evaluate(tmp_path_factory.mktemp("seed"), TASK.seed_code(), TINY)


@pytest.mark.slow
def test_seed_is_valid_and_scores_exactly_zero_against_itself(seed_report):
    assert seed_report.valid, seed_report.error
    assert seed_report.score == 0.0
    curves = seed_report.artifacts["learning_curves"]["0"]
    assert curves["candidate"] == curves["grpo"]  # two processes, same rule, same seed: identical runs
    assert curves["candidate"]["step"] == [0, 10, 20]
    assert curves["candidate"]["sampled"][-1] > curves["candidate"]["sampled"][0]  # RL learns at all


@pytest.mark.slow
def test_better_rule_beats_grpo_and_grpo_run_is_reproduced(tmp_path, seed_report):
    report = evaluate(tmp_path, (FIXTURES / "confident_negatives.py").read_text(), TINY)
    assert report.valid, report.error
    assert report.score > 0.005, report.metrics
    # The GRPO reference in this evaluation is the same run as the seed's own run in another evaluation.
    assert report.artifacts["learning_curves"]["0"]["grpo"]["sampled"] == \
        seed_report.artifacts["learning_curves"]["0"]["candidate"]["sampled"]


def test_nan_loss_is_invalid_with_a_clear_reason(tmp_path):
    report = evaluate(tmp_path, (FIXTURES / "nan_loss.py").read_text(), {**TINY, "steps": 5, "warm_target": 0.0})
    assert not report.valid
    assert report.score is None
    assert "candidate rule failed" in report.error and "policy_loss returned nan at step 0" in report.error


def test_static_check_accepts_the_seed_and_the_better_rule(tmp_path):
    assert static_check(tmp_path / "a", TASK.seed_code()) == {"ok": True, "reasons": []}
    assert static_check(tmp_path / "b", (FIXTURES / "confident_negatives.py").read_text())["ok"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.replace("def policy_loss(", "def clipped_objective("), "missing the module-level function policy_loss"),
        (lambda s: s.replace("def compute_advantages(rewards: torch.Tensor)", "def compute_advantages()"),
         "compute_advantages() must accept 1 positional argument"),
        (lambda s: s + "\nSECRET = open('evaluate.py').read()\n", "uses 'open'"),
        (lambda s: s.replace("import torch", "import torch\nimport evaluate"), "imports 'evaluate'"),
        (lambda s: s.replace("import torch", "import torch\nfrom rl_env import rewards as reward_fn"), "imports 'rl_env'"),
        (lambda s: s + "\nLEAK = compute_advantages.__globals__\n", "accesses attribute '__globals__'"),
        (lambda s: s + "\nW = torch.load('init.pt')\n", "accesses attribute 'load'"),
    ],
)
def test_static_check_rejects(tmp_path, edit, expected):
    result = static_check(tmp_path, edit(TASK.seed_code()))
    assert not result["ok"]
    assert any(expected in reason for reason in result["reasons"]), result["reasons"]


def test_static_check_rejects_a_nan_loss_on_the_probe_batch(tmp_path):
    result = static_check(tmp_path, (FIXTURES / "nan_loss.py").read_text())
    assert not result["ok"]
    assert result["reasons"] == ["policy_loss is not finite on the probe batch: nan"]


def test_task_yaml_validates_and_ships_its_scale_configs():
    assert [s.name for s in TASK.stages] == ["quick", "full"]
    assert TASK.entry_points == ["compute_advantages", "policy_loss"]
    for config in ("configs/verl_grpo.yaml", "configs/trl_grpo.yaml"):
        assert config in TASK.extra_files and (TASK.root / config).is_file()
    assert {p.name for p in TASK.cognition_files()} >= {"policy_gradient_family.md", "this_environment.md"}
