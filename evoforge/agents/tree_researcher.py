"""The Researcher on a tree task: shown a map of the tree and its evolvable files, it replies with changes
addressed to files (`tree_editing.py`); a refused or unusable reply is retried with the reason, like any other."""

from __future__ import annotations

import ast
import logging
import re
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from evoforge.agents.base import add_usage, ask_researcher, message_records
from evoforge.agents.editing import EditError, unified_diff
from evoforge.agents.prior_code import prior_code_blocks
from evoforge.agents.prompting import render
from evoforge.agents.reply_grammar import tree_reply_grammar
from evoforge.agents.tree_editing import apply_tree_reply
from evoforge.agents.tree_view import tree_prompt
from evoforge.agents.unbound_names import bind_unbound_names
from evoforge.config import RunConfig
from evoforge.runtime.payloads import Candidate
from evoforge.runtime.services import services_for
from evoforge.runtime.state import State
from evoforge.tasks.tree import changed_paths, decode_bundle, encode_bundle

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[\s*#>-]*name[\s*]*[:：]\s*(?P<name>.+)$", re.IGNORECASE | re.MULTILINE)
_MOTIVATION = re.compile(
    r"^[\s*#>-]*motivation[\s*]*[:：]\s*(?P<text>.*?)"
    r"(?=^[ \t#*>-]*(?:NEW FILE|DELETE FILE|FILE)[ \t*]*:|^[ \t]*<{5,}|^[ \t]*```|\Z)",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def reply_heading(reply: str) -> tuple[str, str]:
    """(snake_case name, motivation) of a reply; empty strings where it gives none."""
    reply = _THINK.sub("", reply)
    name = _NAME.search(reply)
    motivation = _MOTIVATION.search(reply)
    snake = re.sub(r"[^0-9A-Za-z]+", "_", re.sub(r"[`*\"']", "", name.group("name"))).strip("_").lower() if name else ""
    return snake[:60], " ".join(motivation.group("text").split())[:2000] if motivation else ""


def tree_diff(parent: str, child: str) -> str:
    """The candidate's change, file by file (`a/PATH` -> `b/PATH`), as stored in the node's diff."""
    return unified_diff(parent, child, context=2)


def imports_below_header(text: str) -> str:
    """`text` with the imports put at its very top moved below the module docstring and `from __future__` lines,
    where Python needs them; `text` itself when it compiles. `merge_definitions` puts new imports at the top of
    a file, which is right for a region but not for a whole module (seen with the embedded 1.5B model: `import
    math` above train.py's docstring and `from __future__ import annotations`, a SyntaxError)."""
    try:
        compile(text, "file", "exec")
        return text
    except SyntaxError:
        pass
    lines = text.splitlines(keepends=True)
    first = 0
    while first < len(lines) and (not lines[first].strip() or (
            lines[first].startswith(("import ", "from ")) and "__future__" not in lines[first])):
        first += 1
    moved, rest = [line for line in lines[:first] if line.strip()], "".join(lines[first:])
    try:
        body = ast.parse(rest).body
    except SyntaxError:
        return text
    header_end = 0
    for position, node in enumerate(body):
        is_docstring = position == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if not (is_docstring or (isinstance(node, ast.ImportFrom) and node.module == "__future__")):
            break
        header_end = node.end_lineno or node.lineno
    rest_lines = rest.splitlines(keepends=True)
    return "".join([*rest_lines[:header_end], *moved, *rest_lines[header_end:]])


def bind_tree_names(parent: str, child: str, sources: list[str], program: str,
                    entry_points: list[str]) -> tuple[str, list[str]]:
    """`child` with the names each changed Python file reads but never binds bound again
    (`unbound_names.bind_unbound_names`, against that file of the parent), and a note per repair."""
    before, files = decode_bundle(parent), decode_bundle(child)
    notes: list[str] = []
    for path in changed_paths(parent, child):
        if path in files and path.endswith(".py"):
            required = entry_points if path == program else []
            text, bound = bind_unbound_names(before.get(path, ""), files[path], sources, required)
            files[path] = imports_below_header(text) if bound else text
            notes += [f"{path}: {note}" for note in bound]
    return (encode_bundle(files), notes) if notes else (child, [])


def propose_tree_candidate(state: State, runtime: Runtime[RunConfig]) -> dict[str, Any]:
    """Ask the Researcher for a tree candidate; unusable or refused replies are retried within
    `max_parse_retries` for the round, then the round is recorded as failed."""
    res = services_for(state.run_id, runtime)
    assert state.parent is not None, "sample_context must choose a parent before the Researcher runs"
    tree = res.task.program_tree
    parent_code: str = state.parent["code"]
    grammar = tree_reply_grammar(decode_bundle(parent_code), first_line="NAME")
    shown = tree_prompt(tree, parent_code, first=res.task.program or None)
    usage = state.usage
    errors: list[str] = []
    turned_back: list[str] = []
    tries = max(1, res.config.bounds.max_parse_retries + 1 - state.parse_failures)
    for parse_try in range(tries):
        messages = render(res.task, "researcher_tree", parent=state.parent, inspirations=state.inspirations,
                          cognition=state.cognition, feedback=[*state.feedback, *turned_back],
                          focus_idea=res.config.cognition.focus, **shown)
        if (asked := ask_researcher(res, messages, state, parse_try, grammar, errors)) is None:
            continue
        reply, call_usage = asked
        usage = add_usage(usage, "researcher", call_usage)
        try:
            code, modes = apply_tree_reply(tree, parent_code, reply)
            code, repairs = bind_tree_names(parent_code, code, prior_code_blocks(state.cognition),
                                            res.task.program, res.task.entry_points)
        except EditError as exc:
            log.info("round %s: reply %d turned back: %s", state.round, parse_try + 1, exc)
            excerpt = " ".join(reply.split())[:160]
            errors.append(f"{exc} (the reply began: {excerpt!r})")
            turned_back.append(f"reply {parse_try + 1} could not be used: {exc}")
            continue
        name, motivation = reply_heading(reply)
        candidate: Candidate = {
            "name": name or f"candidate_r{state.round}", "motivation": motivation, "code": code,
            "diff": tree_diff(parent_code, code), "edit_mode": "files", "files": modes, "repairs": repairs,
            # the Analyzer continues this conversation, so a server's prompt cache serves its prefix
            "conversation": message_records([*messages, AIMessage(reply)])}
        return {"candidate": candidate, "usage": usage, "parse_failures": state.parse_failures + len(errors),
                "feedback": turned_back}
    return {"candidate": None, "usage": usage, "parse_failures": state.parse_failures + len(errors),
            "status": "parse_failed", "feedback": turned_back,
            "error": f"no usable reply after {len(errors)} attempts; last problem: {errors[-1]}"}
