"""Every bounded loop of a round, from the node's counter to the router's choice, below, at and over the bounds of
`RunConfig().bounds` and the run's stop criteria. The nodes run on stand-ins for their database, sandbox and model
(node_stand_ins.py); the routers' own branches, state in and next node out, are in test_routing.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from node_stand_ins import (
    SEED,
    TASK,
    ScriptedAsk,
    StandInNodes,
    advance,
    candidate,
    round_state,
    runtime,
    use_stand_ins,
)

# the Researcher and the Debugger call their models through base.ask_researcher and patches.ask_debugger: their
# stand-ins replace base.ask and patches.ask
from evoforge.agents import (
    base,
    debugger,
    engineer,
    novelty_checker,
    patches,
    recorder,
    researcher,
    static_checker,
)
from evoforge.agents.code_view import edit_and_view
from evoforge.agents.prior_code import prior_code_candidate
from evoforge.agents.unbound_names import unbound_names
from evoforge.config import RunConfig
from evoforge.graph import routing
from evoforge.llm.usage import LLMCallError
from evoforge.memory.nodes import code_hash
from evoforge.runtime.state import State
from evoforge.tools.evaluation import StageResult

BOUNDS = RunConfig().bounds
assert min(BOUNDS.max_static_retries, BOUNDS.max_novelty_retries, BOUNDS.max_parse_retries,
           BOUNDS.max_debug_attempts) >= 1, "the defaults must leave a retry for 'below the bound' to mean anything"


@pytest.fixture
def config(tmp_path: Path) -> RunConfig:
    return RunConfig(state_dir=tmp_path)


@pytest.mark.parametrize("router", [routing.route_after_check_candidate, routing.route_after_check_novelty])
def test_without_a_verdict_the_researcher_is_asked_again(router: Any) -> None:
    # the branch test_routing.py leaves out: no report at all (None), not a report that says no
    assert router(round_state(candidate=candidate())) == "propose_candidate"


# --- Static-Checker: a rejection goes back to the Researcher until `max_static_retries` ---

BROKEN = SEED.replace("RING_RADIUS = 0.3065", "RING_RADIUS = (0.31")


@pytest.mark.parametrize(("earlier", "expected"), [
    (0, "propose_candidate"),
    (BOUNDS.max_static_retries - 1, "propose_candidate"),  # the last retry the bound allows
    (BOUNDS.max_static_retries, "record_node"),  # one rejection over the bound
])
def test_a_static_rejection_is_retried_up_to_its_bound(
    monkeypatch: pytest.MonkeyPatch, config: RunConfig, earlier: int, expected: str
) -> None:
    use_stand_ins(monkeypatch, static_checker, config)
    state = round_state(candidate=candidate(BROKEN), static_retries=earlier)
    after = advance(state, static_checker.check_candidate(state, runtime(config)))
    assert after.static_retries == earlier + 1
    assert after.feedback == [f"static check rejected 'wider_ring': {after.static_report['reasons'][0]}"]
    assert "SyntaxError" in after.static_report["reasons"][0]
    assert after.status == ("static_rejected" if expected == "record_node" else "")
    assert routing.route_after_check_candidate(after) == expected


def test_a_static_bound_of_zero_records_the_first_rejection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = RunConfig(state_dir=tmp_path, bounds={"max_static_retries": 0})
    use_stand_ins(monkeypatch, static_checker, config)
    state = round_state(candidate=candidate(BROKEN))
    after = advance(state, static_checker.check_candidate(state, runtime(config)))
    assert after.error is not None and after.error.startswith("static check: SyntaxError")
    assert routing.route_after_check_candidate(after) == "record_node"


def test_a_clean_candidate_goes_on_to_the_novelty_check(monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    use_stand_ins(monkeypatch, static_checker, config)
    state = round_state(candidate=candidate(), static_retries=BOUNDS.max_static_retries)
    after = advance(state, static_checker.check_candidate(state, runtime(config)))
    assert after.static_report == {"ok": True, "reasons": [], "repaired": None, "deferred_to_debugger": None}
    assert after.static_retries == BOUNDS.max_static_retries and not after.feedback
    assert routing.route_after_check_candidate(after) == "check_novelty"


# --- Novelty-Checker: a duplicate goes back to the Researcher until `max_novelty_retries` ---

class StandInEmbedder:
    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0, 0.0] for _ in texts]


GRID = SimpleNamespace(id="run-r0002-l0", name="grid")


def novelty_stand_ins(monkeypatch: pytest.MonkeyPatch, config: RunConfig, nodes: StandInNodes,
                      *judge_replies: str | Exception) -> ScriptedAsk:
    use_stand_ins(monkeypatch, novelty_checker, config, nodes=nodes, embedder=StandInEmbedder())
    judge = ScriptedAsk(*judge_replies)
    monkeypatch.setattr(novelty_checker, "ask", judge)
    return judge


@pytest.mark.parametrize(("earlier", "expected"), [
    (0, "propose_candidate"),
    (BOUNDS.max_novelty_retries - 1, "propose_candidate"),
    (BOUNDS.max_novelty_retries, "record_node"),
])
def test_a_duplicate_is_retried_up_to_its_bound(
    monkeypatch: pytest.MonkeyPatch, config: RunConfig, earlier: int, expected: str
) -> None:
    novelty_stand_ins(monkeypatch, config, StandInNodes(same_code=GRID))
    state = round_state(candidate=candidate(), novelty_retries=earlier)
    after = advance(state, novelty_checker.check_novelty(state, runtime(config)))
    assert after.novelty_retries == earlier + 1
    assert after.feedback[-1].startswith("'wider_ring' duplicates node 'grid' (similarity 1.0)")
    assert after.feedback[-1].endswith("that idea was tried: propose a different idea.")
    recorded = expected == "record_node"
    assert after.status == ("duplicate" if recorded else "") and (after.error is not None) == recorded
    assert routing.route_after_check_novelty(after) == expected


def test_an_echo_of_the_parent_is_told_to_write_the_change(monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    novelty_stand_ins(monkeypatch, config, StandInNodes(same_code=SimpleNamespace(id="run-r0000-l0", name="seed")))
    state = round_state(candidate=candidate(SEED))
    after = advance(state, novelty_checker.check_novelty(state, runtime(config)))
    assert "it is the parent again" in after.feedback[-1]
    assert routing.route_after_check_novelty(after) == "propose_candidate"


def test_similarity_above_the_duplicate_threshold_needs_no_judge(monkeypatch: pytest.MonkeyPatch,
                                                                 config: RunConfig) -> None:
    judge = novelty_stand_ins(monkeypatch, config,
                              StandInNodes(nearest=((GRID, config.novelty.duplicate_similarity),)))
    state = round_state(candidate=candidate())
    after = advance(state, novelty_checker.check_novelty(state, runtime(config)))
    assert after.novelty_report["verdict"] == "duplicate" and judge.calls == []
    assert routing.route_after_check_novelty(after) == "propose_candidate"


@pytest.mark.parametrize(("judge_reply", "verdict", "expected"), [
    ("DUPLICATE\nthe same ring, one radius apart", "duplicate", "propose_candidate"),
    ("NOVEL\na different layout", "novel", "run_evaluation"),
    (LLMCallError("the judge is down"), "novel", "run_evaluation"),  # benefit of the doubt: evaluation decides
])
def test_the_grey_band_is_decided_by_the_judge(monkeypatch: pytest.MonkeyPatch, config: RunConfig,
                                               judge_reply: str | Exception, verdict: str, expected: str) -> None:
    grey = (config.novelty.judge_similarity + config.novelty.duplicate_similarity) / 2
    judge = novelty_stand_ins(monkeypatch, config, StandInNodes(nearest=((GRID, grey),)), judge_reply)
    state = round_state(candidate=candidate())
    after = advance(state, novelty_checker.check_novelty(state, runtime(config)))
    assert len(judge.calls) == 1 and after.novelty_report["verdict"] == verdict
    assert after.novelty_report["nearest_id"] == GRID.id
    assert routing.route_after_check_novelty(after) == expected


def test_a_candidate_with_no_near_node_is_evaluated(monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    novelty_stand_ins(monkeypatch, config, StandInNodes())
    state = round_state(candidate=candidate(), novelty_retries=BOUNDS.max_novelty_retries)
    after = advance(state, novelty_checker.check_novelty(state, runtime(config)))
    assert after.novelty_report["verdict"] == "novel" and after.novelty_retries == BOUNDS.max_novelty_retries
    assert routing.route_after_check_novelty(after) == "run_evaluation"


# --- Researcher: an unusable reply is asked again, `max_parse_retries` times ---

USABLE = ("NAME: wider ring\nMOTIVATION: a wider ring leaves room in the middle.\n"
          "<<<<<<< SEARCH\nRING_RADIUS = 0.3065\n=======\nRING_RADIUS = 0.32\n>>>>>>> REPLACE\n")


def test_unusable_replies_are_retried_then_the_round_is_recorded(monkeypatch: pytest.MonkeyPatch,
                                                                  config: RunConfig) -> None:
    use_stand_ins(monkeypatch, researcher, config)
    prompts = RecordedPrompts(monkeypatch)
    model = ScriptedAsk(*["I would move the circles."] * (BOUNDS.max_parse_retries + 1))
    monkeypatch.setattr(base, "ask", model)
    state = round_state(feedback=["static check rejected 'ring': SyntaxError"])
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert len(model.calls) == BOUNDS.max_parse_retries + 1
    retry = prompts.variables[1]["feedback"]
    assert retry[0] == "static check rejected 'ring': SyntaxError" and retry[1].startswith("reply 1 could not be used: no code found"), \
        "the error goes back to the model, after what the round was told before"
    assert all(len(call) == 1 for call in model.calls), "a retry is a fresh prompt, not the failed reply continued"
    assert (after.candidate, after.status, after.parse_failures) == (None, "parse_failed", BOUNDS.max_parse_retries + 1)
    assert after.error is not None and after.error.startswith(f"no usable reply after {BOUNDS.max_parse_retries + 1}")
    assert routing.route_after_propose_candidate(after) == "record_node"


class RecordedPrompts:
    """Stands in for the Researcher's `render`: keeps the variables of every prompt it renders."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.variables: list[dict[str, Any]] = []
        monkeypatch.setattr(researcher, "render", self)

    def __call__(self, task: Any, role: str, **variables: Any) -> list[Any]:
        self.variables.append(variables)
        return [HumanMessage(f"prompt {len(self.variables)}")]


