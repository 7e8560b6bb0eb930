"""The verifiable-reward environment: a tiny transformer policy learns multi-digit addition on CPU.

Prompt: the digits of a and b (zero-padded to `digits`), '+', '='. Completion: the digits of a + b, least
significant first, then EOS (reversed order is the standard trick that lets a small causal model carry).
Reward: 1 for an exact match (digits and EOS), else 0. A brief supervised warm start brings greedy accuracy to
`warm_target` so that sampled groups carry signal; RL then runs with the candidate's advantage rule and loss.
Everything is seeded and single-threaded, so a run is a pure function of (rule, settings, seed).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PLUS, EQUALS, EOS, PAD = 10, 11, 12, 13
VOCAB = 14


@dataclass(frozen=True)
class EnvConfig:
    digits: int = 2
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    warm_target: float = 0.25
    warm_max_steps: int = 1500
    warm_lr: float = 3e-3
    warm_batch: int = 64
    steps: int = 60
    prompts_per_step: int = 32
    group_size: int = 8
    inner_epochs: int = 2
    lr: float = 1e-3
    grad_clip: float = 1.0
    eval_every: int = 10
    eval_problems: int = 500

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> EnvConfig:
        known = {k: v for k, v in settings.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def answer_len(self) -> int:
        return self.digits + 2  # up to digits+1 sum digits, then EOS


class _Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        out: torch.Tensor = x + self.mlp(self.ln2(x))
        return out


class Policy(nn.Module):
    """A decoder-only transformer over the 14-token vocabulary."""

    def __init__(self, cfg: EnvConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, cfg.d_model)
        self.pos = nn.Embedding(3 * cfg.digits + 4, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg.d_model, cfg.heads) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # idx [B, T] -> logits [B, T, VOCAB]
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.ln(x))
        return logits


def problems(cfg: EnvConfig, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    hi = 10**cfg.digits
    return torch.randint(0, hi, (n,), generator=gen), torch.randint(0, hi, (n,), generator=gen)


def _digits(x: torch.Tensor, count: int) -> torch.Tensor:  # x [N] -> [N, count], most significant first
    powers = 10 ** torch.arange(count - 1, -1, -1)
    return (x[:, None] // powers) % 10


def encode(cfg: EnvConfig, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n = len(a)
    sep = torch.full((n, 1), PLUS), torch.full((n, 1), EQUALS)
    return torch.cat([_digits(a, cfg.digits), sep[0], _digits(b, cfg.digits), sep[1]], 1)


def answers(cfg: EnvConfig, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, answer_len]: sum digits least significant first, EOS, then PAD."""
    total = a + b
    rev = _digits(total, cfg.digits + 1).flip(1)
    length = torch.where(total > 0, torch.floor(torch.log10(total.clamp(min=1).double())).long() + 1, 1)
    out = torch.full((len(a), cfg.answer_len), PAD)
    pos = torch.arange(cfg.answer_len)[None]
    out = torch.where(pos < length[:, None], F.pad(rev, (0, 1), value=PAD), out)
    return torch.where(pos == length[:, None], EOS, out)


def completion_mask(tokens: torch.Tensor) -> torch.Tensor:
    """1.0 on every token up to and including the first EOS, 0.0 after it."""
    is_eos = (tokens == EOS).long()
    return ((is_eos.cumsum(1) - is_eos) == 0).float()


