"""Train the fixed causal LM with a given token mixer and measure it; the one code path for candidate and
baseline alike, so identical settings and seeds give identical numbers."""

from __future__ import annotations

import math
import statistics
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:  # run with this task's directory on sys.path; type-checked as part of the package
    from evoforge.tasks.linear_attention.data import (
        IGNORE,
        MQAR_OFFSET,
        TEXT_VOCAB,
        TextData,
        mqar_batch,
        mqar_vocab,
    )
    from evoforge.tasks.linear_attention.lm import CausalLM, count_parameters, mixer_parameters
    from evoforge.tasks.linear_attention.settings import Settings
else:
    from data import IGNORE, MQAR_OFFSET, TEXT_VOCAB, TextData, mqar_batch, mqar_vocab
    from lm import CausalLM, count_parameters, mixer_parameters
    from settings import Settings


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TooSlow(RuntimeError):
    """Training would take longer than it may (max_slowdown × the baseline's time, or max_train_seconds)."""


@dataclass
class RunResult:
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)


def pick_device(settings: Settings) -> torch.device:
    if settings.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("setting device='cuda' but torch sees no CUDA device")
    return torch.device(settings.device)


def _autocast(device: torch.device, settings: Settings) -> AbstractContextManager[object]:
    if device.type != "cuda" or settings.amp_dtype == "float32":
        return nullcontext()
    return torch.autocast("cuda", dtype=getattr(torch, settings.amp_dtype))


def _lr_at(step: int, settings: Settings) -> float:
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return settings.lr * (settings.min_lr_ratio + (1 - settings.min_lr_ratio) * cosine)


def _optimizer(model: nn.Module, settings: Settings) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.95))


