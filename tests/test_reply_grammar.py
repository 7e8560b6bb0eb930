"""The reply grammars are valid GBNF for every built-in task (checked by llama.cpp's own server, which refuses a
grammar it cannot parse), anchor SEARCH lines to the program's own lines, and keep edit markers out of a fenced
program."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from evoforge.agents import reply_grammar
from evoforge.agents.analyzer import parse_report
from evoforge.agents.reply_grammar import (
    ANALYZER_GRAMMAR,
    MAX_REPORT_LINE_CHARS,
    debugger_grammar,
    researcher_grammar,
    tree_reply_grammar,
)
from evoforge.llm import ensure_model_file, models_dir
from evoforge.llm.llama_server import LocalModelServer
from evoforge.tasks.spec import list_builtin_tasks, load_task
from evoforge.tasks.tree import decode_bundle

AWKWARD = '''import re
# EVOLVE-BLOCK-START
PATTERN = re.compile(r"\\d+\\s*\\"q\\"")\t# a tab, quotes and backslashes
def run():
    return "a\\\\b"  # ünïcode
# EVOLVE-BLOCK-END
def fixed():
    return 1
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModelServer]:
    model = ensure_model_file("qwen2.5-coder-0.5b", models_dir())
    running = LocalModelServer(model, n_ctx=1024, log_dir=tmp_path_factory.mktemp("logs"), n_threads=1).start()
    yield running
    running.stop()


def _complete(server: LocalModelServer, prompt: str, grammar: str, n: int) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{server.port}/completion",
        json={"prompt": prompt, "grammar": grammar, "n_predict": n, "temperature": 0, "seed": 1},
        timeout=300,
        trust_env=False,
    )


def _parses(server: LocalModelServer, grammar: str) -> None:
    response = _complete(server, "NAME:", grammar, 1)
    assert response.status_code == 200, response.text[:500]


@pytest.mark.integration
@pytest.mark.local_llm
def test_the_server_refuses_a_broken_grammar(server: LocalModelServer) -> None:
    response = _complete(server, "x", 'root ::= "a" missing-rule', 1)  # the check below can fail
    assert response.status_code >= 400 and "grammar" in response.text.lower(), response.text[:500]


@pytest.mark.integration
@pytest.mark.local_llm
@pytest.mark.parametrize("task_name", list_builtin_tasks())
def test_grammars_of_every_seed_program_parse(server: LocalModelServer, task_name: str) -> None:
    task = load_task(task_name)
    if task.is_tree:  # file-addressed replies, each file's SEARCH lines its own
        files = decode_bundle(task.seed_code())
        _parses(server, tree_reply_grammar(files, first_line="NAME"))
        _parses(server, tree_reply_grammar(files, first_line="FIX"))
        return
    program = task.program_path.read_text()
    _parses(server, researcher_grammar(program, evolve_block=task.evolve_block))
    _parses(server, debugger_grammar(program, evolve_block=task.evolve_block))


@pytest.mark.integration
@pytest.mark.local_llm
def test_awkward_characters_are_escaped(server: LocalModelServer) -> None:
    _parses(server, researcher_grammar(AWKWARD, evolve_block=True))


@pytest.mark.integration
@pytest.mark.local_llm
def test_a_fenced_program_cannot_hold_edit_markers(server: LocalModelServer) -> None:
    """A text whose obvious continuation is a SEARCH marker: free, the model writes it; under the fenced
    program's line rule it cannot."""
    prompt = "```python\n" + "<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n" * 4
    free = _complete(server, prompt, 'root ::= [^\\x00]+', 8)
    assert free.status_code == 200 and free.json()["content"].startswith("<<<"), free.text[:300]
    lines_only = "root ::= code-line+\n" + reply_grammar._REWRITE_RULES.strip().splitlines()[1]
    fenced = _complete(server, prompt, lines_only, 8)
    assert fenced.status_code == 200, fenced.text[:300]
    lines = fenced.json()["content"].splitlines()
    assert not any(line.startswith(("<", "=", ">")) for line in lines), lines


@pytest.mark.integration
@pytest.mark.local_llm
def test_an_analyzer_report_under_its_grammar_has_every_line_and_ends(server: LocalModelServer) -> None:
    prompt = "A program placing circles scored 2.45 (a 5x5 grid), below the best known 2.64. Write the report.\n"
    response = _complete(server, prompt, ANALYZER_GRAMMAR, 400)
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    report, _ = parse_report(body["content"])
    lines = report.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["RESULT", "NEXT"], report
    assert all(len(line) <= len("RESULT: ") + MAX_REPORT_LINE_CHARS for line in lines[:2]), report
    assert body.get("stop_type") != "limit", "the grammar lets the report end well before 400 tokens"


SHORT = "import math\n\n# EVOLVE-BLOCK-START\ndef area(r):\n    return math.pi * r * r\n# EVOLVE-BLOCK-END\n\n\n" \
        "def main():\n    print(area(2.0))\n"


@pytest.mark.integration
@pytest.mark.local_llm
def test_a_fenced_program_ends_at_the_end_of_the_evolvable_block(server: LocalModelServer) -> None:
    """Asked to copy a program, the model copies all of it; under the grammar the fence closes at the end marker."""
    prompt = f"```python\n{SHORT}```\nThe same program, copied exactly:\n"
    rules = researcher_grammar(SHORT, evolve_block=True).split("\n", 2)[2]  # without the NAME and MOTIVATION lines
    free = _complete(server, prompt, 'root ::= [^\\x00]+', 120)
    assert free.status_code == 200 and "def main" in free.json()["content"], free.text[:500]
    fenced = _complete(server, prompt, "root ::= rewrite\n" + rules, 120)
    assert fenced.status_code == 200, fenced.text[:500]
    content = fenced.json()["content"]
    assert content.endswith("# EVOLVE-BLOCK-END\n```") and "def main" not in content, content


def test_anchors_are_the_evolvable_lines_only() -> None:
    grammar = researcher_grammar(AWKWARD, evolve_block=True)
    anchors = next(line for line in grammar.splitlines() if line.startswith("anchor ::="))
    assert '"def run():\\n"' in anchors and '"    return \\"a\\\\\\\\b\\"  # ünïcode\\n"' in anchors
    assert "def fixed" not in anchors and "EVOLVE-BLOCK" not in anchors and "import re" not in anchors
    whole = researcher_grammar(AWKWARD, evolve_block=False)
    assert '"def fixed():\\n"' in next(line for line in whole.splitlines() if line.startswith("anchor ::="))


@pytest.mark.integration
@pytest.mark.local_llm
def test_a_reply_that_copies_its_prompt_is_drafted_by_ngram_lookup(server: LocalModelServer) -> None:
    # the server runs with llama_server.SPECULATIVE: a SEARCH block copies the program's lines, which the n-gram
    # lookup finds in the prompt, so most of them are drafted and accepted rather than generated one by one
    program = load_task("circle_packing").seed_code()
    prompt = (f"```python\n{program}```\nCopy the function compute_radii into a SEARCH block, unchanged, "
              "and write a REPLACE block for it.\nNAME: copy\nMOTIVATION: copy it.\n")
    response = _complete(server, prompt, researcher_grammar(program, evolve_block=True).replace(
        'root ::= "NAME: " name "\\n" "MOTIVATION: " sentence (edits | rewrite)', "root ::= edits"), 160)
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert body["content"].startswith("<<<<<<< SEARCH\n"), body["content"][:200]
    timings = body.get("timings", {})
    assert timings.get("draft_n", 0) > 0 and timings.get("draft_n_accepted", 0) > 0, timings
