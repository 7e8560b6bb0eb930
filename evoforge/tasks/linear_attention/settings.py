"""Stage settings of the linear_attention evaluator: one flat dataclass, filled from (lowest to highest)
the defaults below, a `config` YAML file (e.g. configs/exploration_20m.yaml) and the stage's JSON settings
(env EVOFORGE_STAGE_SETTINGS, or task.yaml beside the evaluator when run by hand)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STAGE_SETTINGS_ENV = "EVOFORGE_STAGE_SETTINGS"


@dataclass(frozen=True)
class Settings:
    """Defaults are the quick stage's scale."""

    seed: int = 0
    device: str = "auto"
    """auto (cuda when present) | cpu | cuda"""
    threads: int = 0
    """torch CPU threads; 0 = the cores this process may use."""
    amp_dtype: str = "bfloat16"
    """autocast dtype on CUDA (bfloat16 | float16 | float32); CPU runs in float32."""
    # the model
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    mlp_ratio: float = 2.0
    # training
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    benchmarks: tuple[str, ...] = ("mqar",)
    """which of mqar | lm are trained on (summed losses) and scored"""
    # multi-query associative recall
    mqar_seq_len: int = 64
    mqar_num_pairs: tuple[int, ...] = (4, 8)
    """training cycles through these; the evaluation reports each"""
    mqar_num_keys: int = 32
    mqar_num_values: int = 32
    mqar_eval_examples: int = 256
    mqar_eval_seq_lens: tuple[int, ...] = ()
    """extra evaluation lengths (length generalisation), reported per length, not scored"""
    # byte-level language modelling
    lm_corpus: str = "generated"
    """'generated' (corpus.py, offline) or a path to a UTF-8 text file"""
    lm_corpus_chars: int = 400_000
    lm_seq_len: int = 128
    lm_eval_batches: int = 8
    # reporting and scoring
    eval_every: int = 50
    curve_points: int = 40
    score_weights: dict[str, float] = field(default_factory=lambda: {"mqar": 1.0, "lm": 1.0})
    """score = Σ weight · (candidate − baseline), with mqar = recall accuracy, lm = baseline loss − candidate loss"""
    max_param_ratio: float = 1.5
    """the candidate's mixer may have at most this many times the DeltaNet mixer's parameters"""
    max_slowdown: float | None = 3.0
    """stop a candidate whose training would take more than this many times the baseline's (measured in the
    same run, so a busy machine slows both alike); None disables"""
    max_train_seconds: float | None = None
    """an absolute cap on the candidate's training time; None disables"""
    baseline_cache_dir: str | None = None
    """a writable directory where the baseline's result is cached by settings hash; None computes it per run"""
    config: str | None = None
    """a YAML file of settings applied before the stage's own (relative to the evaluator's directory)"""

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "steps", "batch_size", "mqar_seq_len", "lm_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"setting {name} must be positive, got {getattr(self, name)!r}")
        unknown = set(self.benchmarks) - {"mqar", "lm"}
        if unknown or not self.benchmarks:
            raise ValueError(f"setting benchmarks must be a non-empty subset of ['mqar', 'lm'], got {self.benchmarks!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"setting device must be auto, cpu or cuda, got {self.device!r}")
        if self.amp_dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"setting amp_dtype must be bfloat16, float16 or float32, got {self.amp_dtype!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"setting d_model={self.d_model} must be divisible by n_heads={self.n_heads}")

    def semantic_dict(self) -> dict[str, Any]:
        """Everything that changes a training result (used as the baseline cache key)."""
        skip = {
            "baseline_cache_dir", "config", "max_slowdown", "max_train_seconds", "max_param_ratio", "score_weights",
            "threads",
        }  # fmt: skip
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


_TUPLE_FIELDS = {f.name for f in dataclasses.fields(Settings) if str(f.type).startswith("tuple")}


def build_settings(raw: dict[str, Any], base_dir: Path) -> Settings:
    """Settings from a raw mapping; a `config` key pulls in a YAML file first. Unknown keys are errors."""
    merged: dict[str, Any] = {}
    config = raw.get("config")
    if config:
        path = Path(config) if Path(config).is_absolute() else base_dir / config
        if not path.is_file():
            raise ValueError(f"setting config={config!r}: no such file {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"setting config={config!r}: expected a mapping, got {type(loaded).__name__}")
        merged.update(loaded.get("settings", loaded))
    merged.update(raw)
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(known)}")
    for name in _TUPLE_FIELDS & set(merged):
        value = merged[name]
        merged[name] = tuple(value) if isinstance(value, list | tuple) else (value,)
    return Settings(**merged)


def stage_settings(stage: str, evaluator_dir: Path) -> Settings:
    """The settings for `stage`: EVOFORGE_STAGE_SETTINGS when set (the framework sets it), else the stage's
    settings in task.yaml beside the evaluator (running the evaluator by hand in the task directory)."""
    env = os.environ.get(STAGE_SETTINGS_ENV)
    if env:
        try:
            raw = json.loads(env)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{STAGE_SETTINGS_ENV} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"{STAGE_SETTINGS_ENV} must hold a JSON object, got {type(raw).__name__}")
        return build_settings(raw, evaluator_dir)
    task_yaml = evaluator_dir / "task.yaml"
    if task_yaml.is_file():
        stages = (yaml.safe_load(task_yaml.read_text()) or {}).get("stages", [])
        for entry in stages:
            if entry.get("name") == stage:
                return build_settings(entry.get("settings") or {}, evaluator_dir)
        raise ValueError(f"stage {stage!r} is not in {task_yaml}")
    return build_settings({}, evaluator_dir)