def rewards(completions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    mask, target_mask = completion_mask(completions), completion_mask(targets)
    same = ((completions == targets) | (target_mask == 0)).all(1)
    return (same & (mask.sum(1) == target_mask.sum(1))).float()


@torch.no_grad()
def generate(policy: Policy, prompts: torch.Tensor, length: int,
             gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample (gen given) or decode greedily (gen None); returns tokens [N, length] and their log-probs."""
    seq, logps = prompts, []
    for _ in range(length):
        logp = F.log_softmax(policy(seq)[:, -1], -1)
        nxt = logp.argmax(-1) if gen is None else torch.multinomial(logp.exp(), 1, generator=gen).squeeze(1)
        logps.append(logp.gather(1, nxt[:, None]).squeeze(1))
        seq = torch.cat([seq, nxt[:, None]], 1)
    return seq[:, prompts.shape[1] :], torch.stack(logps, 1)


def token_logps(policy: Policy, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
    full = torch.cat([prompts, completions], 1)
    logits = policy(full[:, :-1])[:, prompts.shape[1] - 1 :]
    return F.log_softmax(logits, -1).gather(2, completions[:, :, None]).squeeze(2)


@torch.no_grad()
def evaluate_policy(policy: Policy, cfg: EnvConfig, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Greedy exact-match accuracy and the exact expected accuracy of temperature-1 sampling."""
    prompts, targets = encode(cfg, a, b), answers(cfg, a, b)
    greedy, _ = generate(policy, prompts, cfg.answer_len, None)
    logp = token_logps(policy, prompts, targets.clamp(max=EOS)) * completion_mask(targets)
    return {"greedy": rewards(greedy, targets).mean().item(), "sampled": logp.sum(1).exp().mean().item()}


def eval_set(cfg: EnvConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return problems(cfg, cfg.eval_problems, torch.Generator().manual_seed(10_000 + seed))


def warm_start(cfg: EnvConfig, seed: int) -> tuple[Policy, int]:
    """Supervised steps until greedy accuracy on a check set reaches warm_target; returns (policy, steps)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    policy = Policy(cfg)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.warm_lr)
    check = problems(cfg, 200, torch.Generator().manual_seed(20_000 + seed))
    for step in range(cfg.warm_max_steps + 1):
        if step % 10 == 0 and evaluate_policy(policy, cfg, *check)["greedy"] >= cfg.warm_target:
            return policy, step
        a, b = problems(cfg, cfg.warm_batch, gen)
        targets = answers(cfg, a, b)
        logp = token_logps(policy, encode(cfg, a, b), targets.clamp(max=EOS))
        mask = completion_mask(targets)
        loss = -(logp * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy, cfg.warm_max_steps


class RuleError(Exception):
    """The candidate's rule returned something unusable; the message says what and at which step."""


def train_rl(rule: ModuleType, init: Policy, cfg: EnvConfig, seed: int, checkpoint: Callable[[int, Policy], None]) -> list[float]:
    """Run RL with `rule` (compute_advantages, policy_loss) from `init`; returns the mean training reward per step.

    `checkpoint(step, policy)` is called every eval_every steps and at the end, for the caller to score.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(1_000 + seed)
    policy, ref = copy.deepcopy(init), copy.deepcopy(init)
    ref.requires_grad_(False)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    B, G = cfg.prompts_per_step, cfg.group_size
    train_rewards = []
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            checkpoint(step, policy)
        if step == cfg.steps:
            break
        a, b = problems(cfg, B, gen)
        prompts = encode(cfg, a, b).repeat_interleave(G, 0)
        completions, logp_old = generate(policy, prompts, cfg.answer_len, gen)
        r = rewards(completions, answers(cfg, a, b).repeat_interleave(G, 0)).view(B, G)
        train_rewards.append(round(r.mean().item(), 4))
        mask = completion_mask(completions).view(B, G, -1)
        with torch.no_grad():
            logp_ref = token_logps(ref, prompts, completions).view(B, G, -1)
        adv = rule.compute_advantages(r.clone())
        if not isinstance(adv, torch.Tensor) or adv.shape != (B, G):
            got = tuple(adv.shape) if isinstance(adv, torch.Tensor) else type(adv).__name__
            raise RuleError(f"compute_advantages must return a tensor of shape {(B, G)}, got {got} at step {step}")
        if not torch.isfinite(adv).all():
            raise RuleError(f"compute_advantages returned non-finite values at step {step}")
        adv = adv.detach()
        for epoch in range(cfg.inner_epochs):
            logp_new = token_logps(policy, prompts, completions).view(B, G, -1)
            loss = rule.policy_loss(logp_new, logp_old.view(B, G, -1), logp_ref, adv, mask)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise RuleError(f"policy_loss must return a scalar tensor, got {type(loss).__name__} at step {step}")
            if not loss.requires_grad:
                raise RuleError(f"policy_loss must depend on logp_new (no gradient flows) at step {step}")
            if not math.isfinite(loss.item()):
                raise RuleError(f"policy_loss returned {loss.item()} at step {step}, inner epoch {epoch}")
            opt.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
            if not math.isfinite(norm.item()):
                raise RuleError(f"policy_loss gave non-finite gradients at step {step}, inner epoch {epoch}")
            opt.step()
    return train_rewards
