"""The peers of the search benchmark — OpenEvolve and ShinkaEvolve — run on an EvoForge task through the same
model endpoint (behind `proxy.CountingProxy`) and the same evaluator (`evaluation.evaluate_with_evoforge`).

The peers live in their own venv, `benchmarks/peers/.venv`, not in EvoForge's: installing them beside EvoForge
would downgrade what it runs on (`pip install --dry-run` in EvoForge's venv: openai 3.57 → 1.109 and rich 15 →
13.9 for shinka-evolve's instructor 1.3, httpx 0.28 → 0.27 for shinka-evolve's own pin, pillow 13 → 11.3 for
moviepy, tenacity 9.2 → 8.5, python-dateutil 4.0 → 2.9 for botocore). So there is no `bench` extra in
pyproject.toml. Each peer runs as a subprocess of that venv's interpreter, and its evaluator calls back into
EvoForge's venv, so nothing crosses the two.
`ensure_peer_venv()` (or `.venv/bin/python -m benchmarks.peers`) creates it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PEER_REQUIREMENTS = ("openevolve==0.4.0", "shinka-evolve==0.0.7")
PEER_VENV = Path(__file__).resolve().parent / ".venv"
"""Inside benchmarks/peers so that the repository's `.venv/` ignore rule covers it."""
PEER_LABELS = {"openevolve": "openevolve", "shinka": "shinka"}
"""The `system` each peer's evaluations are logged under, by the module it imports."""
INSTALL_HINT = ".venv/bin/python -m benchmarks.peers"


class PeerMissing(RuntimeError):
    """A peer system is not installed; the message says how to install it."""


def peer_venv_python() -> Path:
    """The peer venv's interpreter (it may not exist yet)."""
    return PEER_VENV / "bin" / "python"


def ensure_peer_venv() -> Path:
    """Create the peer venv if needed and pip-install the pinned peers into it; return its interpreter.

    Uses the interpreter EvoForge's venv was made from, so both run the same Python version.
    """
    python = peer_venv_python()
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS], check=True)
    return python


def peer_python(module: str) -> Path:
    """The interpreter that imports `module` (`openevolve` or `shinka`); raises `PeerMissing` if none does."""
    if module not in PEER_LABELS:
        raise ValueError(f"module must be one of {sorted(PEER_LABELS)}, got {module!r}")
    python = peer_venv_python()
    if python.exists():
        probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
        if subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0:
            return python
    raise PeerMissing(f"the peer package {module!r} is not installed in {PEER_VENV}; install the pinned peers "
                      f"({', '.join(PEER_REQUIREMENTS)}) with: {INSTALL_HINT}")


def peer_summary(eval_log: Path, label: str, iterations: int, ended: Any, notes: str) -> dict[str, Any]:
    """What a peer's run came to, read from the evaluation log (the same source for every system).

    `ended` is the `budget.BudgetRun` of the peer's process.
    """
    scores: list[float] = []
    evaluations = 0
    path = Path(eval_log)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                log.warning("skipping a garbled line of %s: %r", path, line[:200])
                continue
            if record.get("system") != label:
                continue
            evaluations += 1
            if record.get("valid"):
                scores.append(float(record["score"]))
    if ended.survivors:
        notes += f"; processes still alive after the kill: {list(ended.survivors)}"
    return {"iterations": iterations, "best_score": max(scores) if scores else None, "evaluations": evaluations,
            "valid": len(scores), "killed": ended.killed, "seconds": ended.seconds, "notes": notes}
