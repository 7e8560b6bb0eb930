"""`python check_tree.py PROGRAM RESULTS_DIR`: the task's own check of a candidate's whole tree, before any
training: the mixer keeps its shape and is strictly causal, train.py keeps `train`, config.yaml holds a sane
recipe. Writes RESULTS_DIR/check.json {ok, reasons, crashed}."""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path

import yaml


def check(tree: Path) -> tuple[list[str], bool]:
    reasons: list[str] = []
    recipe = yaml.safe_load((tree / "config.yaml").read_text(encoding="utf-8")) if (tree / "config.yaml").exists() else {}
    if not isinstance(recipe, dict):
        reasons.append(f"config.yaml must hold a mapping of hyperparameters, got {type(recipe).__name__}")
    else:
        for key in ("steps", "batch_size", "d_model", "n_layers", "n_heads"):
            if key in recipe:
                reasons.append(f"config.yaml: {key!r} is the evaluator's budget, not a recipe setting")
        lr = recipe.get("lr")
        if not isinstance(lr, int | float) or not 0 < lr <= 1:
            reasons.append(f"config.yaml: lr must be a number in (0, 1], got {lr!r}")
    sys.path.insert(0, str(tree))
    try:
        import torch

        # the candidate's own modules, found through the tree on sys.path
        train = importlib.import_module("train")
        TokenMixer = importlib.import_module("mixer").TokenMixer  # noqa: N806 (a class)

        if not callable(getattr(train, "train", None)):
            reasons.append("train.py must define train(model, batches, steps, recipe)")
        torch.manual_seed(0)
        mixer = TokenMixer(32, 2).eval()
        x = torch.randn(2, 12, 32)
        with torch.no_grad():
            out = mixer(x)
            if tuple(out.shape) != (2, 12, 32):
                return [*reasons, f"TokenMixer maps (2, 12, 32) to {tuple(out.shape)}; it must keep the shape"], False
            changed = x.clone()
            changed[:, 8:] = torch.randn(2, 4, 32)
            if not torch.allclose(mixer(changed)[:, :8], out[:, :8], atol=1e-5):
                reasons.append("TokenMixer is not causal: outputs before position 8 change with the inputs after it")
            if not torch.isfinite(out).all():
                reasons.append("TokenMixer gives non-finite outputs on a random input")
    except Exception as exc:  # the candidate raised: a bug for the Debugger, reported with where it happened
        return [f"the check raised {type(exc).__name__}: {exc}", traceback.format_exc(limit=4)], True
    return reasons, False


def main() -> None:
    tree, results = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    results.mkdir(parents=True, exist_ok=True)
    reasons, crashed = check(tree)
    (results / "check.json").write_text(json.dumps({"ok": not reasons, "reasons": reasons, "crashed": crashed}))


if __name__ == "__main__":
    main()