def _idea(title: str, content: str = "Move the circles apart.", kind: str = "prior") -> dict[str, Any]:
    return {"id": title, "kind": kind, "title": f"Notes / {title}", "content": content, "source": "", "similarity": 1}


ECHO = ("NAME: same ring\nMOTIVATION: the same ring.\n"
        "<<<<<<< SEARCH\nRING_RADIUS = 0.3065\n=======\nRING_RADIUS = 0.3065\n>>>>>>> REPLACE\n")


def test_an_echo_of_the_parent_moves_the_retry_to_the_next_idea(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    config = RunConfig(state_dir=tmp_path, tune_constants_on_echo=False)
    use_stand_ins(monkeypatch, researcher, config)
    prompts = RecordedPrompts(monkeypatch)
    monkeypatch.setattr(base, "ask", ScriptedAsk(ECHO, USABLE))
    ideas = [_idea("penalty"), _idea("lesson", kind="insight"), _idea("grid")]
    state = round_state(cognition=ideas)
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert [item["id"] for item in prompts.variables[0]["cognition"]] == ["penalty", "lesson", "grid"]
    assert [item["id"] for item in prompts.variables[1]["cognition"]] == ["lesson", "grid", "penalty"]
    assert "the idea 'penalty' is left for later" in prompts.variables[1]["feedback"][0]
    assert after.candidate is not None and after.candidate["name"] == "wider_ring"
    assert [item["id"] for item in after.cognition] == ["lesson", "grid", "penalty"], \
        "the node records the idea its candidate was asked to implement first"


def test_an_echo_runs_the_code_of_a_retrieved_prior_when_the_focused_one_gives_none(
        monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    use_stand_ins(monkeypatch, researcher, config)
    monkeypatch.setattr(base, "ask", ScriptedAsk(ECHO))
    centred = ("A start to polish:\n```python\ndef construct_packing():\n    centers = np.full((26, 2), 0.5)\n"
               "    return centers, compute_radii(centers)\n```\n")
    state = round_state(cognition=[_idea("corners"), _idea("lesson", kind="insight"), _idea("centred", centred)])
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert after.candidate is not None and after.candidate["edit_mode"] == "prior_code"
    assert after.candidate["name"] == "prior_centred" and "np.full((26, 2), 0.5)" in after.candidate["code"]
    assert [item["id"] for item in after.cognition] == ["centred", "corners", "lesson"], \
        "the node records the prior whose code it runs as its focus"
    assert after.usage["researcher"]["calls"] == 1, "no second call: the echo was enough"


def test_an_echo_with_the_focus_off_keeps_the_ideas_in_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = RunConfig(state_dir=tmp_path, cognition={"focus": False}, tune_constants_on_echo=False)
    use_stand_ins(monkeypatch, researcher, config)
    prompts = RecordedPrompts(monkeypatch)
    monkeypatch.setattr(base, "ask", ScriptedAsk(ECHO, USABLE))
    state = round_state(cognition=[_idea("penalty"), _idea("grid")])
    advance(state, researcher.propose_candidate(state, runtime(config)))
    assert [item["id"] for item in prompts.variables[1]["cognition"]] == ["penalty", "grid"]
    assert prompts.variables[1]["feedback"][0].startswith("reply 1 could not be used: the edit leaves the program")


class KnownPrograms(StandInNodes):
    """Node memory holding exactly the programs given."""

    def __init__(self, *programs: str) -> None:
        super().__init__()
        self.hashes = {code_hash(program) for program in programs}

    def find_by_code_hash(self, run_id: str, code_hash: str) -> Any:
        return SimpleNamespace(id="run-r0001-l0", name="known") if code_hash in self.hashes else None


CENTRED = ("A start to polish:\n```python\ndef construct_packing():\n    centers = np.full((26, 2), 0.5)\n"
           "    return centers, compute_radii(centers)\n```\n")
GRID_PRIOR = ("The grid:\n```python\ndef construct_packing():\n    xs = np.linspace(0.1, 0.9, 5)\n"
              "    centers = np.array([(x, y) for x in xs for y in xs] + [(0.2, 0.2)])\n"
              "    return centers, compute_radii(centers)\n```\n")


def test_an_echo_skips_a_priors_code_that_node_memory_holds(monkeypatch: pytest.MonkeyPatch,
                                                            config: RunConfig) -> None:
    ideas = [_idea("centred", CENTRED), _idea("grid", GRID_PRIOR)]
    parent = edit_and_view(SEED, compact=True)[0]
    held = prior_code_candidate(parent, ideas[0])
    assert held is not None
    use_stand_ins(monkeypatch, researcher, config, nodes=KnownPrograms(held))
    monkeypatch.setattr(base, "ask", ScriptedAsk(ECHO))
    state = round_state(cognition=ideas)
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert after.candidate is not None and after.candidate["name"] == "prior_grid", \
        "the centred prior's program was evaluated already: the next prior's runs"
    assert after.usage["researcher"]["calls"] == 1


def test_a_priors_code_is_bound_to_the_names_it_calls(monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    # the parent renamed the compute_radii the prior's function calls; another prior defines one
    parent_code = SEED.replace("compute_radii", "radii_by_walls")
    radii = ("Radii by walls only:\n```python\ndef compute_radii(centers):\n"
             "    return np.minimum(centers, 1 - centers).min(axis=1)\n```\n")
    use_stand_ins(monkeypatch, researcher, config)
    monkeypatch.setattr(base, "ask", ScriptedAsk(ECHO))
    parent = {"id": "run-r0001-l0", "name": "renamed", "score": 1.0, "motivation": "", "analysis": "",
              "code": parent_code}
    state = round_state(parent=parent, cognition=[_idea("centred", CENTRED), _idea("walls", radii)])
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert after.candidate is not None and after.candidate["edit_mode"] == "prior_code"
    assert "def compute_radii(centers):" in after.candidate["code"]
    assert any("compute_radii" in repair for repair in after.candidate["repairs"])
    assert unbound_names(after.candidate["code"]) == []


class TaskPriors:
    """A cognition store whose task holds the priors given, beyond those retrieved for the round."""

    def __init__(self, *contents: str) -> None:
        self.items = [SimpleNamespace(id=f"stored-{i}", kind="prior", content=text) for i, text in enumerate(contents)]

    def list(self, task: str | None = None, kind: str | None = None) -> list[Any]:
        return self.items


RESTARTS = ("Restarts:\n```python\ndef construct_packing():\n    start = np.full((26, 2), 0.5)\n"
            "    return optimise(start)\n```\n")
OPTIMISE = ("SLSQP:\n```python\ndef optimise(start):\n    return start, np.full(len(start), 0.01)\n```\n")


@pytest.mark.parametrize("top_k", [4, 0])
def test_a_name_a_prior_calls_is_bound_from_a_prior_not_retrieved(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path, top_k: int) -> None:
    config = RunConfig(state_dir=tmp_path, cognition={"top_k": top_k})
    use_stand_ins(monkeypatch, researcher, config, cognition=TaskPriors(OPTIMISE))
    monkeypatch.setattr(base, "ask", ScriptedAsk(ECHO))
    state = round_state(cognition=[_idea("restarts", RESTARTS)])
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert after.candidate is not None
    if top_k:  # the task's other prior defines the optimise the retrieved one calls
        assert after.candidate["edit_mode"] == "prior_code" and "def optimise(start):" in after.candidate["code"]
    else:  # cognition off (the ablation): no prior's code binds anything, and the restarts' would not run
        assert after.candidate["edit_mode"] == "tuned_constant"


def _turned_back_as(verdict: str, nearest_id: str, *, passed_static: bool = True, **candidate_fields: Any) -> State:
    return round_state(cognition=[_idea("penalty")], candidate=candidate(**candidate_fields),
                       static_report={"ok": passed_static, "reasons": []},
                       novelty_report={"verdict": verdict, "nearest_id": nearest_id, "nearest_name": "x",
                                       "similarity": 0.9982, "reason": "embedding similarity"})


def test_a_candidate_turned_back_as_its_parent_again_runs_the_fallback_without_a_call(
        monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    use_stand_ins(monkeypatch, researcher, config)
    monkeypatch.setattr(base, "ask", ScriptedAsk())  # any call fails the test
    state = _turned_back_as("duplicate", "run-r0000-l0", conversation=[{"type": "human", "content": "the prompt"}])
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert after.candidate is not None and after.candidate["edit_mode"] == "tuned_constant"
    assert after.candidate["conversation"] == [{"type": "human", "content": "the prompt"}], \
        "the Analyzer continues the conversation that led to the echo"


@pytest.mark.parametrize(("verdict", "nearest", "passed_static", "mode"), [
    ("duplicate", "run-r0003-l0", True, "diff"),  # a repeat of another node: that idea was tried, ask again
    ("duplicate", "run-r0000-l0", False, "diff"),  # the report is an earlier candidate's: this one failed statically
    ("duplicate", "run-r0000-l0", True, "tuned_constant"),  # the fallback's own candidate: the model's turn
    ("novel", None, True, "diff"),
])
def test_other_turned_back_candidates_ask_the_model_again(monkeypatch: pytest.MonkeyPatch, config: RunConfig,
                                                          verdict: str, nearest: str | None, passed_static: bool,
                                                          mode: str) -> None:
    use_stand_ins(monkeypatch, researcher, config)
    model = ScriptedAsk(USABLE)
    monkeypatch.setattr(base, "ask", model)
    state = _turned_back_as(verdict, nearest or "", passed_static=passed_static, edit_mode=mode)
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert len(model.calls) == 1 and after.candidate is not None and after.candidate["name"] == "wider_ring"


def test_an_echo_with_no_priors_code_left_runs_a_parameter_experiment(monkeypatch: pytest.MonkeyPatch,
                                                                       config: RunConfig) -> None:
    use_stand_ins(monkeypatch, researcher, config)
    monkeypatch.setattr(base, "ask", ScriptedAsk(ECHO))
    state = round_state(cognition=[_idea("penalty"), _idea("grid")])
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert after.candidate is not None and after.candidate["edit_mode"] == "tuned_constant"
    assert after.usage["researcher"]["calls"] == 1, "no second call: the echo was enough"
    edited_parent = edit_and_view(SEED, compact=True)[0]  # the parent as the Researcher's edits apply to it
    changed = [(old, new) for old, new in zip(edited_parent.splitlines(), after.candidate["code"].splitlines(),
                                              strict=True) if old != new]
    assert len(changed) == 1, f"one line changed: {changed}"
    assert after.candidate["name"].startswith("tuned_") and "from" in after.candidate["motivation"]


def test_a_parameter_experiment_is_novel_by_its_fingerprint(monkeypatch: pytest.MonkeyPatch,
                                                            config: RunConfig) -> None:
    # the embedding would put one changed constant right next to its parent: only the exact fingerprint counts
    judge = novelty_stand_ins(monkeypatch, config, StandInNodes(nearest=((GRID, 0.9999),)))
    state = round_state(candidate=candidate(edit_mode="tuned_constant"))
    after = advance(state, novelty_checker.check_novelty(state, runtime(config)))
    assert after.novelty_report["verdict"] == "novel" and judge.calls == []
    assert routing.route_after_check_novelty(after) == "run_evaluation"
    same = novelty_stand_ins(monkeypatch, config, StandInNodes(same_code=SimpleNamespace(id="run-r0000-l0",
                                                                                          name="seed")))
    after = advance(state, novelty_checker.check_novelty(state, runtime(config)))
    assert after.novelty_report["verdict"] == "duplicate" and same.calls == []


RENAMED = ("NAME: tighter ring\nMOTIVATION: a tighter ring.\n<<<<<<< SEARCH\ndef construct_packing():\n=======\n"
           "def construct_packing_tighter():\n>>>>>>> REPLACE\n<<<<<<< SEARCH\nRING_RADIUS = 0.3065\n=======\n"
           "RING_RADIUS = 0.29\n>>>>>>> REPLACE\n")


def test_a_function_the_edit_renamed_is_named_back_in_the_same_call(monkeypatch: pytest.MonkeyPatch,
                                                                     config: RunConfig) -> None:
    use_stand_ins(monkeypatch, researcher, config)
    model = ScriptedAsk(RENAMED)
    monkeypatch.setattr(base, "ask", model)
    state = round_state()
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert after.candidate is not None and len(model.calls) == 1
    assert after.candidate["repairs"] == ["renamed construct_packing_tighter back to construct_packing, which the "
                                          "program calls"]
    assert "def construct_packing():" in after.candidate["code"] and "RING_RADIUS = 0.29" in after.candidate["code"]


def test_a_renamed_copy_of_the_parent_is_an_echo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = RunConfig(state_dir=tmp_path, tune_constants_on_echo=False)
    use_stand_ins(monkeypatch, researcher, config)
    prompts = RecordedPrompts(monkeypatch)
    renamed_only = RENAMED.split("<<<<<<< SEARCH\nRING_RADIUS")[0]
    monkeypatch.setattr(base, "ask", ScriptedAsk(renamed_only, USABLE))
    state = round_state(cognition=[_idea("penalty"), _idea("grid")])
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert prompts.variables[1]["feedback"][0].startswith("reply 1 could not be used: the edit leaves the program")
    assert after.candidate is not None and after.candidate["name"] == "wider_ring"


def test_a_usable_reply_on_the_last_allowed_try_goes_on(monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    use_stand_ins(monkeypatch, researcher, config)
    model = ScriptedAsk(*["no code"] * BOUNDS.max_parse_retries, USABLE)
    monkeypatch.setattr(base, "ask", model)
    state = round_state()
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert after.candidate is not None and after.status == "" and after.parse_failures == BOUNDS.max_parse_retries
    assert after.candidate["name"] == "wider_ring" and "RING_RADIUS = 0.32" in after.candidate["code"]
    assert after.usage["researcher"]["calls"] == BOUNDS.max_parse_retries + 1
    assert routing.route_after_propose_candidate(after) == "check_candidate"


def test_the_parse_bound_holds_for_the_whole_round(monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    use_stand_ins(monkeypatch, researcher, config)
    model = ScriptedAsk("no code", "no code")
    monkeypatch.setattr(base, "ask", model)
    # a static retry after the round has used its parse retries: one try, then the round is recorded
    state = round_state(parse_failures=BOUNDS.max_parse_retries, static_retries=1)
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert len(model.calls) == 1 and after.status == "parse_failed"
    assert after.parse_failures == BOUNDS.max_parse_retries + 1


def test_a_model_that_keeps_failing_ends_the_round(monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    use_stand_ins(monkeypatch, researcher, config)
    down = LLMCallError("connection refused")
    monkeypatch.setattr(base, "ask", ScriptedAsk(*[down] * (BOUNDS.max_parse_retries + 1)))
    state = round_state()
    after = advance(state, researcher.propose_candidate(state, runtime(config)))
    assert after.status == "parse_failed" and after.error is not None
    assert after.error.endswith("last problem: the model call failed: connection refused")
    assert routing.route_after_propose_candidate(after) == "record_node"


# --- Engineer and Debugger: a failed stage is patched up to `max_debug_attempts` times ---

def stage_outcome(status: str, workdir: Path) -> StageResult:
    return StageResult(stage="quick", status=status, score=0.9 if status == "ok" else None,  # type: ignore[arg-type]
                       valid=status == "ok", metrics={}, error=None if status == "ok" else f"the stage ended {status}",
                       feedback=None, traceback=None, artifacts={}, stdout_tail="", stderr_tail="", wall_s=0.1,
                       cpu_s=0.1, peak_memory_mb=10.0, gpu_seconds=0.0, results_dir=str(workdir), backend="local",
                       warnings=[])


@pytest.mark.parametrize(("stage_status", "fields", "status", "expected"), [
    ("ok", {"next_stage": 0}, "", "run_evaluation"),  # the next stage follows
    ("ok", {"next_stage": len(TASK.stages) - 1}, "evaluated", "analyze_result"),
    ("runtime_error", {}, "needs_fix", "debug_candidate"),
    ("runtime_error", {"debug_attempts": BOUNDS.max_debug_attempts - 1}, "needs_fix", "debug_candidate"),
    ("runtime_error", {"debug_attempts": BOUNDS.max_debug_attempts}, "runtime_failed", "analyze_result"),
    ("invalid", {}, "needs_fix", "debug_candidate"),  # bounds.debug_invalid is on by default
    ("invalid", {"debug_attempts": BOUNDS.max_debug_attempts}, "invalid", "analyze_result"),
    ("timeout", {}, "timeout", "analyze_result"),  # not the candidate's bug to patch
    ("below_threshold", {}, "early_rejected", "analyze_result"),
])
def test_after_a_stage_the_debugger_is_asked_within_its_bound(
    monkeypatch: pytest.MonkeyPatch, config: RunConfig, stage_status: str, fields: dict[str, Any], status: str,
    expected: str,
) -> None:
    use_stand_ins(monkeypatch, engineer, config)
    workdirs: list[Path] = []

    def run_one_stage(res: Any, stage: Any, code: str, workdir: Path, settings: Any) -> tuple[StageResult, list[Any]]:
        workdirs.append(workdir)
        return stage_outcome(stage_status, workdir), []

    monkeypatch.setattr(engineer, "run_one_stage", run_one_stage)
    state = round_state(candidate=candidate(), **fields)
    after = advance(state, engineer.run_evaluation(state, runtime(config)))
    stage = TASK.stages[state.next_stage]
    assert workdirs == [config.runs_dir / "run" / "nodes" / "run-r0001-l0" / f"{stage.name}-try{state.debug_attempts}"]
    assert after.status == status and len(after.stage_results) == 1
    assert routing.route_after_run_evaluation(after) == expected


@pytest.mark.parametrize(("before", "status"), [
    ({"status": "runtime_error", "error": "the stage ended runtime_error"}, "runtime_failed"),  # no progress
    ({"status": "runtime_error", "error": "IndexError: index 2 is out of bounds"}, "needs_fix"),  # another error
    ({"status": "invalid", "error": "the stage ended runtime_error"}, "needs_fix"),
])
def test_a_patch_that_leaves_the_same_failure_is_not_patched_again(
    monkeypatch: pytest.MonkeyPatch, config: RunConfig, before: dict[str, Any], status: str,
) -> None:
    use_stand_ins(monkeypatch, engineer, config)
    monkeypatch.setattr(engineer, "run_one_stage", lambda res, stage, code, workdir, settings: (
        stage_outcome("runtime_error", workdir), []))
    assert BOUNDS.max_debug_attempts >= 2, "a second patch must be within the bound for this to mean anything"
    state = round_state(candidate=candidate(), debug_attempts=1, stage_results=[{"stage": "quick", **before}])
    after = advance(state, engineer.run_evaluation(state, runtime(config)))
    assert after.status == status
    assert routing.route_after_run_evaluation(after) == ("debug_candidate" if status == "needs_fix"
                                                         else "analyze_result")
    assert any("left the same failure" in line for line in after.feedback) == (status == "runtime_failed")


def test_without_debug_invalid_an_invalid_result_is_final(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = RunConfig(state_dir=tmp_path, bounds={"debug_invalid": False})
    use_stand_ins(monkeypatch, engineer, config)
    monkeypatch.setattr(engineer, "run_one_stage", lambda res, stage, code, workdir, settings: (
        stage_outcome("invalid", workdir), []))
    state = round_state(candidate=candidate())
    after = advance(state, engineer.run_evaluation(state, runtime(config)))
    assert after.status == "invalid" and routing.route_after_run_evaluation(after) == "analyze_result"


CRASH = {"stage": "quick", "status": "runtime_error", "error": "IndexError", "score": None,
         "traceback": 'Traceback (most recent call last):\n  File "/tmp/evoforge/x/program.py", line 9\nIndexError'}


assert BOUNDS.max_debug_attempts >= 2, "the Debugger's cases need an attempt before its last one"


@pytest.mark.parametrize(("earlier", "failure_status", "expected_status", "expected"), [
    (0, "runtime_error", "needs_fix", "debug_candidate"),
    (BOUNDS.max_debug_attempts - 2, "runtime_error", "needs_fix", "debug_candidate"),
    (BOUNDS.max_debug_attempts - 1, "runtime_error", "runtime_failed", "analyze_result"),  # the last attempt failed
    (BOUNDS.max_debug_attempts - 1, "invalid", "invalid", "analyze_result"),
])
def test_a_debugger_without_a_usable_patch_tries_again_within_its_bound(
    monkeypatch: pytest.MonkeyPatch, config: RunConfig, earlier: int, failure_status: str, expected_status: str,
    expected: str,
) -> None:
    use_stand_ins(monkeypatch, debugger, config)
    monkeypatch.setattr(patches, "ask", ScriptedAsk(LLMCallError("the model is down")))
    state = round_state(candidate=candidate(), stage_results=[dict(CRASH, status=failure_status)], status="needs_fix",
                        debug_attempts=earlier)
    after = advance(state, debugger.debug_candidate(state, runtime(config)))
    assert after.debug_attempts == earlier + 1
    assert after.feedback == [f"debugger: attempt {earlier + 1}: the model call failed: the model is down"]
    assert after.status == expected_status and after.candidate == state.candidate
    assert routing.route_after_debug_candidate(after) == expected


def test_a_usable_patch_restarts_the_cascade(monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    use_stand_ins(monkeypatch, debugger, config)
    fix = "FIX: a smaller ring\n<<<<<<< SEARCH\nRING_RADIUS = 0.31\n=======\nRING_RADIUS = 0.30\n>>>>>>> REPLACE\n"
    monkeypatch.setattr(patches, "ask", ScriptedAsk(fix))
    state = round_state(candidate=candidate(), stage_results=[CRASH], status="needs_fix", next_stage=1,
                        debug_attempts=BOUNDS.max_debug_attempts - 1)
    after = advance(state, debugger.debug_candidate(state, runtime(config)))
    assert (after.status, after.next_stage, after.debug_attempts) == ("", 0, BOUNDS.max_debug_attempts)
    assert "RING_RADIUS = 0.30" in after.candidate["code"] and "+RING_RADIUS = 0.30" in after.candidate["diff"]
    assert routing.route_after_debug_candidate(after) == "run_evaluation"


def test_a_patch_that_gives_an_evaluated_program_again_is_not_used(
    monkeypatch: pytest.MonkeyPatch, config: RunConfig
) -> None:
    # measured 2026-12-03: a patch undid the candidate's change and the seed's program was evaluated a second time
    use_stand_ins(monkeypatch, debugger, config, nodes=StandInNodes(same_code=SimpleNamespace(id="run-r0000-l0",
                                                                                               name="seed")))
    fix = "FIX: back to the seed\n<<<<<<< SEARCH\nRING_RADIUS = 0.31\n=======\nRING_RADIUS = 0.3065\n>>>>>>> REPLACE\n"
    monkeypatch.setattr(patches, "ask", ScriptedAsk(fix))
    state = round_state(candidate=candidate(), stage_results=[CRASH], status="needs_fix", next_stage=1)
    after = advance(state, debugger.debug_candidate(state, runtime(config)))
    assert after.candidate == state.candidate and after.status == "needs_fix"
    assert after.feedback == ["debugger: attempt 1: the patch could not be used: it makes the program the same as "
                              "node 'seed', which was evaluated already (it undoes the candidate's change): fix the "
                              "error and keep the change"]
    assert routing.route_after_debug_candidate(after) == "debug_candidate"


# --- the run's stop criteria: `rounds` (shared out over the lanes), target, token budget, patience ---

def stop_after(monkeypatch: pytest.MonkeyPatch, config: RunConfig, *, lane: int = 0, round_: int = 1,
               best_score: float | None = 1.0, tokens_used: int = 0, rounds_since_best: int = 0) -> str:
    """The router's choice after `record_node` with the stop reason `recorder.stop_reason` gives."""
    res = use_stand_ins(monkeypatch, recorder, config)
    reason = recorder.stop_reason(res, lane=lane, round_=round_, best_score=best_score, tokens_used=tokens_used,
                                  rounds_since_best=rounds_since_best)
    return routing.route_after_record_node(round_state(stop_reason=reason))


def test_a_lane_stops_when_its_share_of_the_rounds_is_done(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = RunConfig(state_dir=tmp_path, rounds=5, workers=2)  # lane 0 takes 3 rounds, lane 1 takes 2
    assert stop_after(monkeypatch, config, lane=0, round_=2) == "sample_context"
    assert stop_after(monkeypatch, config, lane=0, round_=3) == "__end__"
    assert stop_after(monkeypatch, config, lane=1, round_=1) == "sample_context"
    assert stop_after(monkeypatch, config, lane=1, round_=2) == "__end__"
    res = use_stand_ins(monkeypatch, recorder, config)
    assert recorder.stop_reason(res, lane=0, round_=3, best_score=None, tokens_used=0,
                                rounds_since_best=0) == "5 rounds done"


def test_the_run_stops_at_its_target_budget_or_patience(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = RunConfig(state_dir=tmp_path, budget={"target_score": 2.0})
    assert stop_after(monkeypatch, target, best_score=1.99) == "sample_context"
    assert stop_after(monkeypatch, target, best_score=2.0) == "__end__"
    assert TASK.score.target is not None
    assert stop_after(monkeypatch, RunConfig(state_dir=tmp_path), best_score=TASK.score.target) == "__end__"
    tokens = RunConfig(state_dir=tmp_path, budget={"max_tokens": 1000})
    assert stop_after(monkeypatch, tokens, tokens_used=999) == "sample_context"
    assert stop_after(monkeypatch, tokens, tokens_used=1000) == "__end__"
    patience = RunConfig(state_dir=tmp_path, budget={"patience": 3})
    assert stop_after(monkeypatch, patience, rounds_since_best=2) == "sample_context"
    assert stop_after(monkeypatch, patience, rounds_since_best=3) == "__end__"
