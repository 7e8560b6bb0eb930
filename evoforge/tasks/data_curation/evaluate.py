"""Evaluate a data-curation pipeline: `python evaluate.py PROGRAM RESULTS_DIR --stage quick|full`.

quick: the candidate cleans a sample of the noisy corpus; score = harmonic mean of noise recall and clean content
kept (0 = the raw corpus, 1 = perfect), recomputed here from its outputs and the injected ground truth.
full: the whole corpus; a Kneser-Ney trigram model is trained on the first `train_tokens` tokens of the cleaned
corpus, of the raw corpus and of the ideal corpus (every clean reference once); score = 0.7 * the share of the
raw-to-ideal gap in log held-out perplexity closed + 0.3 * the share of the gap in cloze-probe accuracy closed.
The candidate runs in a child process (run_candidate.py) and sees only the documents; the held-out split, the
references and the ground truth stay in this process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

if TYPE_CHECKING:  # run with this task's directory on sys.path; type-checked as part of the package
    from evoforge.tasks.data_curation import corpus, ngram_lm, scoring
else:
    import corpus
    import ngram_lm
    import scoring

from evoforge.tasks.task_scripts import evaluator_main  # noqa: E402

DEFAULTS: dict[str, dict[str, Any]] = {
    "quick": {"seed": 0, "sample_docs": 1200, "min_content_kept": 0.2, "candidate_timeout_s": 120},
    "full": {
        "seed": 0, "sample_docs": None, "min_content_kept": 0.2, "candidate_timeout_s": 300,
        "train_tokens": 250_000, "eval_tokens": 40_000, "probes": 600,
    },
}
MAX_GROWTH_CHARS = 64
SAMPLE_CHARS = 400


class CandidateError(Exception):
    def __init__(self, message: str, trace: str | None = None):
        super().__init__(message)
        self.trace = trace


def stage_settings(stage: str) -> dict[str, Any]:
    if stage not in DEFAULTS:
        raise ValueError(f"--stage must be one of {sorted(DEFAULTS)}, got {stage!r}")
    raw = os.environ.get("EVOFORGE_STAGE_SETTINGS", "").strip()
    given = json.loads(raw) if raw else {}
    if not isinstance(given, dict):
        raise ValueError(f"EVOFORGE_STAGE_SETTINGS must be a JSON object, got {raw!r}")
    unknown = set(given) - set(DEFAULTS["full"]) - {"cache_dir"}
    if unknown:
        raise ValueError(f"unknown stage settings {sorted(unknown)}")
    settings = {**DEFAULTS[stage], **given}
    settings.setdefault("cache_dir", os.environ.get("EVOFORGE_DATA_CACHE"))
    return settings


def run_candidate(program: Path, docs: list[corpus.NoisyDoc], timeout_s: float) -> dict[str, str | None]:
    """The candidate's output per document id (None = dropped), validated."""
    payload = json.dumps([{"id": d.id, "text": d.text, "meta": d.meta} for d in docs])
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT")}
    with tempfile.TemporaryDirectory(prefix="candidate-") as scratch:
        try:
            proc = subprocess.run(
                [sys.executable, "-I", str(HERE / "run_candidate.py"), str(program.resolve())],
                input=payload, capture_output=True, text=True, timeout=timeout_s, cwd=scratch, env=env,
            )
        except subprocess.TimeoutExpired as exc:
            raise CandidateError(f"the pipeline took longer than candidate_timeout_s={timeout_s}s on {len(docs)} documents") from exc
    try:
        reply = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        tail = proc.stderr.strip()[-2000:]
        raise CandidateError(f"the pipeline process exited with status {proc.returncode} without a result", tail) from exc
    if not reply.get("ok"):
        raise CandidateError(reply.get("error", "the pipeline failed"), reply.get("traceback"))
    outputs, selected = reply["outputs"], reply["selected"]
    by_id = {d.id: d for d in docs}
    for doc_id, out in outputs.items():
        if out is not None and not isinstance(out, str):
            raise CandidateError(f"clean_document must return str or None, got {type(out).__name__} for {doc_id}")
        if out is not None and len(out) > len(by_id[doc_id].text) + MAX_GROWTH_CHARS:
            raise CandidateError(
                f"clean_document grew {doc_id} from {len(by_id[doc_id].text)} to {len(out)} characters; "
                f"a pipeline may remove or normalise text, not add more than {MAX_GROWTH_CHARS} characters"
            )
    if not isinstance(selected, list) or not all(isinstance(i, str) for i in selected):
        raise CandidateError("select_documents must return a list of document ids (str)")
    unknown = [i for i in selected if not isinstance(outputs.get(i), str)]
    if unknown:
        raise CandidateError(f"select_documents returned ids that were not among its input documents: {unknown[:5]}")
    keep = set(selected)
    return {d.id: outputs[d.id] if d.id in keep else None for d in docs}


def _samples(docs: list[corpus.NoisyDoc], outputs: dict[str, str | None],
             references: dict[str, str]) -> list[dict[str, Any]]:
    """One before/after/reference excerpt per noise kind, for the Analyzer."""
    picked: dict[str, dict[str, Any]] = {}
    for d in docs:
        if d.kind in picked:
            continue
        out = outputs.get(d.id)
        picked[d.kind] = {
            "id": d.id, "kind": d.kind, "before": d.text[:SAMPLE_CHARS],
            "after": None if out is None else out[:SAMPLE_CHARS],
            "reference": references[d.cluster][:SAMPLE_CHARS] if d.cluster and not d.should_drop else None,
        }
    return [picked[k] for k in sorted(picked)]


