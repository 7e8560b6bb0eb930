"""The task contract: a task is a directory holding `task.yaml`, a seed program, an evaluator and notes.

`evaluate.py PROGRAM RESULTS_DIR --stage NAME` writes `RESULTS_DIR/metrics.json`, validated here as
`EvaluationReport`. A stage's `settings` reach the evaluator as JSON in `EVOFORGE_STAGE_SETTINGS`.
Tasks written for OpenEvolve (`adapter: openevolve`, `evaluator.py`) or ASI-Evolve (`adapter: asi_evolve`,
`eval.sh`) run unchanged through `evoforge/tasks/adapters.py`, which writes the same metrics.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evoforge.tasks.direction import Direction
from evoforge.tasks.tree import PathRefused, ProgramTree, checked_path, encode_bundle, is_glob

BUILTIN_TASKS_DIR = Path(__file__).resolve().parent
METRICS_FILE = "metrics.json"
STAGE_SETTINGS_ENV = "EVOFORGE_STAGE_SETTINGS"
ADAPTER_MODULE = "evoforge.tasks.adapters"
DEFAULT_EVALUATORS = {"native": "evaluate.py", "openevolve": "evaluator.py", "asi_evolve": "eval.sh"}


class TaskError(ValueError):
    """A task directory or task.yaml that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    """What one evaluation of a stage may use; enforced by the sandbox backend."""

    cpus: float = Field(1.0, gt=0)
    memory_mb: int = Field(4096, ge=64)
    max_processes: int = Field(256, ge=1)
    gpus: int = Field(0, ge=0)
    gpu_ids: list[str] = Field(default_factory=list)
    custom: dict[str, float] = Field(default_factory=dict)
    network: bool = False


