"""Grammars (llama.cpp GBNF) of the Researcher's, the Debugger's and the Analyzer's reply formats, for
constrained decoding.

A small model asked for SEARCH/REPLACE edits mostly fails in ways a grammar rules out: a malformed block,
SEARCH lines that are not in the program, prose after the edit, or a reply cut off mid-block. Under these
grammars every SEARCH line is one of the program's own lines (inside its evolvable region), the reply holds
one to `MAX_BLOCKS` blocks (or one fenced block of code) and ends right after them. What the
lines *say* stays free; the parser (`editing.py`) still checks contiguity and applies the edit.
"""

from __future__ import annotations

from evoforge.agents.editing import BLOCK_END, BLOCK_START, split_evolve_block

MAX_BLOCKS = 4
MAX_SENTENCE_CHARS = 320
"""A MOTIVATION or FIX line: room for two or three sentences, not a paragraph (every token costs ~0.1 s here)."""
MAX_SEARCH_LINES = 12
"""Copying a whole function into SEARCH (and often an empty REPLACE after it) is the 1.5B model's habit and its
slowest way to say anything; a SEARCH stops at this many lines, which is room for any focused edit."""
MAX_REPLACE_LINES = 80

_COMMON_RULES = f"""
sentence ::= [^\\n]{{1,{MAX_SENTENCE_CHARS}}} "\\n"
edits ::= block ("\\n"? block){{0,{MAX_BLOCKS - 1}}}
block ::= "<<<<<<< SEARCH\\n" anchor{{1,{MAX_SEARCH_LINES}}} "=======\\n" new-line{{1,{MAX_REPLACE_LINES}}} ">>>>>>> REPLACE\\n"
new-line ::= "\\n" | [^>`\\n] [^\\n]* "\\n"
"""
# A REPLACE line may not start with ">": that is how the block's end stays unambiguous (no Python line does);
# nor with "`": the 1.5B model otherwise pastes a fenced copy of the whole program into a REPLACE.
# A REPLACE holds at least one line (a blank one deletes): an empty one was mostly a SEARCH copied by mistake.

_REWRITE_RULES = """
rewrite ::= "```python\\n" code-line+ "```"
code-line ::= "\\n" | [^`<=>\\n] [^\\n]* "\\n"
"""
# A line of the fenced program may not start with "<", "=" or ">" (no Python line does): the 1.5B model otherwise
# opens a fence and writes SEARCH/REPLACE markers inside it, which is neither format (seen in 1 of 3 Researcher
# replies of a parse-failed round, benchmark of 2026-12-03).

_REWRITE_ENDING_AT_BLOCK_END = """
rewrite ::= "```python\\n" code-line+ end-line? "```"
code-line ::= "\\n" | [^`<=>#\\n] [^\\n]* "\\n" | comment-line | start-line
comment-line ::= "#" ([^ \\n] [^\\n]* | " " ([^E\\n] [^\\n]*)?)? "\\n"
"""
# Where the program's markers are comment lines of their own ("# EVOLVE-BLOCK-START"), a fenced program may hold
# the start line, but its end line closes the fence: what follows it is fixed code that the edit may not change.
# The 1.5B model copied it anyway in 40 of 50 fenced replies (two benchmark runs, 2026-12-03), ~90 tokens each,
# and some replies ran into the token cap there. The price: a comment at the start of a line may not begin
# with "# E".


def _rewrite_rules(program: str, *, evolve_block: bool) -> str:
    """The fenced-program rules for `program`: ending at its EVOLVE-BLOCK-END line where that line is a comment
    of its own at the start of a line, else the plain line rule."""
    marker_lines = [line.rstrip() for line in program.splitlines() if BLOCK_START in line or BLOCK_END in line]
    markers = [line for line in marker_lines if line.startswith("# E")]
    if not evolve_block or len(markers) != 2 or len(marker_lines) != 2 or BLOCK_START not in markers[0]:
        return _REWRITE_RULES.strip()
    return "\n".join([_REWRITE_ENDING_AT_BLOCK_END.strip(), f"start-line ::= {_literal(markers[0])}",
                      f"end-line ::= {_literal(markers[1])}"])


def _literal(line: str) -> str:
    """`line` + newline as a GBNF string literal."""
    out = []
    for char in line:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '\\n"'


def _anchor_rule(program: str, *, evolve_block: bool) -> str:
    """`anchor` matches any one line of the region an edit may touch (the evolvable block, else everything)."""
    parts = split_evolve_block(program) if evolve_block else None
    region = parts[1] if parts is not None else program
    lines = sorted({line.rstrip("\r") for line in region.splitlines()} - {""})
    lines = [line for line in lines if BLOCK_START not in line and BLOCK_END not in line]
    choices = [_literal(line) for line in lines] + ['"\\n"']
    return "anchor ::= " + " | ".join(choices)


