"""The run configuration: one YAML file validated by pydantic; also the graph's runtime context.

Precedence for every field: an explicit value (YAML, CLI flag, API input) > `EVOFORGE_<FIELD>` in the
environment > the default written here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "EVOFORGE_"
Role = Literal["researcher", "debugger", "analyzer", "novelty_judge", "static_review"]
ROLES: tuple[Role, ...] = ("researcher", "debugger", "analyzer", "novelty_judge", "static_review")


class ConfigError(ValueError):
    """An invalid configuration; the message names the key and the value it got."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "evoforge"


ROLE_MAX_TOKENS: dict[Role, int] = {
    "researcher": 768,
    "debugger": 768,
    "analyzer": 160,
    "novelty_judge": 48,
    "static_review": 256,
}
"""Default completion caps: a candidate or a patch needs room for code, a report a paragraph, a verdict a line."""


class ModelConfig(_Section):
    """A chat model for one or more agent roles."""

    provider: Literal["local", "openai", "scripted"] = "local"
    model: str = "qwen2.5-coder-1.5b"
    """For `local`: qwen2.5-coder-1.5b | qwen2.5-coder-0.5b; for `openai`: the endpoint's model name."""
    base_url: str | None = None
    """For `openai`: the endpoint (None: OpenAI's own). For `local`: a llama.cpp server already running
    (shared by several runs or systems); None starts the embedded one."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key (never the key itself)."""
    temperature: float = Field(0.7, ge=0, le=2)
    """Unset: 0.3 for `local`, 0.7 otherwise. Measured on circle_packing with the 1.5B model, the same
    Researcher prompt gave a working implementation of the focused idea in 3 of 5 samples at 0.3 and 1 of 5
    at 0.7; the round's focus and the per-call seed keep the candidates varied."""
    retry_temperature_step: float = Field(0.1, ge=0, le=1)
    """A retry within a round (after an unusable reply, a static rejection or a duplicate) samples this much
    hotter per earlier try, up to 1.0: at a low temperature the same prompt tends to bring back the same echo.
    Measured with the 1.5B model (circle_packing, the grid and SLSQP ideas, 3 samples each): a working
    implementation in 3 of 6 samples at 0.3 and at 0.5, 2 of 6 at 0.7 (none of SLSQP's), so retries stay below."""
    max_tokens: int | None = Field(None, gt=0)
    """Completion cap per call; None: the role's own cap (ROLE_MAX_TOKENS). On a local model every
    completion token costs ~0.1 s, so a report or a verdict must not be allowed a program's length."""
    timeout_s: float = Field(900, gt=0)
    context_tokens: int = Field(8192, ge=512)
    threads: int = Field(2, ge=1, le=256)
    """For `local`: CPU threads of the llama.cpp server. On a busy machine 1 can be far faster than 2."""
    slots: int | None = Field(None, ge=1, le=64)
    """For `local`: sequences the embedded server decodes side by side, in one batch. None: one per research
    lane (`workers`), so no lane's call queues behind another's. On 2 cores this buys no throughput (2 or 3
    Researcher-sized calls at once took as long as one after another: reading prompts is compute-bound,
    benchmarks/results/server.json); on more cores or a GPU it lets lanes run side by side."""
    speculative: Literal["ngram-simple", "none"] = "ngram-simple"
    """For `local`: speculative decoding of the embedded server by n-gram lookup in the prompt (no draft model;
    the replies keep the model's distribution). Measured on recorded Researcher calls: generation +25% (28.2
    against 22.5 tokens/s on 2 cores), since a reply copies many lines of its parent (evoforge/llm/llama_server.py)."""
    script: str | None = None
    """For `scripted`: a YAML file of replies (see evoforge/llm/scripted.py)."""
    constrained: bool = True
    """For `local`: decode the Researcher's and the Debugger's replies under a grammar of their reply format
    (llama.cpp's `grammar` field; SEARCH lines drawn from the program's own lines), so a small model cannot
    write an unusable edit. Other providers never receive a grammar."""

    @model_validator(mode="before")
    @classmethod
    def _temperature_for_provider(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("temperature") is None:
            data = {**data, "temperature": 0.3 if data.get("provider", "local") == "local" else 0.7}
        return data

    def max_tokens_for(self, role: Role) -> int:
        return self.max_tokens if self.max_tokens is not None else ROLE_MAX_TOKENS[role]


class FeatureDimension(_Section):
    """One axis of the MAP-Elites grid: a built-in feature or any numeric metric the evaluator returns."""

    name: str = Field(min_length=1)
    """complexity | code_length | diversity (see evoforge/memory/features.py), or a metric name."""
    low: float = 0.0
    high: float = 1.0
    """Values are clamped to [low, high] and cut into `bins` equal cells."""
    bins: int = Field(8, ge=1, le=64)

    @model_validator(mode="after")
    def _ordered(self) -> FeatureDimension:
        if not self.high > self.low:
            raise ValueError(f"high must be above low, got low={self.low!r} high={self.high!r}")
        return self


def _default_features() -> list[FeatureDimension]:
    return [
        FeatureDimension(name="complexity", low=0, high=40, bins=8),
        FeatureDimension(name="diversity", low=0, high=0.5, bins=8),
    ]


class SamplingConfig(_Section):
    policy: Literal["greedy", "random", "ucb1", "top_k", "map_elites"] = "ucb1"
    inspirations: int = Field(2, ge=0, le=16)
    ucb_c: float = Field(1.4, ge=0)
    seed: int = 0
    parent_pool: int = Field(10, ge=1)
    """top_k: the parent is drawn from the best this many nodes."""
    context_pool: int = Field(50, ge=1)
    """top_k: inspirations are drawn from the best this many nodes."""
    pool_refresh: int = Field(5, ge=1)
    """top_k: rounds between refreshes of the pools (a pool not yet full is refreshed every round)."""
    islands: int = Field(2, ge=1, le=64)
    """map_elites: independent archives; round r samples island r mod islands."""
    migration_interval: int = Field(10, ge=1)
    """map_elites: every this many rounds each island's best elites are copied to the next island (a ring)."""
    migration_size: int = Field(2, ge=0)
    """map_elites: how many elites each island sends per migration."""
    archive_size: int = Field(64, ge=1)
    """map_elites: at most this many elites per island; the worst are dropped beyond it."""
    features: list[FeatureDimension] = Field(default_factory=_default_features, min_length=1, max_length=4)
    """map_elites: the grid's dimensions."""


class CognitionConfig(_Section):
    top_k: int = Field(4, ge=0, le=50)
    min_similarity: float = Field(0.15, ge=-1, le=1)
    focus: bool = True
    """Hand the Researcher one retrieved human prior in full as the idea to implement (the one this run has
    used least as a focus), the other priors by title and the Analyzer's lessons in a line each. Small models
    follow one idea far better than several; off, every item is shown alike."""
    focus_pool: int = Field(12, ge=1, le=200)
    """With `focus`: the focus is chosen among this many retrieved items (the prompt still shows `top_k`), so
    that over a run every relevant prior gets its turn, not only the `top_k` nearest the parent."""
    prior_code_fallback: bool = True
    """With `focus`: when the Researcher's reply leaves the program unchanged and a retrieved prior (the focused
    one first) gives complete functions that change the parent, those functions merged into the parent are the
    candidate (edit mode `prior_code`), instead of asking again (evoforge/agents/prior_code.py)."""
    lesson_duplicate_similarity: float = Field(0.9, ge=-1, le=1)
    """An Analyzer's lesson whose text embeds at least this close to a lesson the task holds is not kept (a small
    model restates one lesson round after round; 1.0 keeps all but exact copies)."""
    embedding_model: str = "all-MiniLM-L6-v2"
    """The bundled MiniLM (offline) unless `embedding_base_url` names an OpenAI-compatible endpoint; any
    other model name without a base URL goes to OpenAI's own endpoint."""
    embedding_base_url: str | None = None
    embedding_api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the embeddings key (never the key itself)."""
    embedding_dim: int | None = Field(None, ge=1, le=2000)
    """The model's dimension when known; None: 384 for MiniLM, else learnt from the endpoint's first reply."""


class NoveltyConfig(_Section):
    duplicate_similarity: float = Field(0.995, gt=0, le=1)
    """At or above this cosine similarity to an existing node, a candidate is a duplicate."""
    judge_similarity: float = Field(0.97, gt=0, le=1)
    """Between this and `duplicate_similarity` an LLM judge decides."""


class BoundsConfig(_Section):
    """Every loop of the graph is bounded; the graph state holds the matching counters."""

    max_parse_retries: int = Field(2, ge=0)
    """Unusable Researcher replies a round retries, over all its static and novelty retries (each of which still
    gets one try)."""
    max_static_retries: int = Field(2, ge=0)
    max_novelty_retries: int = Field(2, ge=0)
    max_debug_attempts: int = Field(2, ge=0)
    debug_invalid: bool = True
    """A result the evaluator marks invalid, with its reason, goes to the Debugger like a crash (within
    `max_debug_attempts`): a small model's idea is often right and one number wrong (`linspace(..., N)`)."""


class DockerConfig(_Section):
    """The `docker` backend: one container per evaluation on a Docker engine that sees this machine's paths."""

    base_url: str | None = None
    """Engine address (unix:///path/docker.sock, tcp://...); None: DOCKER_HOST, else /var/run/docker.sock."""
    image: str | None = None
    """The task's image (build evoforge/sandbox/Dockerfile); None: a minimal image built offline that mounts
    this machine's Python and system directories read-only."""
    python: str = "python3"
    """The interpreter inside `image`; replaces this process's own interpreter in the job's command."""
    network: str = "bridge"
    """Docker network for stages that ask for network access (all others run with --network none)."""
    capacity: int | None = Field(None, ge=1)
    """Concurrent evaluations; None: the engine's CPU count."""


class RayConfig(_Section):
    """The `ray` backend: each evaluation is a Ray task that runs `worker_backend` on its worker."""

    address: str | None = None
    """"auto", "ray://head:10001", ...; None starts a local Ray instance in this process."""
    worker_backend: Literal["local", "docker"] = "local"
    num_cpus: int | None = Field(None, ge=1)
    """CPUs of a local Ray instance (None: all of this machine's)."""
    resources: dict[str, float] = Field(default_factory=dict)
    """Custom resources a local Ray instance advertises (e.g. {"gpu_slot": 1} to stand in for GPUs)."""
    max_retries: int = Field(1, ge=0)
    """Re-runs of an evaluation whose worker died; then it fails as `worker_lost`."""
    queue_timeout_s: float = Field(3600, gt=0)
    """How long an evaluation may wait for a worker before it is given up (never a hung run)."""


class SandboxConfig(_Section):
    backend: Literal["local", "docker", "ray"] = "local"
    isolation: Literal["auto", "bubblewrap", "none"] = "auto"
    """For `local` (and ray workers running it): bubblewrap when available (auto), required, or plain."""
    max_output_bytes: int = Field(2_000_000, ge=1024)
    docker: DockerConfig = Field(default_factory=DockerConfig)
    ray: RayConfig = Field(default_factory=RayConfig)


class BudgetConfig(_Section):
    max_tokens: int | None = Field(None, gt=0)
    target_score: float | None = None
    """Stop once a node reaches this score (defaults to the task's target)."""
    patience: int | None = Field(None, gt=0)
    """Stop after this many rounds without a new best."""


class RunConfig(BaseModel):
    """Everything a run needs besides the task itself."""

    model_config = ConfigDict(extra="forbid")

    task: str = "circle_packing"
    rounds: int = Field(10, ge=0)
    """Rounds of the whole run, shared out across the lanes."""
    workers: int = Field(1, ge=1, le=64)
    """Concurrent research lanes; each is its own checkpointed LangGraph thread over the shared node memory."""
    llm: ModelConfig = Field(default_factory=ModelConfig)
    roles: dict[Role, ModelConfig] = Field(default_factory=dict)
    """Per-role overrides of `llm`."""
    database_url: str | None = None
    """Any Postgres with pgvector; None starts the embedded server under `state_dir`."""
    state_dir: Path = Field(default_factory=default_state_dir)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    cognition: CognitionConfig = Field(default_factory=CognitionConfig)
    compact_parent: bool = True
    """Show the Researcher the parent without docstrings and apply its edit to the evolvable region without
    them (Python only; the fixed code is kept as it is): small models otherwise spend their reply copying
    docstrings and fixed code."""
    tune_constants_on_echo: bool = True
    """When the Researcher's reply leaves the parent unchanged and no retrieved prior's code changes it, the
    candidate is the parent with one numeric constant changed (a seed, a named setting, a float; edit mode
    `tuned_constant`, evoforge/agents/constant_tuning.py) instead of asking again."""
    novelty: NoveltyConfig = Field(default_factory=NoveltyConfig)
    bounds: BoundsConfig = Field(default_factory=BoundsConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    approval_cost_threshold: float | None = None
    """Stages whose declared cost exceeds this wait for a human decision; None never asks."""
    llm_static_review: bool = False
    llm_analysis: bool = True
    """The Analyzer's model call; off, each node gets a factual report of its stages and no insights."""
    model_reports_on_built_candidates: bool = False
    """Whether the Analyzer's model also reports on the candidates the loop builds when the Researcher's reply
    echoes its parent (a prior's code, a tuned constant). Off, they get an exact report of what changed and how it
    scored against the parent, without a model call (analyzer.built_candidate_report)."""
    seed: int = 0
    """Base of the per-request sampling seeds (varied per call so repeats don't come back identical)."""

    @model_validator(mode="before")
    @classmethod
    def _fill_from_environment(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            env_value = os.environ.get(ENV_PREFIX + name.upper())
            if name in data or env_value is None:
                continue
            if field.annotation in (int, float, str, bool) or name in ("database_url", "state_dir", "task"):
                data[name] = env_value
            else:
                data[name] = yaml.safe_load(env_value)
        return data

    @field_validator("task")
    @classmethod
    def _task_directory_as_absolute_path(cls, task: str) -> str:
        # the run's record keeps this: `resume` / `replay` from another directory must find the same task;
        # a built-in task's name stays a name
        path = Path(task).expanduser()
        directory = path.parent if path.name == "task.yaml" else path
        return str(directory.resolve()) if (directory / "task.yaml").is_file() else task

    @model_validator(mode="after")
    def _one_server_slot_per_lane(self) -> RunConfig:
        # every role's model gets the same count, so roles on one model file share one server
        self.llm = _with_slots(self.llm, self.workers)
        self.roles = {role: _with_slots(cfg, self.workers) for role, cfg in self.roles.items()}
        return self

    def model_for(self, role: Role) -> ModelConfig:
        return self.roles.get(role, self.llm)

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    def run_dir(self, run_id: str) -> Path:
        """A run's files: its nodes' directories, its report, its best program."""
        return self.runs_dir / run_id

    def node_dir(self, run_id: str, node_id: str) -> Path:
        """A node's files: its stages' and static checks' work dirs and its model-call transcript."""
        return self.run_dir(run_id) / "nodes" / node_id


def _with_slots(cfg: ModelConfig, workers: int) -> ModelConfig:
    return cfg.model_copy(update={"slots": workers}) if cfg.slots is None else cfg


def format_validation_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
    )


def load_config(path: Path | None = None, **overrides: Any) -> RunConfig:
    """Read a YAML config (optional), apply explicit overrides (None values are ignored), validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path}: expected a mapping at the top level, got {type(loaded).__name__}")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RunConfig(**data)
    except ValidationError as exc:
        where = f"config {path}" if path else "config"
        raise ConfigError(f"{where}: {format_validation_errors(exc)}") from exc
