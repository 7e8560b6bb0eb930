"""Scripted runs of a few rounds through the whole graph on each research pillar's task, at tiny stage settings."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from evoforge.config import RunConfig
from evoforge.graph.runner import start_run
from evoforge.memory.database import Database
from evoforge.runtime import services
from evoforge.tasks.spec import load_task

SCRIPTS = Path(__file__).parent / "fixtures" / "scripts"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def shrunk_task(tmp_path: Path, name: str, settings: dict[str, dict[str, Any]]) -> Path:
    """A copy of a built-in task whose stages run at the given (tiny) settings."""
    task_dir = tmp_path / name
    shutil.copytree(load_task(name).root, task_dir)
    spec = yaml.safe_load((task_dir / "task.yaml").read_text())
    for stage in spec["stages"]:
        stage["settings"] = {**stage.get("settings", {}), **settings.get(stage["name"], {})}
    (task_dir / "task.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return task_dir


def scripted_run(database: Database, tmp_path: Path, task_dir: Path, script: str, rounds: int,
                 run_id: str) -> tuple[list[str], dict[int, Any]]:
    config = RunConfig(task=str(task_dir), rounds=rounds,
                       llm={"provider": "scripted", "script": str(SCRIPTS / script)},
                       database_url=database.url, state_dir=tmp_path / "state",
                       sampling={"policy": "greedy", "inspirations": 1}, cognition={"top_k": 2},
                       novelty={"duplicate_similarity": 0.9999, "judge_similarity": 0.9999})
    steps: list[str] = []
    outcome = start_run(config, run_id, on_update=lambda node, update: steps.append(node))
    assert outcome.state["stop_reason"] == f"{rounds} rounds done"
    nodes = {n.round: n for n in services.get_services(config).nodes.list_nodes(run_id)}
    return steps, nodes


LINEAR_ATTENTION_TINY = {
    "threads": 1, "d_model": 16, "n_layers": 1, "n_heads": 2, "steps": 6, "batch_size": 8, "warmup_steps": 2,
    "mqar_seq_len": 32, "mqar_num_pairs": [2, 4], "mqar_num_keys": 8, "mqar_num_values": 8,
    "mqar_eval_examples": 16, "mqar_eval_seq_lens": [48], "lm_corpus_chars": 20000, "lm_seq_len": 32,
    "lm_eval_batches": 2, "eval_every": 3,
}


def test_linear_attention_rounds_with_a_debugged_shape_bug(database: Database, tmp_path: Path) -> None:
    task_dir = shrunk_task(tmp_path, "linear_attention", {"quick": LINEAR_ATTENTION_TINY, "full": LINEAR_ATTENTION_TINY})
    steps, nodes = scripted_run(database, tmp_path, task_dir, "linear_attention.yaml", 2, "la")
    assert "debug_candidate" in steps
    debugged, variant = nodes[1], nodes[2]
    assert [r["status"] for r in debugged.stage_results] == ["runtime_error", "ok", "ok"], debugged.stage_results
    assert "Traceback" in (debugged.stage_results[0]["traceback"] or "")
    assert debugged.status == "evaluated" and variant.status == "evaluated"
    assert variant.score == pytest.approx(0.0, abs=0.3)
    assert "mqar_accuracy" in variant.metrics and "baseline_mqar_accuracy" in variant.metrics


def test_data_curation_rounds(database: Database, tmp_path: Path) -> None:
    task_dir = shrunk_task(tmp_path, "data_curation", {
        "quick": {"sample_docs": 400},
        "full": {"sample_docs": 900, "train_tokens": 60_000, "eval_tokens": 10_000, "probes": 200},
    })
    _, nodes = scripted_run(database, tmp_path, task_dir, "data_curation.yaml", 2, "dc")
    for node in (nodes[1], nodes[2]):
        assert node.status in ("evaluated", "early_rejected"), (node.status, node.error)
        assert node.analysis and node.stage_results[0]["metrics"]
    assert nodes[1].stage_results[0]["score"] > nodes[0].stage_results[0]["score"], "dropping fragments must help"


def test_rl_algorithm_rounds(database: Database, tmp_path: Path) -> None:
    tiny = {"seeds": [0], "steps": 8, "workers": 2}
    task_dir = shrunk_task(tmp_path, "rl_algorithm", {"quick": tiny, "full": tiny})
    _, nodes = scripted_run(database, tmp_path, task_dir, "rl_algorithm.yaml", 2, "rl")
    assert nodes[0].score == 0.0, "GRPO against itself"
    for node in (nodes[1], nodes[2]):
        assert node.status in ("evaluated", "early_rejected"), (node.status, node.error)
        assert node.analysis and node.stage_results[0]["score"] is not None