def _language_model_metrics(bundle: corpus.CorpusBundle, docs: list[corpus.NoisyDoc], outputs: dict[str, str | None],
                            settings: dict[str, Any]) -> dict[str, Any]:
    vocab = ngram_lm.build_vocab(bundle.references.values())
    probes = ngram_lm.make_cloze_probes(bundle.heldout, vocab, int(settings["probes"]), int(settings["seed"]))
    ideal: list[str] = []
    seen: set[str] = set()
    for d in docs:
        if d.cluster and d.cluster not in seen:
            seen.add(d.cluster)
            ideal.append(bundle.references[d.cluster])
    corpora = {
        "raw": [d.text for d in docs],
        "ideal": ideal,
        "candidate": [text for d in docs if (text := outputs[d.id]) is not None],
    }
    results = {}
    for name, texts in corpora.items():
        model = ngram_lm.KneserNeyTrigram(vocab)
        used = model.train(texts, int(settings["train_tokens"]))
        ppl, counted = model.perplexity(bundle.heldout, int(settings["eval_tokens"]))
        results[name] = {"train_tokens": used, "heldout_ppl": round(ppl, 4),
                         "probe_accuracy": round(ngram_lm.cloze_accuracy(model, probes), 4)}
    raw, ideal_r, cand = results["raw"], results["ideal"], results["candidate"]
    ppl_gap = math.log(raw["heldout_ppl"]) - math.log(ideal_r["heldout_ppl"])
    acc_gap = ideal_r["probe_accuracy"] - raw["probe_accuracy"]
    ppl_gain = (math.log(raw["heldout_ppl"]) - math.log(cand["heldout_ppl"])) / ppl_gap if ppl_gap > 0 else 0.0
    probe_gain = (cand["probe_accuracy"] - raw["probe_accuracy"]) / acc_gap if acc_gap > 0 else 0.0
    return {"lm": results, "ppl_gap_closed": round(ppl_gain, 4), "probe_gap_closed": round(probe_gain, 4),
            "probes": len(probes), "heldout_tokens": counted, "score": 0.7 * ppl_gain + 0.3 * probe_gain}


def evaluate(program: Path, stage: str) -> dict[str, Any]:
    settings = stage_settings(stage)
    started = time.time()
    cache = Path(settings["cache_dir"]) if settings.get("cache_dir") else None
    bundle = corpus.build_corpus(int(settings["seed"]), cache_dir=cache)
    docs = bundle.sample(int(settings["sample_docs"]) if settings["sample_docs"] else None)
    metrics: dict[str, Any] = {"stage": stage, "corpus": bundle.summary(), "evaluated_docs": len(docs)}
    built = time.time()
    try:
        outputs = run_candidate(program, docs, float(settings["candidate_timeout_s"]))
    except CandidateError as exc:
        return {"score": None, "valid": False, "metrics": metrics, "error": str(exc), "traceback": exc.trace,
                "feedback": f"The pipeline failed: {exc}"}
    metrics["candidate_seconds"] = round(time.time() - built, 2)
    doc_metrics = scoring.score_documents(docs, outputs, bundle.references)
    overall = doc_metrics["overall"]
    metrics.update({"documents": overall, "quick_score": doc_metrics["score"]})
    artifacts = {"by_kind": doc_metrics["by_kind"], "samples": _samples(docs, outputs, bundle.references)}
    kept_docs = sum(o is not None for o in outputs.values())
    if (overall["content_kept"] or 0.0) < settings["min_content_kept"]:
        error = (f"the pipeline kept {kept_docs} of {len(docs)} documents and only {overall['content_kept']:.1%} "
                 f"of the clean content (at least {settings['min_content_kept']:.0%} is required): it drops real documents")
        return {"score": None, "valid": False, "metrics": metrics, "error": error, "feedback": error,
                "artifacts": artifacts}
    score = doc_metrics["score"]
    if stage == "full":
        lm = _language_model_metrics(bundle, docs, outputs, settings)
        score = lm.pop("score")
        metrics.update(lm)
    metrics["seconds"] = round(time.time() - started, 2)
    worst = min((k for k, v in doc_metrics["by_kind"].items() if v["noise_recall"] is not None),
                key=lambda k: doc_metrics["by_kind"][k]["noise_recall"])
    feedback = (f"noise recall {overall['noise_recall']}, clean content kept {overall['content_kept']}, "
                f"PII leak rate {overall['pii_leak_rate']}; least-removed noise kind: {worst} "
                f"({doc_metrics['by_kind'][worst]['noise_recall']})")
    if stage == "full":
        feedback += (f"; held-out perplexity {metrics['lm']['candidate']['heldout_ppl']} "
                     f"(raw {metrics['lm']['raw']['heldout_ppl']}, ideal {metrics['lm']['ideal']['heldout_ppl']})")
    return {"score": round(score, 6), "valid": True, "metrics": metrics, "error": None, "feedback": feedback,
            "artifacts": artifacts}


if __name__ == "__main__":
    evaluator_main(evaluate, __doc__.splitlines()[0])
