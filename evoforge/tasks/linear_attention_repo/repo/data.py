"""Multi-query associative recall (MQAR): key-value pairs, then the keys again in another order; the model must
recall each key's value. Fixed, so the evaluator's held-out batches mean the same for every candidate."""

from __future__ import annotations

import torch


def mqar_batch(batch_size: int, num_pairs: int, num_keys: int, num_values: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (B, 4 * num_pairs - 1): targets are -100 except where the input is a query key.

    Tokens: 0 unused, keys 1..num_keys, values num_keys+1..num_keys+num_values."""
    B, n = batch_size, num_pairs
    keys = torch.stack([torch.randperm(num_keys, generator=generator)[:n] for _ in range(B)]) + 1  # (B, n)
    values = torch.randint(num_keys + 1, num_keys + num_values + 1, (B, n), generator=generator)  # (B, n)
    order = torch.stack([torch.randperm(n, generator=generator) for _ in range(B)])  # (B, n)
    queries, answers = keys.gather(1, order), values.gather(1, order)
    context = torch.stack([keys, values], dim=2).reshape(B, 2 * n)
    recall = torch.stack([queries, answers], dim=2).reshape(B, 2 * n)
    sequence = torch.cat([context, recall], dim=1)  # (B, 4n)
    inputs, targets = sequence[:, :-1], sequence[:, 1:].clone()
    is_query = torch.zeros_like(targets, dtype=torch.bool)
    is_query[:, 2 * n :: 2] = True  # inputs at 2n, 2n+2, ... are the query keys
    targets[~is_query] = -100
    return inputs, targets


def vocab_size(num_keys: int, num_values: int) -> int:
    return num_keys + num_values + 1
