"""Static check of a candidate rule: `python static_check.py PROGRAM RESULTS_DIR` writes RESULTS_DIR/check.json.

Rejects, before any training: a program that breaks the interface; one that reaches outside it (imports other
than torch/math/typing/functools/dataclasses, file or process access, `open`, `eval`/`exec`, dunder attributes
such as `__globals__`, importing the evaluator or the environment); and a rule whose loss or gradients are not
finite on a probe batch.
"""

from __future__ import annotations

from pathlib import Path

from evoforge.tasks.task_scripts import (
    load_candidate,
    probe_deadline,
    probe_failure,
    reach_reasons,
    static_check_main,
)

ALLOWED_IMPORTS = frozenset({"torch", "math", "typing", "functools", "dataclasses", "__future__"})
FORBIDDEN_NAMES = frozenset({"open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "getattr",
                             "setattr", "delattr", "input", "breakpoint", "__builtins__", "__loader__", "__spec__"})
FORBIDDEN_ATTRIBUTES = frozenset({"load", "save", "hub", "from_file", "open", "system", "popen", "spawn",
                                  "read_text", "read_bytes", "write_text", "write_bytes", "_C", "ops", "library"})
INTERFACE = {"compute_advantages": 1, "policy_loss": 5}
PROBE_SECONDS = 30


def ast_reasons(source: str) -> list[str]:
    return reach_reasons(source, allowed_imports=ALLOWED_IMPORTS, forbidden_names=FORBIDDEN_NAMES,
                         forbidden_attributes=FORBIDDEN_ATTRIBUTES, interface=INTERFACE)


def probe_reasons(program: Path) -> list[str]:
    """Run the rule once on a small synthetic batch: shapes, finiteness, and a gradient that flows."""
    import torch

    torch.manual_seed(0)
    try:
        with probe_deadline(PROBE_SECONDS):
            rule = load_candidate(program)
            rewards = torch.tensor([[0.0] * 8, [1.0] * 8, [1.0, 0, 0, 0, 0, 0, 0, 0], [1.0, 1, 0, 1, 0, 1, 1, 0]])
            adv = rule.compute_advantages(rewards.clone())
            if not isinstance(adv, torch.Tensor) or tuple(adv.shape) != (4, 8):
                got = tuple(adv.shape) if isinstance(adv, torch.Tensor) else type(adv).__name__
                return [f"compute_advantages must return a tensor shaped like rewards (4, 8) on the probe, got {got}"]
            if not torch.isfinite(adv).all():
                return ["compute_advantages returned non-finite values on the probe (e.g. a group with equal rewards)"]
            logp_old = -torch.rand(4, 8, 5) * 2
            logp_new = (logp_old + 0.05 * torch.randn(4, 8, 5)).requires_grad_(True)
            logp_ref = logp_old + 0.1 * torch.randn(4, 8, 5)
            mask = torch.ones(4, 8, 5)
            mask[:, :, 3:] = (torch.rand(4, 8, 2) > 0.5).float()
            loss = rule.policy_loss(logp_new, logp_old, logp_ref, adv.detach(), mask)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                return [f"policy_loss must return a scalar tensor, got {type(loss).__name__} "
                        f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}".strip()]
            if not torch.isfinite(loss):
                return [f"policy_loss is not finite on the probe batch: {loss.item()}"]
            if not loss.requires_grad:
                return ["policy_loss does not depend on logp_new: no gradient would reach the policy"]
            loss.backward()
            if logp_new.grad is None or not torch.isfinite(logp_new.grad).all():
                return ["policy_loss gives non-finite gradients on the probe batch"]
            if not logp_new.grad.abs().sum() > 0:
                return ["policy_loss gives an all-zero gradient on a probe batch with non-zero advantages"]
    except Exception as exc:  # the candidate raised (or ran out of time) while probed: that is the finding
        return probe_failure(exc)
    return []


if __name__ == "__main__":
    static_check_main(ast_reasons, probe_reasons)
