"""A built-in task's own scripts run exactly as the sandbox runs them: in a work dir holding the scripts and the
candidate as program.py, with the stage's settings in EVOFORGE_STAGE_SETTINGS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from evoforge.tasks.spec import EvaluationReport, TaskSpec


class TaskScripts:
    def __init__(self, task: TaskSpec) -> None:
        self.task = task

    def work_dir(self, tmp_path: Path, program: str) -> Path:
        work = tmp_path / "work"
        work.mkdir(parents=True)
        check = self.task.rules.static_check
        for name in dict.fromkeys([self.task.evaluator, *self.task.extra_files, *([check.script] if check else [])]):
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.task.root / name, work / name)
        (work / "program.py").write_text(program)
        return work

    def evaluate(self, tmp_path: Path, program: str, settings: dict[str, Any], stage: str = "quick") -> EvaluationReport:
        work = self.work_dir(tmp_path, program)
        env = {**os.environ, "EVOFORGE_STAGE_SETTINGS": json.dumps(settings)}
        proc = subprocess.run([sys.executable, self.task.evaluator, "program.py", "results", "--stage", stage],
                              cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return EvaluationReport.model_validate_json((work / "results" / "metrics.json").read_text())

    def static_check(self, tmp_path: Path, program: str) -> dict[str, Any]:
        assert self.task.rules.static_check is not None, f"task {self.task.name!r} has no static check"
        work = self.work_dir(tmp_path, program)
        subprocess.run([sys.executable, self.task.rules.static_check.script, "program.py", "check"], cwd=work,
                       check=True, timeout=120)
        result: dict[str, Any] = json.loads((work / "check" / "check.json").read_text())
        return result