class Stage(_Strict):
    """One step of the evaluation cascade (cheap stages first)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    timeout_s: float = Field(gt=0)
    threshold: float | None = None
    """A candidate scoring worse than this (in the task's direction) is rejected early."""
    cost: float = Field(0.0, ge=0)
    """Declared cost (GPU-hours or a unitless estimate); above the run's approval threshold a human is asked."""
    resources: Resources = Field(default_factory=Resources)
    settings: dict[str, Any] = Field(default_factory=dict)
    """Free-form stage settings (steps, model size, ...) passed to the evaluator; a human may edit them."""
    backend: str | None = None
    """Sandbox backend for this stage; None uses the run's default."""


class Objective(_Strict):
    metric: str
    direction: Direction = "maximize"


class Score(_Strict):
    direction: Direction = "maximize"
    target: float | None = None
    objectives: list[Objective] = Field(default_factory=list)
    """Several metrics for multi-objective selection; empty means the scalar `score` alone."""
    order: Literal["pareto", "lexicographic"] = "pareto"
    """How `objectives` rank nodes: Pareto fronts, or lexicographically in the order they are listed."""


class StaticCheck(_Strict):
    """A task's own checker: `python SCRIPT PROGRAM RESULTS_DIR` in the sandbox writes check.json
    `{"ok": bool, "reasons": [str, ...]}`."""

    script: str
    timeout_s: float = Field(60.0, gt=0)
    resources: Resources = Field(default_factory=Resources)


class Rules(_Strict):
    forbidden_imports: list[str] = Field(default_factory=list)
    forbidden_names: list[str] = Field(default_factory=list)
    max_code_chars: int = Field(50_000, gt=0)
    static_check: StaticCheck | None = None


class TaskSpec(_Strict):
    """A validated task; `root` is the directory that holds task.yaml."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str
    root: Path
    program: str = "initial_program.py"
    evaluator: str = "evaluate.py"
    """Defaults by adapter: evaluate.py (native), evaluator.py (openevolve), eval.sh (asi_evolve)."""
    adapter: Literal["native", "openevolve", "asi_evolve"] = "native"
    entry_points: list[str] = Field(default_factory=list)
    evolve_block: bool = True
    """The program marks its evolvable region with EVOLVE-BLOCK-START / EVOLVE-BLOCK-END comments."""
    score: Score = Field(default_factory=Score)
    stages: list[Stage] = Field(min_length=1)
    rules: Rules = Field(default_factory=Rules)
    cognition_dir: str = "cognition"
    extra_files: list[str] = Field(default_factory=list)
    """Further files of the task directory that the evaluator needs in its work dir."""
    prompts: dict[str, str] = Field(default_factory=dict)
    """Per-role prompt overrides: role name -> template file relative to root."""
    tree: str | None = None
    """A tree task's directory, relative to root (default: root itself); the candidate is this whole tree."""
    evolve: list[str] = Field(default_factory=list)
    """Paths or globs (`src/*.py`, `**/*.yaml`) of the tree's files that may change; non-empty makes a tree task."""
    required: list[str] | None = None
    """Evolvable files no candidate may delete; default: every file `evolve` names without a glob."""

    @model_validator(mode="before")
    @classmethod
    def _default_evaluator(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("evaluator") is None:
            adapter = data.get("adapter", "native")
            if isinstance(adapter, str) and adapter in DEFAULT_EVALUATORS:
                data = {**data, "evaluator": DEFAULT_EVALUATORS[adapter]}
        if isinstance(data, dict) and data.get("evolve"):
            # a tree task has no single program unless it names its main file; markers are a one-file device
            data = {"program": "", "evolve_block": False, **data}
        return data

    @field_validator("stages")
    @classmethod
    def _unique_stage_names(cls, stages: list[Stage]) -> list[Stage]:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        return stages

    @model_validator(mode="after")
    def _files_exist(self) -> TaskSpec:
        if self.evolve or self.tree is not None:
            self._check_tree()
        needed = [("program", self.program)] if not self.is_tree else []
        needed += [("evaluator", self.evaluator)]
        needed += [("extra_files", f) for f in self.extra_files]
        needed += [(f"prompts.{role}", f) for role, f in self.prompts.items()]
        if self.rules.static_check:
            needed.append(("rules.static_check.script", self.rules.static_check.script))
        missing = [f"{field}={name!r}" for field, name in needed if not (self.root / name).is_file()]
        if missing:
            raise ValueError(f"files named in task.yaml are missing from {self.root}: {', '.join(missing)}")
        if self.adapter == "openevolve" and not self.evaluator.endswith(".py"):
            raise ValueError(
                f"evaluator: adapter 'openevolve' needs a Python evaluator file, got {self.evaluator!r}"
            )
        return self

    def _check_tree(self) -> None:
        """The tree rules of task.yaml, each error naming the field and the value it got."""
        if not self.evolve:
            raise ValueError(f"tree: {self.tree!r} needs evolve: the paths or globs of the files that may change")
        if self.adapter != "native":
            raise ValueError(f"evolve: tree tasks run with the native adapter only, got adapter {self.adapter!r}")
        if self.evolve_block:
            raise ValueError("evolve_block: EVOLVE-BLOCK markers are for single-file tasks; a tree task names "
                             "what may change in evolve:")
        tree_dir = (self.root / (self.tree or ".")).resolve()
        if not tree_dir.is_dir() or not tree_dir.is_relative_to(self.root.resolve()):
            raise ValueError(f"tree: expected a directory inside {self.root}, got {self.tree!r}")
        for pattern in self.evolve:
            try:
                checked_path(pattern.replace("*", "x").replace("?", "x"))
            except PathRefused as exc:
                raise ValueError(f"evolve: {exc}") from exc
        program_tree = self.program_tree
        seed = program_tree.seed_files()
        missing = [p for p in self.evolve if not is_glob(p) and p not in seed]
        if missing:
            raise ValueError(f"evolve: no such file in the tree {tree_dir}: {', '.join(missing)}")
        if not seed:
            raise ValueError(f"evolve: {self.evolve} matches no file of the tree {tree_dir}")
        not_evolvable = [p for p in self.required or [] if p not in seed]
        if not_evolvable:
            raise ValueError(f"required: not evolvable files of the seed: {', '.join(not_evolvable)}")
        if self.program and self.program not in seed:
            raise ValueError(f"program: in a tree task it names the evolvable file that holds the entry points; "
                             f"{self.program!r} is none of {', '.join(sorted(seed))}")
        if self.entry_points and not self.program:
            raise ValueError("entry_points: a tree task checks them in its program: file; name it")

    @property
    def is_tree(self) -> bool:
        """Whether the candidate is a directory tree (`evolve:`) rather than one program file."""
        return bool(self.evolve)

    @property
    def program_tree(self) -> ProgramTree:
        """The tree of a tree task (ValueError for a single-file task)."""
        if not self.evolve:
            raise ValueError(f"task {self.name!r} evolves one file ({self.program}), not a tree")
        tree_dir = (self.root / (self.tree or ".")).resolve()
        excluded: set[str] = set()
        if tree_dir == self.root.resolve():
            excluded = {"task.yaml", self.evaluator, self.cognition_dir, *self.extra_files, *self.prompts.values(),
                        *([self.rules.static_check.script] if self.rules.static_check else [])}
        required = self.required if self.required is not None else [p for p in self.evolve if not is_glob(p)]
        return ProgramTree(tree_dir, tuple(self.evolve), frozenset(required), frozenset(excluded))

    @property
    def program_path(self) -> Path:
        """The seed program: its file, or a tree task's directory."""
        if self.is_tree:
            return self.program_tree.root
        return self.root / self.program

    @property
    def evaluator_path(self) -> Path:
        return self.root / self.evaluator

    def evaluation_argv(self, python: str, program: Path, results_dir: Path, stage: str) -> list[str]:
        """The command that evaluates `program` at `stage` inside the sandbox work dir (evaluator copied there).

        Adapted tasks run through `python -m evoforge.tasks.adapters`, so evoforge must be importable by
        `python` (it is in the project's venv); the adapter also gets the stage's position and time limit.
        """
        if self.adapter == "native":
            return [python, self.evaluator, str(program), str(results_dir), "--stage", stage]
        position = [s.name for s in self.stages].index(self.stage(stage).name) + 1
        return [
            python,
            "-m",
            ADAPTER_MODULE,
            self.adapter,
            self.evaluator,
            str(program),
            str(results_dir),
            "--stage",
            stage,
            "--stage-index",
            str(position),
            "--timeout",
            f"{self.stage(stage).timeout_s:g}",
        ]

    def evaluation_env(self, stage: str) -> dict[str, str]:
        """Environment variables the evaluator of `stage` expects (its settings as JSON)."""
        return {STAGE_SETTINGS_ENV: json.dumps(self.stage(stage).settings)}

    def seed_code(self) -> str:
        """The seed's text: the program file, or a tree task's bundle of its evolvable files."""
        if self.is_tree:
            return encode_bundle(self.program_tree.seed_files())
        return self.program_path.read_text()

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise TaskError(f"task {self.name!r} has no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def cognition_files(self) -> list[Path]:
        folder = self.root / self.cognition_dir
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".md", ".txt", ".pdf"})

    def better(self, a: float, b: float) -> bool:
        """True when score `a` is strictly better than `b` in the task's direction."""
        return a > b if self.score.direction == "maximize" else a < b

    def passes(self, score: float | None, stage: Stage) -> bool:
        """Whether `score` clears the stage threshold (no threshold: any finite score passes)."""
        if score is None or not math.isfinite(score):
            return False
        if stage.threshold is None:
            return True
        return score >= stage.threshold if self.score.direction == "maximize" else score <= stage.threshold


MAX_SCORE_MAGNITUDE = 1e150
"""The largest |score| metrics.json may report. The sampling policies add and multiply scores (a UCB1 key sums a
node's children's scores and scales the best score by their count), which must stay finite in float64 (≈1.8e308)
for any run size; 1e300 would overflow to inf and order nodes by NaN."""


class EvaluationReport(BaseModel):
    """The validated content of `metrics.json`, in the JSON types of the contract: no coercion ("2" is not a number,
    "yes" not a boolean, 1 not true) and a finite score. An evaluator that writes anything else is reported as
    failed, not its candidate."""

    model_config = ConfigDict(extra="allow", strict=True)

    score: float | None = None
    valid: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    feedback: str | None = None
    traceback: str | None = None
    """Set only when the candidate itself raised: the Debugger works from it."""
    evaluator_traceback: str | None = None
    """Set when the evaluator itself failed (its own bug, environment or settings), whatever the candidate did."""
    artifacts: dict[str, Any] = Field(default_factory=dict)
    """Extra material for the Analyzer (curves, per-benchmark breakdowns, samples)."""

    @field_validator("score")
    @classmethod
    def _finite_score(cls, score: float | None) -> float | None:
        if score is not None and not (math.isfinite(score) and abs(score) <= MAX_SCORE_MAGNITUDE):
            raise ValueError(f"expected a finite number of magnitude at most {MAX_SCORE_MAGNITUDE:g}, got {score!r}")
        return score

    @model_validator(mode="after")
    def _consistent(self) -> EvaluationReport:
        if self.valid and self.score is None:
            raise ValueError("valid=true needs a score, got none")
        return self


def list_builtin_tasks() -> list[str]:
    return sorted(p.parent.name for p in BUILTIN_TASKS_DIR.glob("*/task.yaml"))


def resolve_task_dir(task: str | Path) -> Path:
    """A built-in task name or a path to a task directory (or its task.yaml)."""
    path = Path(task).expanduser()
    if path.name == "task.yaml":
        path = path.parent
    if (path / "task.yaml").is_file():
        return path.resolve()
    builtin = BUILTIN_TASKS_DIR / str(task)
    if (builtin / "task.yaml").is_file():
        return builtin
    raise TaskError(
        f"task {str(task)!r} is neither a directory with a task.yaml nor a built-in task "
        f"({', '.join(list_builtin_tasks()) or 'none installed'})"
    )


def load_task(task: str | Path) -> TaskSpec:
    """Load and validate a task; errors name the file and the offending field."""
    root = resolve_task_dir(task)
    yaml_path = root / "task.yaml"
    try:
        raw = yaml.safe_load(yaml_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TaskError(f"{yaml_path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise TaskError(f"{yaml_path}: expected a mapping at the top level, got {type(raw).__name__}")
    if "root" in raw:
        raise TaskError(f"{yaml_path}: root: not a task.yaml field (it is the directory holding task.yaml)")
    try:
        return TaskSpec.model_validate({**raw, "root": root})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}" for e in exc.errors()
        )
        raise TaskError(f"{yaml_path}: {problems}") from exc
