"""Static check of a candidate rule: `python static_check.py PROGRAM RESULTS_DIR` writes RESULTS_DIR/check.json.

Rejects, before any training: a program that breaks the interface; one that reaches outside it (imports other
than torch/math/typing/functools/dataclasses, file or process access, `open`, `eval`/`exec`, dunder attributes
such as `__globals__`, importing the evaluator or the environment); and a rule whose loss or gradients are not
finite on a probe batch.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import signal
import sys
import traceback
from pathlib import Path

ALLOWED_IMPORTS = frozenset({"torch", "math", "typing", "functools", "dataclasses", "__future__"})
FORBIDDEN_NAMES = frozenset({"open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "getattr",
                             "setattr", "delattr", "input", "breakpoint", "__builtins__", "__loader__", "__spec__"})
FORBIDDEN_ATTRIBUTES = frozenset({"load", "save", "hub", "from_file", "open", "system", "popen", "spawn",
                                  "read_text", "read_bytes", "write_text", "write_bytes", "_C", "ops", "library"})
INTERFACE = {"compute_advantages": 1, "policy_loss": 5}
PROBE_SECONDS = 30


def ast_reasons(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"syntax error at line {exc.lineno}: {exc.msg}"]
    reasons = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                names = ["." * node.level + (node.module or "")]
            for name in names:
                if name.split(".")[0] not in ALLOWED_IMPORTS:
                    reasons.append(f"line {line}: imports {name!r}; only {sorted(ALLOWED_IMPORTS)} may be imported")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            reasons.append(f"line {line}: uses {node.id!r}, which reaches outside the rule's interface")
        elif isinstance(node, ast.Attribute) and (
            node.attr in FORBIDDEN_ATTRIBUTES or (node.attr.startswith("__") and node.attr != "__init__")
        ):
            reasons.append(f"line {line}: accesses attribute {node.attr!r}, which reaches outside the interface")
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name, arity in INTERFACE.items():
        fn = functions.get(name)
        if fn is None:
            reasons.append(f"missing the module-level function {name}()")
        elif len(fn.args.args) < arity and fn.args.vararg is None:
            reasons.append(f"{name}() must accept {arity} positional argument(s), it takes {len(fn.args.args)}")
    return reasons


def _timeout(signum, frame):
    raise TimeoutError(f"the probe batch took longer than {PROBE_SECONDS}s")


def probe_reasons(program: Path) -> list[str]:
    """Run the rule once on a small synthetic batch: shapes, finiteness, and a gradient that flows."""
    import torch

    torch.manual_seed(0)
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(PROBE_SECONDS)
    try:
        spec = importlib.util.spec_from_file_location("candidate", program)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load a Python module from {program}")
        rule = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(rule)
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
    except Exception as exc:  # the candidate raised while probed: that is the finding
        return [f"the probe batch raised {type(exc).__name__}: {exc}", traceback.format_exc(limit=3)]
    finally:
        signal.alarm(0)
    return []


def main() -> None:
    program, results_dir = Path(sys.argv[1]), Path(sys.argv[2])
    results_dir.mkdir(parents=True, exist_ok=True)
    reasons = ast_reasons(program.read_text())
    if not reasons:
        reasons = probe_reasons(program)
    (results_dir / "check.json").write_text(json.dumps({"ok": not reasons, "reasons": reasons}, indent=1))


if __name__ == "__main__":
    main()
