"""The linear_attention task: its static rules and its evaluator, run as subprocesses exactly as the sandbox
runs them (evaluator + extra files copied into a fresh work dir, the candidate written as program.py, the
stage settings in EVOFORGE_STAGE_SETTINGS), at tiny settings."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evoforge.tasks.spec import EvaluationReport, load_task

TASK = load_task("linear_attention")
TINY_SETTINGS = {
    "threads": 1, "d_model": 16, "n_layers": 1, "n_heads": 2, "steps": 6, "batch_size": 8, "warmup_steps": 2,
    "benchmarks": ["mqar", "lm"], "mqar_seq_len": 32, "mqar_num_pairs": [2, 4], "mqar_num_keys": 8,
    "mqar_num_values": 8, "mqar_eval_examples": 16, "mqar_eval_seq_lens": [48], "lm_corpus_chars": 20000,
    "lm_seq_len": 32, "lm_eval_batches": 2, "eval_every": 3,
}  # fmt: skip

NON_CAUSAL = '''
import torch.nn as nn

class TokenMixer(nn.Module):
    """Adds the mean over the whole sequence: every position sees the future."""
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):
        return self.proj(x + x.mean(dim=1, keepdim=True))
'''

SOFTMAX_ATTENTION = '''
import torch.nn as nn
import torch.nn.functional as F

class TokenMixer(nn.Module):
    """Causal softmax attention: correct, but quadratic in T."""
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(o.transpose(1, 2).reshape(B, T, C))
'''


def seed_code() -> str:
    return TASK.seed_code()


def prepare_workdir(root: Path, code: str) -> Path:
    """What the sandbox does: a fresh dir with the evaluator, the extra files and program.py."""
    workdir = root / "work"
    workdir.mkdir(parents=True)
    for name in (TASK.evaluator, *TASK.extra_files):
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TASK.root / name, workdir / name)
    (workdir / "program.py").write_text(code)
    return workdir


def run_static_check(tmp_path: Path, code: str) -> dict:
    workdir = prepare_workdir(tmp_path, code)
    proc = subprocess.run(
        [sys.executable, TASK.rules.static_check.script, "program.py", "results"],
        cwd=workdir, capture_output=True, text=True, timeout=TASK.rules.static_check.timeout_s,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads((workdir / "results" / "check.json").read_text())


def run_evaluator(tmp_path: Path, code: str, settings: dict, stage: str = "quick") -> EvaluationReport:
    workdir = prepare_workdir(tmp_path, code)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EVOFORGE_STAGE_SETTINGS": json.dumps(settings)}
    proc = subprocess.run(
        [sys.executable, TASK.evaluator, "program.py", "results", "--stage", stage],
        cwd=workdir, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return EvaluationReport.model_validate_json((workdir / "results" / "metrics.json").read_text())


@pytest.fixture
def task_module(monkeypatch):
    """Import one of the task's own modules (they import each other as siblings) and forget them afterwards."""
    names = ("corpus", "data", "settings", "static_check", "lm")
    monkeypatch.syspath_prepend(str(TASK.root))
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield importlib.import_module
    for name in names:
        sys.modules.pop(name, None)


def test_task_is_valid_and_ships_its_files():
    assert [s.name for s in TASK.stages] == ["quick", "full"]
    assert TASK.stage("quick").timeout_s <= 600
    assert TASK.rules.static_check is not None and TASK.rules.static_check.script == "static_check.py"
    assert "# EVOLVE-BLOCK-START" in seed_code() and "# EVOLVE-BLOCK-END" in seed_code()
    assert len(TASK.cognition_files()) >= 5


def test_seed_passes_the_static_check(tmp_path):
    check = run_static_check(tmp_path, seed_code())
    assert check["ok"] is True, check["reasons"]
    assert check["reasons"] == []
    for name in ("flops", "saved_memory"):  # deterministic; wall time is too noisy here to pin down
        assert 0.9 < check["measurements"][name]["exponent"] < 1.1, check["measurements"]


