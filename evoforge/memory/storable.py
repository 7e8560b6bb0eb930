"""Text the database can hold, whatever a model, an evaluator or a program wrote.

Postgres `text` and `jsonb` refuse the NUL character, and a lone surrogate (what `errors="surrogateescape"`
leaves of undecodable bytes) cannot be encoded as UTF-8 at all: either one in a model reply, a traceback or a
program's output would make every write of its round fail, and the resumed run fail the same way. So every
connection of the database (node memory, cognition, run records and LangGraph's checkpoints alike) dumps
strings through `storable_text`, as plain parameters and inside JSON, and such a character is stored as U+FFFD,
the Unicode replacement character, where it stood.
"""

from __future__ import annotations

import json
import re
from typing import Any

from psycopg.abc import AdaptContext, Buffer
from psycopg.types.json import set_json_dumps
from psycopg.types.string import StrBinaryDumper, StrDumperUnknown

REPLACEMENT = "\ufffd"
_REFUSED = re.compile("[\x00\ud800-\udfff]")
"""NUL and the surrogate code points: a Python str holding one of these cannot be stored as text."""


def storable_text(text: str) -> str:
    """`text` with each character Postgres text cannot hold replaced by U+FFFD."""
    return _REFUSED.sub(REPLACEMENT, text)


def storable_value(value: Any) -> Any:
    """A JSON-ready value with `storable_text` applied to every string in it, keys included."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_value(key): storable_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable_value(item) for item in value]
    return value


def storable_json(value: Any) -> str:
    """What a `Json`/`Jsonb` parameter becomes: JSON whose strings are all storable."""
    return json.dumps(storable_value(value))


class _StorableStrDumper(StrDumperUnknown):
    """The default text-format dumper of `str` (psycopg's pure-Python class, so that `dump` is ours)."""

    def dump(self, obj: str) -> Buffer | None:
        return super().dump(storable_text(obj))


class _StorableStrBinaryDumper(StrBinaryDumper):
    def dump(self, obj: str) -> Buffer | None:
        return super().dump(storable_text(obj))


def store_only_storable_text(context: AdaptContext) -> None:
    """Make `context` (a connection) dump every string, plain or inside JSON, through `storable_text`."""
    # the dumper registered last serves %s: text format, as psycopg's own registration order leaves it
    context.adapters.register_dumper(str, _StorableStrBinaryDumper)
    context.adapters.register_dumper(str, _StorableStrDumper)
    set_json_dumps(storable_json, context)
