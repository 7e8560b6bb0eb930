"""A LangChain chat model that replays fixed replies: the offline stand-in for tests and demos.

Script file (YAML), one key per role, each a list of entries or `{cycle: true, replies: [...]}`:

    researcher:
      cycle: true
      replies:
        - "NAME: ...\\n```python\\n...\\n```"
    debugger:
      - {reply: "fixed code ...", when: "Traceback"}   # only when the last human message contains it
      - {error: "server overloaded"}                   # raises, like a provider failure
      - "a plain reply"

Entries whose `when` matches the last human message are used first, in order; otherwise the plain
entries are used in order. When the usable entries are all used, the model starts over if the role
has `cycle: true`, else repeats the last one.

One model serves every run of its process (chat models are cached per configuration), so the place in the
script is kept per run: each run (all its lanes together) reads the script from its start. A call names its
run in its metadata (`RUN_ID_METADATA`, set by agents/base.py:ask); a call without one has a place of its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr, field_validator

from evoforge.config import ROLES
from evoforge.llm.usage import RUN_ID_METADATA, estimate_tokens

_ENTRY_KEYS = {"reply", "error", "when"}
# Graph lanes may call one model from several threads; a module-level lock keeps the model picklable.
_PICK_LOCK = threading.Lock()


class ScriptedProviderError(RuntimeError):
    """Raised by a script's `{error: ...}` entry, standing in for a provider failure."""


class ScriptExhaustedError(LookupError):
    """The script has no entry that fits the prompt (no plain entries and no matching `when`)."""


@dataclass(frozen=True)
class ScriptEntry:
    """One scripted answer: a reply or an error, optionally only when the prompt contains `when`."""

    reply: str | None = None
    error: str | None = None
    when: str | None = None

    @classmethod
    def parse(cls, raw: Any, where: str) -> ScriptEntry:
        if isinstance(raw, str):
            return cls(reply=raw)
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: an entry must be a string or a mapping, got {raw!r}")
        unknown = set(raw) - _ENTRY_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} in entry {raw!r}")
        if ("reply" in raw) == ("error" in raw):
            raise ValueError(f"{where}: an entry needs exactly one of 'reply' or 'error', got {raw!r}")
        values = {key: raw[key] for key in _ENTRY_KEYS if key in raw}
        for key, value in values.items():
            if not isinstance(value, str):
                raise ValueError(f"{where}: '{key}' must be a string, got {value!r}")
        return cls(**values)


def _last_human_text(messages: list[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text
    return ""


class ScriptedChatModel(BaseChatModel):
    """Replays `replies` (strings, entry mappings or `ScriptEntry`s); records every prompt in `received`."""

    replies: list[ScriptEntry]
    cycle: bool = False
    source: str = "<in-process>"
    """Where the script came from, for error messages."""
    report_usage: bool = True
    """False imitates a provider that reports no token usage."""

    _used: dict[str, set[int]] = PrivateAttr(default_factory=dict)
    """Per run id: the entries that run was given."""
    _received: list[list[BaseMessage]] = PrivateAttr(default_factory=list)

    @field_validator("replies", mode="before")
    @classmethod
    def _parse_replies(cls, value: Any) -> list[ScriptEntry]:
        if not isinstance(value, list):
            raise ValueError(f"replies: expected a list of entries, got {value!r}")
        return [
            e if isinstance(e, ScriptEntry) else ScriptEntry.parse(e, f"replies[{i}]")
            for i, e in enumerate(value)
        ]

    @classmethod
    def from_file(cls, path: str | Path, role: str) -> ScriptedChatModel:
        """Read the entries for `role` from a YAML script (a role missing from the file gets none)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"script: cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"script {path}: expected a mapping of roles, got {type(data).__name__}")
        unknown = set(data) - set(ROLES)
        if unknown:
            raise ValueError(f"script {path}: unknown roles {sorted(unknown)}; roles are {list(ROLES)}")
        if role not in ROLES:
            raise ValueError(f"role: expected one of {list(ROLES)}, got {role!r}")
        section = data.get(role) or []
        cycle = False
        if isinstance(section, dict):
            extra = set(section) - {"cycle", "replies"}
            if extra:
                raise ValueError(f"script {path}: role {role!r} has unknown keys {sorted(extra)}")
            cycle = bool(section.get("cycle", False))
            section = section.get("replies") or []
        if not isinstance(section, list):
            raise ValueError(f"script {path}: role {role!r} must be a list of entries, got {section!r}")
        entries = [ScriptEntry.parse(raw, f"script {path}, {role}[{i}]") for i, raw in enumerate(section)]
        return cls(replies=entries, cycle=cycle, source=f"{path} ({role})")

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def received(self) -> list[list[BaseMessage]]:
        """Every prompt this model was given, oldest first."""
        return self._received

    def _pick(self, prompt: str, run_id: str) -> ScriptEntry:
        entries = self.replies
        used = self._used.setdefault(run_id, set())
        candidates = [i for i, e in enumerate(entries) if e.when is not None and e.when in prompt]
        if not candidates:
            candidates = [i for i, e in enumerate(entries) if e.when is None]
        if not candidates:
            raise ScriptExhaustedError(
                f"script {self.source} has no entry for a prompt ending {prompt[-200:]!r}"
            )
        fresh = [i for i in candidates if i not in used]
        if fresh:
            chosen = fresh[0]
        elif self.cycle:
            used.difference_update(candidates)
            chosen = candidates[0]
        else:
            chosen = candidates[-1]
        used.add(chosen)
        return entries[chosen]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # kwargs (seed, ...) are accepted like a real provider's and have no effect on a script.
        run_id = str((run_manager.metadata if run_manager is not None else {}).get(RUN_ID_METADATA, ""))
        with _PICK_LOCK:
            self._received.append(list(messages))
            entry = self._pick(_last_human_text(messages), run_id)
        if entry.error is not None:
            raise ScriptedProviderError(entry.error)
        text = entry.reply or ""
        message = AIMessage(content=text)
        if self.report_usage:
            tokens_in = sum(estimate_tokens(m.text) for m in messages)
            tokens_out = estimate_tokens(text)
            message.usage_metadata = {
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            }
        return ChatResult(generations=[ChatGeneration(message=message)])