def test_non_causal_candidate_is_rejected_with_a_causality_reason(tmp_path):
    check = run_static_check(tmp_path, NON_CAUSAL)
    assert check["ok"] is False
    assert any(r.startswith("causality") and "positions ≥ 1" in r for r in check["reasons"]), check["reasons"]


def test_softmax_attention_is_rejected_by_the_subquadratic_rule(tmp_path):
    check = run_static_check(tmp_path, SOFTMAX_ATTENTION)
    assert check["ok"] is False
    assert any(r.startswith("sub-quadratic rule: flops grows like T^1.") for r in check["reasons"]), check["reasons"]
    assert not any("causality" in r for r in check["reasons"]), "softmax attention with is_causal=True is causal"


def test_parameter_budget_and_the_closed_form_seed_count(task_module):
    import torch

    static_check = task_module("static_check")
    seed = static_check.load_program(TASK.program_path, "seed_for_budget")
    for d_model, n_heads in ((64, 4), (96, 3), (16, 2)):
        mixer = seed.TokenMixer(d_model, n_heads)
        assert sum(p.numel() for p in mixer.parameters()) == static_check.deltanet_mixer_parameters(d_model, n_heads)
        assert static_check.check_parameter_budget(mixer, d_model, n_heads) == []
    wide = static_check.build_mixer(seed, 64, 4)
    wide.extra = torch.nn.Linear(64, 256)
    (reason,) = static_check.check_parameter_budget(wide, 64, 4)
    assert reason.startswith("parameter budget: TokenMixer(64, 4) has 34,064 parameters, more than 1.5 × the DeltaNet seed's 17,424")


def test_shape_bug_gives_a_traceback_in_metrics(tmp_path):
    buggy = seed_code().replace("self.n_heads, self.head_dim).transpose", "self.head_dim, self.n_heads + 1).transpose")
    assert buggy != seed_code()
    report = run_evaluator(tmp_path, buggy, TINY_SETTINGS)
    assert report.valid is False and report.score is None
    assert report.error.startswith("RuntimeError while building and checking TokenMixer(16, 2): shape")
    assert 'File "' in report.traceback and "program.py" in report.traceback and "view" in report.traceback


def test_seed_against_the_baseline_scores_zero(tmp_path):
    report = run_evaluator(tmp_path, seed_code(), TINY_SETTINGS)
    assert report.valid is True, report.error
    assert report.score == pytest.approx(0.0, abs=1e-9)
    m = report.metrics
    assert m["mqar_accuracy"] == m["baseline_mqar_accuracy"] and m["lm_loss"] == m["baseline_lm_loss"]
    for key in ("train_tokens_per_s", "activation_mb", "params_mixer", "lm_bits_per_byte", "mqar_accuracy_T48_pairs4"):
        assert m[key] > 0, key
    assert 0 <= m["mqar_accuracy"] <= 1
    curves = report.artifacts["curves"]
    assert curves["candidate"]["step"] == [3, 6] and len(curves["baseline"]["train_loss_lm"]) == 6
    assert set(report.artifacts["benchmarks"]) >= {"mqar_accuracy", "lm_loss", "mqar_accuracy_T32_pairs2"}
    assert report.artifacts["baseline_source"] == "computed in this run"
    assert "MQAR recall" in report.feedback and "Held-out LM loss" in report.feedback


def test_a_cached_baseline_is_reused_when_settings_match(tmp_path):
    settings = {**TINY_SETTINGS, "benchmarks": ["mqar"], "baseline_cache_dir": str(tmp_path / "cache")}
    first = run_evaluator(tmp_path / "a", seed_code(), settings)
    assert first.artifacts["baseline_source"] == "computed in this run"
    (cache_file,) = (tmp_path / "cache").glob("baseline-*.json")
    second = run_evaluator(tmp_path / "b", seed_code(), settings)
    assert second.artifacts["baseline_source"] == f"cache file {cache_file}"
    assert second.valid and second.score == pytest.approx(0.0, abs=1e-9)