def researcher_grammar(program: str, *, evolve_block: bool) -> str:
    """NAME and MOTIVATION lines, then SEARCH/REPLACE blocks against `program`, or one fenced new program."""
    root = 'root ::= "NAME: " name "\\n" "MOTIVATION: " sentence (edits | rewrite)\nname ::= [A-Za-z0-9_]+'
    return "\n".join([root, _COMMON_RULES.strip(), _rewrite_rules(program, evolve_block=evolve_block),
                      _anchor_rule(program, evolve_block=evolve_block)])


def debugger_grammar(program: str, *, evolve_block: bool) -> str:
    """A FIX line, then SEARCH/REPLACE blocks against the failing `program`, or one fenced block of fixed
    functions."""
    root = 'root ::= "FIX: " sentence (edits | rewrite)'
    return "\n".join([root, _COMMON_RULES.strip(), _rewrite_rules(program, evolve_block=evolve_block),
                      _anchor_rule(program, evolve_block=evolve_block)])


MAX_REPORT_LINE_CHARS = 120
MAX_INSIGHTS = 1

ANALYZER_GRAMMAR = f"""
root ::= "RESULT: " report-line "NEXT: " report-line insight{{0,{MAX_INSIGHTS}}}
report-line ::= [^\\n]{{1,{MAX_REPORT_LINE_CHARS}}} "\\n"
insight ::= "INSIGHT: " [^\\n]{{1,{MAX_REPORT_LINE_CHARS + 40}}} "\\n"
""".strip()
"""The Analyzer's two report lines and at most one lesson, each one bounded line. Measured on circle_packing with
the embedded 1.5B model (two 20-minute runs, 2026-12-03): unconstrained, 10 of 11 reports ran into the 160-token
cap inside a long RESULT or FAILED paragraph, so 2 had a NEXT line and 2 a lesson to write back. With four lines
(RESULT, WORKED, FAILED, NEXT; 2026-12-04 19:28) every line ran to the cap, ~167 tokens a report and 8.5 s of
generation, and WORKED and FAILED said again what RESULT had said: RESULT now holds what happened and why."""


MAX_FILE_SECTIONS = 4
"""A tree reply changes at most this many files: room for an idea that spans a model, its training loop and its
config, not for a rewrite of the repository."""

_TREE_RULES = f"""
sections ::= section ("\\n"? section){{0,{MAX_FILE_SECTIONS - 1}}}
section ::= "FILE: " edited | "NEW FILE: " new-path "\\n" whole-file | "DELETE FILE: " evolvable-path "\\n"
new-path ::= [A-Za-z0-9_./-]{{1,120}}
whole-file ::= "```" [a-z]{{0,8}} "\\n" code-line+ "```\\n"
code-line ::= "\\n" | [^`<=>\\n] [^\\n]* "\\n"
new-line ::= "\\n" | [^>`\\n] [^\\n]* "\\n"
"""
# Paths after NEW FILE are free: a path the task forbids (a fixed file, `..`) is turned back by the parser with the
# reason, which tells the model more than a grammar that never lets it try.


def tree_reply_grammar(files: dict[str, str], *, first_line: str) -> str:
    """A Researcher's (`first_line` 'NAME') or Debugger's ('FIX') reply to a tree program: the heading, then one
    to `MAX_FILE_SECTIONS` file sections; an edited file's SEARCH lines are drawn from that file's own lines."""
    heading = ('"NAME: " [A-Za-z0-9_]+ "\\n" "MOTIVATION: " sentence' if first_line == "NAME"
               else '"FIX: " sentence')
    rules = [f"root ::= {heading} sections", f"sentence ::= [^\\n]{{1,{MAX_SENTENCE_CHARS}}} \"\\n\"",
             _TREE_RULES.strip()]
    edited, paths = [], []
    for number, (path, text) in enumerate(sorted(files.items())):
        paths.append(_literal(path).removesuffix('\\n"') + '"')
        lines = sorted({line.rstrip("\r") for line in text.splitlines()} - {""})
        rules.append(f"anchor-{number} ::= " + " | ".join([_literal(line) for line in lines] + ['"\\n"']))
        rules.append(f'block-{number} ::= "<<<<<<< SEARCH\\n" anchor-{number}{{1,{MAX_SEARCH_LINES}}} "=======\\n" '
                     f'new-line{{1,{MAX_REPLACE_LINES}}} ">>>>>>> REPLACE\\n"')
        edited.append(f'{paths[-1]} "\\n" (block-{number} ("\\n"? block-{number}){{0,{MAX_BLOCKS - 1}}} | whole-file)')
    rules.append("edited ::= " + " | ".join(f"({choice})" for choice in edited))
    rules.append("evolvable-path ::= " + " | ".join(paths))
    return "\n".join(rules)
