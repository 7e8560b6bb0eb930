"""The embedded model server's speed: one call, several lanes' calls batched, a continued conversation, a grammar.

    python benchmarks/server.py [--model qwen2.5-coder-1.5b] [--slots 1 2 3] [--prompt-tokens 1500] [--gen 128]

Drives `llama-server` (evoforge/llm/llama_server.py, as a run starts it) over its OpenAI-compatible API with
Researcher-sized calls: a prompt of ~`--prompt-tokens` tokens (EvoForge's own source, so no two requests share
more than the chat template) and `--gen` generated tokens (`ignore_eos`, so every call generates exactly that
many). Per slot count N, N such calls are sent at once; recorded are each call's wall time and the server's own
`timings` (prompt and generation tokens/s, prompt tokens served from the cache), and the throughput of the
whole batch (N x gen / the slowest call's wall time, prompt reading included: what lanes get from the slots). Two more cases on one slot: the same conversation continued by a
second user turn (the Analyzer after the Researcher: all but the new turn should come from the cache), and one
call constrained by a GBNF grammar against the same call without it. Figures go to
benchmarks/results/server.json. Run it on quiet cores: anything else running slows every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evoforge.llm.local import LocalModelServer, ensure_model_file  # noqa: E402  (the root goes on sys.path first)
from evoforge.llm.models import models_dir  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "server.json"
SOURCES = sorted((ROOT / "evoforge").rglob("*.py"))
# a reply format like the Researcher's, small enough to read: NAME and MOTIVATION lines, then free text
GRAMMAR = r'''root ::= "NAME: " [a-z_]+ "\nMOTIVATION: " [^\n]+ "\n" [^\x00]*'''


def _prompt(index: int, tokens: int) -> str:
    """About `tokens` tokens of this repository's source, a different file first for each index."""
    text, chars = [], tokens * 4  # ~4 characters a token for code
    for path in SOURCES[index % len(SOURCES):] + SOURCES[: index % len(SOURCES)]:
        text.append(path.read_text())
        if sum(map(len, text)) >= chars:
            break
    return "Summarise what this code does.\n\n" + "".join(text)[:chars]


def _call(client: httpx.Client, url: str, messages: list[dict[str, str]], gen: int,
          grammar: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": messages, "max_tokens": gen, "temperature": 0.3, "seed": 1,
                            "ignore_eos": grammar is None}
    if grammar is not None:
        body["grammar"] = grammar
    started = time.perf_counter()
    response = client.post(f"{url}/chat/completions", json=body, timeout=1800)
    response.raise_for_status()
    payload = response.json()
    timings, usage = payload.get("timings", {}), payload["usage"]
    return {
        "wall_s": round(time.perf_counter() - started, 2),
        "prompt_tokens": usage["prompt_tokens"],
        "cached_tokens": usage.get("prompt_tokens_details", {}).get("cached_tokens", 0),
        "completion_tokens": usage["completion_tokens"],
        "prompt_tok_s": round(timings.get("prompt_per_second", 0.0), 1),
        "gen_tok_s": round(timings.get("predicted_per_second", 0.0), 1),
        "reply": payload["choices"][0]["message"]["content"],
    }


def batched(model_file: Path, slots: int, prompt_tokens: int, gen: int, log_dir: Path) -> dict[str, Any]:
    server = LocalModelServer(model_file, n_ctx=8192, log_dir=log_dir, slots=slots).start()
    try:
        with httpx.Client(trust_env=False) as client, ThreadPoolExecutor(slots) as pool:
            calls = list(pool.map(
                lambda i: _call(client, server.url, [{"role": "user", "content": _prompt(i, prompt_tokens)}], gen),
                range(slots),
            ))
    finally:
        server.stop()
    for call in calls:
        call.pop("reply")
    slowest = max(call["wall_s"] for call in calls)
    return {"slots": slots, "calls": calls, "wall_s": slowest,
            "gen_tokens_per_wall_s": round(slots * gen / slowest, 1) if slowest else None}


def continued_and_constrained(model_file: Path, prompt_tokens: int, gen: int, log_dir: Path) -> dict[str, Any]:
    server = LocalModelServer(model_file, n_ctx=8192, log_dir=log_dir).start()
    try:
        with httpx.Client(trust_env=False) as client:
            first_turn = [{"role": "user", "content": _prompt(0, prompt_tokens)}]
            first = _call(client, server.url, first_turn, gen)
            # another prompt in between, as a novelty verdict comes between the Researcher and the Analyzer
            _call(client, server.url, [{"role": "user", "content": _prompt(7, 300)}], 16)
            follow_up = [*first_turn, {"role": "assistant", "content": first["reply"]},
                         {"role": "user", "content": "Now name the one function you would change first."}]
            second = _call(client, server.url, follow_up, gen)
            question = [{"role": "user", "content": "Propose a name and a one-line motivation for a faster "
                         "circle-packing optimizer, then describe it.\n\n" + _prompt(3, prompt_tokens // 2)}]
            free = _call(client, server.url, question, gen)
            constrained = _call(client, server.url, question, gen, grammar=GRAMMAR)
    finally:
        server.stop()
    for call in (first, second, free, constrained):
        call.pop("reply")
    return {"conversation": {"first": first, "continued_after_another_prompt": second},
            "grammar": {"unconstrained": free, "constrained": constrained}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--prompt-tokens", type=int, default=1500)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    model_file = ensure_model_file(args.model, models_dir())
    log_dir = Path(f"/tmp/evoforge-server-bench-{os.getpid()}")
    load_before = os.getloadavg()[0]
    cases = [batched(model_file, n, args.prompt_tokens, args.gen, log_dir) for n in args.slots]
    single = continued_and_constrained(model_file, args.prompt_tokens, args.gen, log_dir)
    flags_file = Path(sys.prefix) / ".llama-cpu-flags"
    payload = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "llama_cpu_flags": flags_file.read_text().split() if flags_file.is_file() else None,
                    "load_average_before": round(load_before, 2)},
        "model": args.model, "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen,
        "batched": cases, **single,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1))
    one = cases[0]["gen_tokens_per_wall_s"] if cases else None
    for case in cases:
        call_walls = [c["wall_s"] for c in case["calls"]]
        print(f"{case['slots']} slot(s): {case['gen_tokens_per_wall_s']} generated tokens per wall second"
              f" ({case['gen_tokens_per_wall_s'] / one:.2f}x one slot), call wall p50 {statistics.median(call_walls)} s"
              if one else f"{case['slots']} slot(s): no figures")
    conversation = single["conversation"]
    print(f"continued conversation: {conversation['continued_after_another_prompt']['cached_tokens']} of "
          f"{conversation['continued_after_another_prompt']['prompt_tokens']} prompt tokens from the cache, "
          f"{conversation['continued_after_another_prompt']['wall_s']} s (first turn {conversation['first']['wall_s']} s)")
    grammar = single["grammar"]
    print(f"grammar: {grammar['constrained']['gen_tok_s']} tok/s constrained against "
          f"{grammar['unconstrained']['gen_tok_s']} unconstrained")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