def test_a_too_slow_candidate_is_stopped_with_a_clear_error(tmp_path):
    report = run_evaluator(tmp_path, seed_code(), {**TINY_SETTINGS, "steps": 12, "max_slowdown": 0.001})
    assert report.valid is False and report.traceback is None
    assert report.error.startswith("candidate: 5 steps took") and "(max_slowdown=0.001 × DeltaNet's" in report.error


def test_unknown_setting_is_an_evaluator_error(tmp_path):
    report = run_evaluator(tmp_path, seed_code(), {"stepz": 3})
    assert report.valid is False
    assert "unknown settings ['stepz']" in report.error and report.traceback is None


def test_scale_configs_load_through_the_config_setting(task_module):
    settings = task_module("settings")
    explore = settings.build_settings({"config": "configs/exploration_20m.yaml"}, TASK.root)
    assert (explore.d_model, explore.n_layers, explore.steps, explore.device) == (512, 8, 2000, "cuda")
    verify = settings.build_settings({"config": "configs/verification_340m.yaml", "steps": 10}, TASK.root)
    assert (verify.d_model, verify.n_layers, verify.steps) == (1024, 24, 10)
    with pytest.raises(ValueError, match="setting config='nope.yaml': no such file"):
        settings.build_settings({"config": "nope.yaml"}, TASK.root)


def test_settings_come_from_the_environment_else_from_task_yaml(task_module, monkeypatch):
    settings = task_module("settings")
    monkeypatch.delenv("EVOFORGE_STAGE_SETTINGS", raising=False)
    quick = settings.stage_settings("quick", TASK.root)
    assert quick.d_model == TASK.stage("quick").settings["d_model"] and quick.benchmarks == ("mqar",)
    monkeypatch.setenv("EVOFORGE_STAGE_SETTINGS", json.dumps({"steps": 7, "benchmarks": "lm"}))
    from_env = settings.stage_settings("quick", TASK.root)
    assert (from_env.steps, from_env.benchmarks, from_env.d_model) == (7, ("lm",), settings.Settings().d_model)
    monkeypatch.setenv("EVOFORGE_STAGE_SETTINGS", "[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object, got list"):
        settings.stage_settings("quick", TASK.root)


def test_mqar_targets_are_the_values_bound_to_the_queried_keys(task_module):
    import torch

    data = task_module("data")
    inputs, targets = data.mqar_batch(torch.Generator().manual_seed(0), 4, 40, 6, 16, 16)
    for x, y in zip(inputs.tolist(), targets.tolist(), strict=True):
        pairs = dict(zip(x[0:12:2], x[1:12:2], strict=True))
        queries = [(x[p], y[p]) for p in range(40) if y[p] != data.IGNORE]
        assert len(queries) == 6 and all(pairs[key] == value for key, value in queries)
    with pytest.raises(ValueError, match="seq_len ≥ 4·num_pairs"):
        data.mqar_batch(torch.Generator(), 1, 20, 6, 16, 16)


def test_generated_corpus_is_deterministic(task_module):
    corpus = task_module("corpus")
    text = corpus.generate_corpus(5000, seed=3)
    assert text == corpus.generate_corpus(5000, seed=3) != corpus.generate_corpus(5000, seed=4)
    assert len(text) >= 5000 and text.isascii() and "Where was the" in text


def test_readme_documents_settings_scales_and_the_baseline():
    readme = (TASK.root / "README.md").read_text()
    for needle in ("configs/exploration_20m.yaml", "EVOFORGE_STAGE_SETTINGS", "baseline_cache_dir"):
        assert needle in readme, needle
    assert textwrap.dedent(TASK.description).startswith("Evolve a linear-attention token mixer")
