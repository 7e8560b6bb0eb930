"""The data_curation task: corpus build, its evaluator run exactly as the sandbox runs it, and its static check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from task_script_runs import TaskScripts

from evoforge.tasks.spec import load_task

TASK = load_task("data_curation")
FIXTURES = Path(__file__).parent / "fixtures" / "data_curation"
TINY_QUICK = {"sample_docs": 400}
TINY_FULL = {"sample_docs": 900, "train_tokens": 60_000, "eval_tokens": 10_000, "probes": 200}
TIMING_KEYS = ("candidate_seconds", "seconds")
SCRIPTS = TaskScripts(TASK)
evaluate, static_check = SCRIPTS.evaluate, SCRIPTS.static_check


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    """One extraction of the stdlib text for the whole module (the evaluator's optional cache)."""
    return str(tmp_path_factory.mktemp("corpus-cache"))


def _without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def test_seed_is_valid_and_deterministic_with_and_without_cache(tmp_path, cache_dir):
    uncached = evaluate(tmp_path / "a", TASK.seed_code(), TINY_QUICK)
    cached = evaluate(tmp_path / "b", TASK.seed_code(), {**TINY_QUICK, "cache_dir": cache_dir})
    again = evaluate(tmp_path / "c", TASK.seed_code(), {**TINY_QUICK, "cache_dir": cache_dir})
    assert uncached.valid, uncached.error
    assert 0 < uncached.score < 0.2  # the seed removes fragments only
    assert _without_timing(uncached.metrics) == _without_timing(cached.metrics) == _without_timing(again.metrics)
    assert uncached.artifacts == cached.artifacts
    corpus = uncached.metrics["corpus"]
    assert len(corpus["clean_sha256"]) == 64 and corpus["documents"] > 2000
    kinds = set(uncached.artifacts["by_kind"])
    assert kinds == {"clean", "html", "boilerplate", "pii", "mojibake", "exact_dup", "near_dup", "fragment",
                     "boilerplate_page", "junk"}
    assert {s["kind"] for s in uncached.artifacts["samples"]} == kinds


def test_dropping_everything_is_invalid_with_a_clear_reason(tmp_path, cache_dir):
    report = evaluate(tmp_path, (FIXTURES / "drop_everything.py").read_text(), {**TINY_QUICK, "cache_dir": cache_dir})
    assert not report.valid and report.score is None
    assert "kept 0 of" in report.error and "drops real documents" in report.error


def test_a_crashing_pipeline_reports_its_traceback(tmp_path, cache_dir):
    report = evaluate(tmp_path, (FIXTURES / "raises.py").read_text(), {**TINY_QUICK, "cache_dir": cache_dir})
    assert not report.valid
    assert report.error.startswith("clean_document on doc-") and "IndexError" in report.error
    assert "text.split" in report.traceback


def test_better_pipeline_beats_the_seed_on_both_stages(tmp_path, cache_dir):
    better = (FIXTURES / "better_pipeline.py").read_text()
    quick = {**TINY_QUICK, "cache_dir": cache_dir}
    seed_q, better_q = evaluate(tmp_path / "sq", TASK.seed_code(), quick), evaluate(tmp_path / "bq", better, quick)
    assert better_q.valid and better_q.score > seed_q.score + 0.5
    assert better_q.artifacts["by_kind"]["html"]["noise_recall"] > 0.9
    assert better_q.metrics["documents"]["pii_leak_rate"] < 0.2
    full = {**TINY_FULL, "cache_dir": cache_dir}
    seed_f, better_f = (evaluate(tmp_path / "sf", TASK.seed_code(), full, "full"),
                        evaluate(tmp_path / "bf", better, full, "full"))
    assert seed_f.valid and better_f.valid, (seed_f.error, better_f.error)
    assert better_f.score > seed_f.score + 0.3
    lm = better_f.metrics["lm"]
    assert lm["candidate"]["heldout_ppl"] < lm["raw"]["heldout_ppl"]
    assert lm["raw"]["train_tokens"] == lm["ideal"]["train_tokens"] == TINY_FULL["train_tokens"]


def test_corpus_is_reproducible_and_keeps_the_heldout_split_apart(tmp_path, cache_dir):
    sys.path.insert(0, str(TASK.root))
    try:
        import corpus
    finally:
        sys.path.remove(str(TASK.root))
    a = corpus.build_corpus(3, cache_dir=Path(cache_dir))
    b = corpus.build_corpus(3, cache_dir=Path(cache_dir))
    c = corpus.build_corpus(4, cache_dir=Path(cache_dir))
    assert [(d.id, d.text, d.kind) for d in a.docs] == [(d.id, d.text, d.kind) for d in b.docs]
    assert a.clean_sha256 == c.clean_sha256 and [d.text for d in a.docs] != [d.text for d in c.docs]
    assert not set(a.heldout) & set(a.references.values())
    sample = a.sample(300)
    clusters = {d.cluster for d in sample if d.cluster}
    assert all(any(d.cluster == k and not d.should_drop for d in sample) for k in clusters)
    corpus.write_bundle(a, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["clean_sha256"] == a.clean_sha256


def test_static_check_accepts_the_seed_and_the_better_pipeline(tmp_path):
    assert static_check(tmp_path / "a", TASK.seed_code()) == {"ok": True, "reasons": []}
    assert static_check(tmp_path / "b", (FIXTURES / "better_pipeline.py").read_text())["ok"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.replace("def select_documents(", "def dedupe("), "missing the module-level function select_documents"),
        (lambda s: s.replace("def clean_document(text: str, meta: dict)", "def clean_document(text: str)"),
         "clean_document() must accept 2 positional argument(s)"),
        (lambda s: s + "\nREFS = open('references.json').read()\n", "uses 'open'"),
        (lambda s: s.replace("import re", "import re\nimport corpus"), "imports 'corpus'"),
        (lambda s: s.replace("import re", "import re\nfrom evaluate import run_candidate"), "imports 'evaluate'"),
        (lambda s: s.replace("import re", "import re\nimport inspect"), "imports 'inspect'"),
    ],
)
def test_static_check_rejects(tmp_path, edit, expected):
    result = static_check(tmp_path, edit(TASK.seed_code()))
    assert not result["ok"]
    assert any(expected in reason for reason in result["reasons"]), result["reasons"]


def test_static_check_rejects_wrong_return_types_on_the_probe(tmp_path):
    program = TASK.seed_code().replace("return [d[\"id\"] for d in docs]", "return len(docs)")
    result = static_check(tmp_path, program)
    assert result == {"ok": False, "reasons": ["select_documents must return a list of id strings, got int"]}
