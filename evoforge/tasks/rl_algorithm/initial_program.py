"""Seed rule: GRPO (Shao et al., 2024) — group-normalised advantages, PPO-style clipped ratio, k3 KL to the
reference policy, token losses averaged per sequence, then over sequences."""

import torch

# EVOLVE-BLOCK-START
CLIP_EPS = 0.2
KL_COEF = 0.04
STD_EPS = 1e-4


def compute_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """rewards [B, G] (B prompts, G sampled completions each; 1.0 = exact match) -> advantages [B, G]."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + STD_EPS)


def policy_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor,
                advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scalar loss to minimise. logp_* [B, G, T]: per-token log-probs of the sampled completions under the policy
    being trained (has grad), the sampling policy and the frozen reference; advantages [B, G]; mask [B, G, T] is
    1.0 on completion tokens (through EOS), 0.0 on padding."""
    ratio = torch.exp(logp_new - logp_old)
    adv = advantages.unsqueeze(-1)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - CLIP_EPS, 1 + CLIP_EPS) * adv)
    log_ref_ratio = logp_ref - logp_new
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    per_token = -(surrogate - KL_COEF * kl)
    per_sequence = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_sequence.mean()
# EVOLVE-BLOCK-END
