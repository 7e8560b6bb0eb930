"""Child process: one RL run of one rule. `python -I train_child.py PROGRAM INIT_STATE OUT_DIR SETTINGS_JSON SEED`.

Writes OUT_DIR/step_<k>.pt (policy weights at each checkpoint, scored by the parent) and OUT_DIR/result.json
(training rewards, or the rule's error with its traceback). Anything the rule prints goes to stderr.
"""

import importlib.util
import json
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
if TYPE_CHECKING:  # run with this task's directory on sys.path; type-checked as part of the package
    from evoforge.tasks.rl_algorithm import rl_env
else:
    import rl_env


def main() -> None:
    program, init_state, out_dir, settings, seed = sys.argv[1:6]
    out = Path(out_dir)
    sys.stdout = sys.stderr
    torch.set_num_threads(1)
    cfg = rl_env.EnvConfig.from_settings(json.loads(settings))
    init = rl_env.Policy(cfg)
    init.load_state_dict(torch.load(init_state, weights_only=True))
    stage = "import"
    try:
        spec = importlib.util.spec_from_file_location("candidate", program)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load a Python module from {program}")
        rule = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(rule)
        stage = "training"

        def checkpoint(step: int, policy: rl_env.Policy) -> None:
            torch.save(policy.state_dict(), out / f"step_{step:05d}.pt")

        curve = rl_env.train_rl(rule, init, cfg, int(seed), checkpoint)
        result = {"ok": True, "train_reward": curve}
    except rl_env.RuleError as exc:
        result = {"ok": False, "error": str(exc), "traceback": None}
    except Exception as exc:  # the rule raised: report it with its traceback for the Debugger
        result = {"ok": False, "error": f"{stage}: {type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
