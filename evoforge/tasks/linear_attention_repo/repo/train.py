"""The training recipe: optimizer, learning-rate schedule and loop. Hyperparameters come from config.yaml."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F


def make_optimizer(model: torch.nn.Module, recipe: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe.get("momentum", 0.0))


def lr_at(step: int, steps: int, recipe: dict[str, Any]) -> float:
    return recipe["lr"]


def train(model: torch.nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int,
          recipe: dict[str, Any]) -> float:
    """Train for exactly `steps` batches; returns the last loss."""
    optimizer = make_optimizer(model, recipe)
    model.train()
    loss = torch.tensor(0.0)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, recipe)
        inputs, targets = next(batches)
        logits = model(inputs)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss)