def _loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits: torch.Tensor = model(inputs)
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def activation_megabytes(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Bytes autograd keeps for the backward of one training step (parameters excluded): a deterministic
    memory figure that works on CPU, where torch keeps no allocator statistics."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_storages:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _loss(model, inputs, targets)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values()) / 2**20


def _subsample(values: list[float], points: int) -> list[float]:
    """Window means, so a noisy per-step curve keeps its shape in `points` numbers."""
    if len(values) <= points:
        return [round(v, 5) for v in values]
    edges = [round(i * len(values) / points) for i in range(points + 1)]
    return [round(sum(values[a:b]) / (b - a), 5) for a, b in zip(edges, edges[1:], strict=False) if b > a]


class Benchmarks:
    """Fixed training streams and evaluation sets, built once and shared by every model trained in a run."""

    def __init__(self, settings: Settings, device: torch.device) -> None:
        self.s, self.device = settings, device
        self.text = (
            TextData(settings.lm_corpus, settings.lm_corpus_chars, settings.seed) if "lm" in settings.benchmarks else None
        )
        eval_gen = torch.Generator().manual_seed(settings.seed + 1)
        self.mqar_eval: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if "mqar" in settings.benchmarks:
            for seq_len in (settings.mqar_seq_len, *settings.mqar_eval_seq_lens):
                for pairs in settings.mqar_num_pairs:
                    name = f"T{seq_len}_pairs{pairs}"
                    self.mqar_eval[name] = self._mqar(eval_gen, settings.mqar_eval_examples, seq_len, pairs)
        self.lm_eval = (
            [self.text.batch(eval_gen, settings.batch_size, settings.lm_seq_len, held_out=True)
             for _ in range(settings.lm_eval_batches)]
            if self.text else []
        )  # fmt: skip

    @property
    def vocab_size(self) -> int:
        return MQAR_OFFSET + mqar_vocab(self.s.mqar_num_keys, self.s.mqar_num_values) if "mqar" in self.s.benchmarks else TEXT_VOCAB

    def _mqar(self, gen: torch.Generator, n: int, seq_len: int, pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
        return mqar_batch(gen, n, seq_len, pairs, self.s.mqar_num_keys, self.s.mqar_num_values)

    def train_batches(self, gen: torch.Generator, step: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        batches = {}
        if "mqar" in self.s.benchmarks:
            pairs = self.s.mqar_num_pairs[step % len(self.s.mqar_num_pairs)]
            batches["mqar"] = self._mqar(gen, self.s.batch_size, self.s.mqar_seq_len, pairs)
        if self.text is not None:
            batches["lm"] = self.text.batch(gen, self.s.batch_size, self.s.lm_seq_len)
        return {k: (x.to(self.device), y.to(self.device)) for k, (x, y) in batches.items()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, full: bool) -> dict[str, float]:
        """Recall accuracy per MQAR set and held-out LM loss; `full=False` (for the curves) uses one batch
        of each training-length MQAR set and the first LM batch."""
        model.eval()
        out: dict[str, float] = {}
        with _autocast(self.device, self.s):
            for name, (inputs, targets) in self.mqar_eval.items():
                if not full and not name.startswith(f"T{self.s.mqar_seq_len}_"):
                    continue
                correct = total = 0
                for i in range(0, len(inputs) if full else self.s.batch_size, self.s.batch_size):
                    x, y = inputs[i : i + self.s.batch_size].to(self.device), targets[i : i + self.s.batch_size].to(self.device)
                    pred = model(x).argmax(-1)
                    mask = y != IGNORE
                    correct += int((pred[mask] == y[mask]).sum())
                    total += int(mask.sum())
                out[f"mqar_accuracy_{name}"] = correct / total
            lm_sets = self.lm_eval if full else self.lm_eval[:1]
            if lm_sets:
                losses = [float(_loss(model, x.to(self.device), y.to(self.device))) for x, y in lm_sets]
                out["lm_loss"] = sum(losses) / len(losses)
        train_len = [v for k, v in out.items() if k.startswith(f"mqar_accuracy_T{self.s.mqar_seq_len}_")]
        if train_len:
            out["mqar_accuracy"] = sum(train_len) / len(train_len)
        model.train()
        return out


def train_and_measure(
    mixer_cls: type[nn.Module], bench: Benchmarks, label: str, max_seconds: float | None = None, limit_reason: str = ""
) -> RunResult:
    """Train a fresh model with `mixer_cls` for `steps` steps and measure it. Raises TrainingDiverged,
    TooSlow (when the projected training time exceeds `max_seconds`, explained by `limit_reason`), or whatever
    the mixer raises."""
    s, device = bench.s, bench.device
    torch.manual_seed(s.seed)
    model = CausalLM(mixer_cls, bench.vocab_size, s.d_model, s.n_layers, s.n_heads, s.mlp_ratio).to(device)
    optimizer = _optimizer(model, s)
    data_gen = torch.Generator().manual_seed(s.seed + 2)
    result = RunResult()
    first = bench.train_batches(torch.Generator().manual_seed(s.seed + 3), 0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result.metrics["activation_mb"] = round(sum(activation_megabytes(model, *b) for b in first.values()), 3)
    losses: dict[str, list[float]] = {name: [] for name in first}
    curve: dict[str, list[float]] = {"step": []}
    tokens = train_seconds = 0.0
    step_seconds: list[float] = []
    for step in range(s.steps):
        batches = bench.train_batches(data_gen, step)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, s)
        started = time.perf_counter()
        with _autocast(device, s):
            parts = {name: _loss(model, x, y) for name, (x, y) in batches.items()}
        loss = torch.stack(list(parts.values())).sum()
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"{label}: training loss became {float(loss)} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_seconds.append(time.perf_counter() - started)
        train_seconds += step_seconds[-1]
        tokens += sum(x.numel() for x, _ in batches.values())
        for name, value in parts.items():
            losses[name].append(float(value.detach()))
        if max_seconds is not None and step >= 4:
            # median step time, so one slow first step (allocation, lazy init) does not condemn a candidate
            projected = train_seconds + statistics.median(step_seconds[-20:]) * (s.steps - step - 1)
            if projected > max_seconds:
                raise TooSlow(
                    f"{label}: {step + 1} steps took {train_seconds:.1f}s, so {s.steps} steps would take "
                    f"≈{projected:.0f}s, more than the {max_seconds:.0f}s allowed ({limit_reason})"
                )
        if (step + 1) % s.eval_every == 0 or step + 1 == s.steps:
            curve["step"].append(step + 1)
            for key, score in bench.evaluate(model, full=False).items():
                curve.setdefault(f"eval_{key}", []).append(round(score, 5))
    final = bench.evaluate(model, full=True)
    result.metrics.update({k: round(v, 5) for k, v in final.items()})
    if "lm_loss" in final:
        result.metrics["lm_bits_per_byte"] = round(final["lm_loss"] / math.log(2), 5)
    result.metrics.update(
        params_total=count_parameters(model),
        params_mixer=mixer_parameters(model),
        train_seconds=round(train_seconds, 2),
        train_tokens_per_s=round(tokens / max(train_seconds, 1e-9), 1),
    )
    if device.type == "cuda":
        result.metrics["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    for name, values in losses.items():
        result.metrics[f"{name}_final_train_loss"] = round(sum(values[-10:]) / len(values[-10:]), 5)
        result.curves[f"train_loss_{name}"] = _subsample(values, s.curve_points)
    result.curves["train_loss_steps"] = _subsample([float(i + 1) for i in range(s.steps)], s.curve_points)
    result.curves.update(curve)
    return result
