"""The reply grammars are valid GBNF for every built-in task and anchor SEARCH lines to the program's own lines."""

from __future__ import annotations

import llama_cpp  # the `local` extra; the grammars are checked by llama.cpp's own parser
import pytest

from evoforge.agents.reply_grammar import debugger_grammar, researcher_grammar
from evoforge.tasks.spec import list_builtin_tasks, load_task

AWKWARD = '''import re
# EVOLVE-BLOCK-START
PATTERN = re.compile(r"\\d+\\s*\\"q\\"")\t# a tab, quotes and backslashes
def run():
    return "a\\\\b"  # ünïcode
# EVOLVE-BLOCK-END
def fixed():
    return 1
'''


def _parses(grammar: str) -> None:
    llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)


@pytest.mark.parametrize("task_name", list_builtin_tasks())
def test_grammars_of_every_seed_program_parse(task_name: str) -> None:
    task = load_task(task_name)
    program = task.program_path.read_text()
    _parses(researcher_grammar(program, evolve_block=task.evolve_block))
    _parses(debugger_grammar(program, evolve_block=task.evolve_block))


def test_awkward_characters_are_escaped() -> None:
    _parses(researcher_grammar(AWKWARD, evolve_block=True))


def test_anchors_are_the_evolvable_lines_only() -> None:
    grammar = researcher_grammar(AWKWARD, evolve_block=True)
    anchors = next(line for line in grammar.splitlines() if line.startswith("anchor ::="))
    assert '"def run():\\n"' in anchors and '"    return \\"a\\\\\\\\b\\"  # ünïcode\\n"' in anchors
    assert "def fixed" not in anchors and "EVOLVE-BLOCK" not in anchors and "import re" not in anchors
    whole = researcher_grammar(AWKWARD, evolve_block=False)
    assert '"def fixed():\\n"' in next(line for line in whole.splitlines() if line.startswith("anchor ::="))
