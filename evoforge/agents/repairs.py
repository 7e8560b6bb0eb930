"""An edit applied the way both the Researcher and the Debugger apply one: then the repairs a reader would make
without asking (the fixed region restored, names the edit left unbound bound again), each said in words."""

from __future__ import annotations

from collections.abc import Sequence

from evoforge.agents.editing import Edit, apply_edit, keep_fixed_region
from evoforge.agents.unbound_names import bind_unbound_names


def apply_repaired_edit(base_code: str, edit: Edit, *, fixed_from: str, evolve_block: bool,
                        sources: Sequence[str], required: Sequence[str]) -> tuple[str, str, list[str]]:
    """(code, edit mode, repairs): `edit` applied to `base_code`; where the task has an evolvable block, its fixed
    code restored as `fixed_from` has it (first, so that the fixed code binds what it defines and imports); then
    the names left unbound bound again from `base_code` and `sources`, and the `required` functions named back.
    Raises EditError when the edit cannot be applied."""
    code, mode = apply_edit(base_code, edit)
    repairs: list[str] = []
    if evolve_block:
        code, kept = keep_fixed_region(fixed_from, code)
        repairs.extend([kept] if kept else [])
    code, bound = bind_unbound_names(base_code, code, sources, required)
    return code, mode, [*repairs, *bound]
