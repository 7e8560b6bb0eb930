"""Training and evaluation data: multi-query associative recall (MQAR) and byte-level text.

Token ids: text uses bytes 0..255; MQAR uses ids from `MQAR_OFFSET` on (0 filler, then keys, then values),
so one vocabulary serves a model trained on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # run with this task's directory on sys.path; type-checked as part of the package
    from evoforge.tasks.linear_attention.corpus import generate_corpus
else:
    from corpus import generate_corpus

TEXT_VOCAB = 256
MQAR_OFFSET = TEXT_VOCAB
IGNORE = -100


def mqar_vocab(num_keys: int, num_values: int) -> int:
    return 1 + num_keys + num_values


def mqar_batch(
    generator: torch.Generator,
    batch_size: int,
    seq_len: int,
    num_pairs: int,
    num_keys: int,
    num_values: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (batch_size, seq_len). The sequence opens with `num_pairs` key-value pairs;
    afterwards every key comes back once, at a random even offset, followed by its value. The target at a
    returning key is its value (everything else is IGNORE), so recall accuracy is measured there."""
    context = 2 * num_pairs
    slots = (seq_len - context) // 2
    if num_pairs > num_keys or slots < num_pairs:
        raise ValueError(
            f"mqar: num_pairs={num_pairs} needs num_keys ≥ num_pairs (got {num_keys}) and "
            f"seq_len ≥ 4·num_pairs (got seq_len={seq_len})"
        )
    B, P = batch_size, num_pairs
    keys = torch.rand(B, num_keys, generator=generator).argsort(dim=-1)[:, :P] + 1
    values = torch.randint(num_values, (B, P), generator=generator) + 1 + num_keys
    inputs = torch.zeros(B, seq_len, dtype=torch.long)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    query_slots = torch.rand(B, slots, generator=generator).argsort(dim=-1)[:, :P]
    query_pos = context + 2 * query_slots  # (B, P): where key j comes back
    inputs.scatter_(1, query_pos, keys)
    inputs.scatter_(1, query_pos + 1, values)
    targets = torch.full((B, seq_len), IGNORE, dtype=torch.long)
    targets.scatter_(1, query_pos, values)
    inputs += MQAR_OFFSET
    targets = torch.where(targets == IGNORE, targets, targets + MQAR_OFFSET)
    return inputs, targets


class TextData:
    """Byte-level next-token data over a corpus split 90/10 into training and held-out text."""

    def __init__(self, source: str, n_chars: int, seed: int):
        if source == "generated":
            text = generate_corpus(n_chars, seed=seed)
        else:
            path = Path(source).expanduser()
            if not path.is_file():
                raise ValueError(f"lm_corpus must be 'generated' or a path to a text file, got {source!r}")
            text = path.read_text(encoding="utf-8", errors="replace")[:n_chars]
        data = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()
        split = int(0.9 * len(data))
        self.train, self.held_out = data[:split], data[split:]
        self.n_bytes = len(data)

    def batch(
        self, generator: torch.Generator, batch_size: int, seq_len: int, held_out: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: inputs (B, seq_len) and the next bytes as targets."""
        data = self.held_out if held_out else self.train
        if len(data) <= seq_len + 1:
            raise ValueError(f"lm corpus split has {len(data)} bytes, too few for lm_seq_len={seq_len}")
        starts = torch.randint(len(data) - seq_len - 1, (batch_size,), generator=generator)
        windows = torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()])
        return windows[:, :-1], windows[:, 1:]
