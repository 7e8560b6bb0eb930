"""The research graph driven by a scripted model through every branch, against the embedded Postgres, the
real sandbox and the real circle_packing evaluator."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from evoforge.agents.base import TRANSCRIPT
from evoforge.config import ConfigError, RunConfig
from evoforge.graph.runner import checkpointed_graph, start_run, thread_config
from evoforge.memory.database import Database
from evoforge.memory.nodes import NodeStore
from evoforge.runtime import services

SCRIPTS = Path(__file__).parent / "fixtures" / "scripts"
TOY = Path(__file__).parent / "fixtures" / "tasks" / "toy"
pytestmark = pytest.mark.integration


def scripted_config(database: Database, tmp_path: Path, script: str, **overrides: Any) -> RunConfig:
    settings: dict[str, Any] = {
        "task": "circle_packing",
        "rounds": 4,
        "llm": {"provider": "scripted", "script": str(SCRIPTS / script)},
        "database_url": database.url,
        "state_dir": tmp_path / "state",
        "sampling": {"policy": "greedy", "inspirations": 1},
        "bounds": {"max_parse_retries": 1, "max_static_retries": 1, "max_novelty_retries": 1,
                   "max_debug_attempts": 1},
        # hash duplicates only: embedding near-duplicates are exercised in the novelty tests
        "novelty": {"duplicate_similarity": 0.9999, "judge_similarity": 0.9999},
        # the scripts drive every step: an echo is retried, not answered by a prior's code or a tuned constant
        # (those fallbacks have tests of their own: test_routing_unit.py, test_an_echoed_parent_gives_way...)
        "tune_constants_on_echo": False,
        "cognition": {"prior_code_fallback": False},
    }
    settings.update(overrides)
    return RunConfig(**settings)


def run_recording_steps(config: RunConfig, run_id: str) -> tuple[Any, list[str]]:
    steps: list[str] = []
    outcome = start_run(config, run_id, on_update=lambda node, update: steps.append(node))
    return outcome, steps


ROUND_1 = ["sample_context", "propose_candidate", "check_candidate", "propose_candidate", "check_candidate",
           "check_novelty", "propose_candidate", "check_candidate", "check_novelty", "run_evaluation",
           "run_evaluation", "analyze_result", "record_node"]
ROUND_2 = ["sample_context", "propose_candidate", "check_candidate", "check_novelty", "run_evaluation",
           "debug_candidate", "run_evaluation", "run_evaluation", "analyze_result", "record_node"]
ROUND_3 = ["sample_context", "propose_candidate", "check_candidate", "check_novelty", "run_evaluation",
           "analyze_result", "record_node"]
ROUND_4 = ["sample_context", "propose_candidate", "check_candidate", "propose_candidate", "check_candidate",
           "record_node"]


def test_every_branch(database: Database, tmp_path: Path) -> None:
    config = scripted_config(database, tmp_path, "every_branch.yaml")
    outcome, steps = run_recording_steps(config, "branches")
    assert steps == ["prepare_run", *ROUND_1, *ROUND_2, *ROUND_3, *ROUND_4]
    assert outcome.state["stop_reason"] == "4 rounds done"

    store = services.get_services(config).nodes
    nodes = {node.round: node for node in store.list_nodes("branches")}
    assert sorted(nodes) == [0, 1, 2, 3, 4]
    assert [nodes[r].status for r in range(5)] == [
        "evaluated", "evaluated", "evaluated", "early_rejected", "static_rejected"]
    seed, grid, debugged, tiny, broken = (nodes[r] for r in range(5))
    assert seed.score == pytest.approx(0.96056, abs=1e-4)
    assert grid.name == "square_grid" and grid.parent_ids == [seed.id]
    assert grid.score is not None and grid.score > 2.4 and grid.valid
    assert "static check rejected 'broken_ring'" in (grid.feedback or "")
    assert "duplicates node 'seed'" in (grid.feedback or "") and "it is the parent again" in (grid.feedback or "")
    assert [r["stage"] for r in grid.stage_results] == ["quick", "full"]
    assert grid.analysis.startswith("RESULT:") and grid.tokens_in > 0 and grid.eval_seconds > 0
    assert "grid.reshape(5)" in debugged.code and debugged.valid
    assert [r["status"] for r in debugged.stage_results] == ["runtime_error", "ok", "ok"]
    assert "ValueError" in (debugged.stage_results[0]["traceback"] or "")
    assert tiny.score is not None and tiny.score < 0.5 and not tiny.valid and tiny.analysis
    assert broken.analysis == "" and "SyntaxError" in (broken.error or "")
    assert outcome.state["best_node_id"] in (grid.id, debugged.id)

    # the Analyzer's insight went into cognition, marked as learned, and a later Researcher saw it
    lessons = [item for item in services.get_services(config).cognition.list("circle_packing")
               if item.kind == "insight"]
    assert len(lessons) == 1 and lessons[0].node_id == grid.id
    assert any(lessons[0].id in (node.cognition_ids or []) for node in (debugged, tiny, broken))
    researcher = services.get_services(config).chat_model("researcher")
    round_two_prompt = researcher.received[4][-1].content  # 5th call: the first of round 2
    assert f"- Lesson learned: {lessons[0].content[:100]}" in round_two_prompt  # beside the focus, a prior

    # every model call of round 1 is in the node's transcript: prompt, reply and the varied seed
    transcript = tmp_path / "state" / "runs" / "branches" / "nodes" / grid.id / TRANSCRIPT
    calls = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert [call["role"] for call in calls] == ["researcher", "researcher", "researcher", "analyzer"]
    assert [call["messages"][-1]["content"] for call in calls[:3]] == [m[-1].content for m in researcher.received[:3]]
    assert "NAME: square_grid" in calls[2]["reply"] and len({call["seed"] for call in calls[:3]}) == 3
    # the Analyzer continues the accepted Researcher call's conversation: that whole exchange is its prefix
    accepted = [*calls[2]["messages"], {"type": "ai", "content": calls[2]["reply"]}]
    assert calls[3]["messages"][:-1] == accepted and calls[3]["messages"][-1]["type"] == "human"
    assert "Now act as the Analyzer" in calls[3]["messages"][-1]["content"]
    assert grid.resources["retries"] == {"parse": 0, "static": 1, "novelty": 1, "debug": 0}

    with checkpointed_graph(config) as graph:
        history = list(graph.get_state_history(thread_config("branches")))
    assert len(history) >= len(steps)
    assert history[0].next == () and history[0].values["round"] == 4


def test_exhausted_bounds_are_recorded_as_failed_nodes(database: Database, tmp_path: Path) -> None:
    config = scripted_config(database, tmp_path, "exhausted_bounds.yaml", rounds=3)
    outcome, steps = run_recording_steps(config, "bounds")
    assert steps == [
        "prepare_run",
        "sample_context", "propose_candidate", "record_node",
        "sample_context", "propose_candidate", "check_candidate", "check_novelty", "propose_candidate",
        "check_candidate", "check_novelty", "record_node",
        "sample_context", "propose_candidate", "check_candidate", "check_novelty", "run_evaluation",
        "debug_candidate", "analyze_result", "record_node",
    ]
    nodes = {n.round: n for n in services.get_services(config).nodes.list_nodes("bounds")}
    assert [nodes[r].status for r in (1, 2, 3)] == ["parse_failed", "duplicate", "runtime_failed"]
    assert "no code found" in (nodes[1].error or "")
    assert "does not match" in (nodes[3].feedback or "")
    assert "analyzer unavailable" in nodes[3].analysis and "runtime_failed" in nodes[3].analysis
    transcript = tmp_path / "state" / "runs" / "bounds" / "nodes" / nodes[3].id / TRANSCRIPT
    failed = [call for call in map(json.loads, transcript.read_text().splitlines()) if call["role"] == "analyzer"]
    assert len(failed) == 1 and "reply" not in failed[0] and "chat model call failed" in failed[0]["error"]
    assert outcome.state["best_node_id"] == nodes[0].id


@pytest.mark.parametrize("debug_invalid", [True, False])
def test_an_invalid_result_goes_to_the_debugger_with_the_evaluators_reason(database: Database, tmp_path: Path,
                                                                          debug_invalid: bool) -> None:
    bounds = {"max_parse_retries": 1, "max_static_retries": 1, "max_novelty_retries": 1, "max_debug_attempts": 1,
              "debug_invalid": debug_invalid}
    config = scripted_config(database, tmp_path, "invalid_then_fixed.yaml", rounds=1, bounds=bounds)
    _, steps = run_recording_steps(config, "invalid")
    evaluated = ["prepare_run", "sample_context", "propose_candidate", "check_candidate", "check_novelty",
                 "run_evaluation"]
    node = next(n for n in services.get_services(config).nodes.list_nodes("invalid") if n.round == 1)
    transcript = tmp_path / "state" / "runs" / "invalid" / "nodes" / node.id / TRANSCRIPT
    calls = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert node.stage_results[0]["status"] == "invalid"
    if not debug_invalid:
        assert steps == [*evaluated, "analyze_result", "record_node"]
        assert node.status == "invalid" and "got (677, 2)" in (node.error or "")
        assert [call["role"] for call in calls] == ["researcher", "analyzer"]
        return
    assert steps == [*evaluated, "debug_candidate", "run_evaluation", "run_evaluation", "analyze_result",
                     "record_node"]
    assert node.status == "evaluated" and node.valid and node.score == pytest.approx(2.4536, abs=1e-3)
    assert "np.linspace(0.1, 0.9, 5)" in node.code and "debugger: the grid needs 5 values" in (node.feedback or "")
    debugger_prompt = next(call for call in calls if call["role"] == "debugger")["messages"][-1]["content"]
    assert "got (677, 2)" in debugger_prompt and "The evaluator's feedback: invalid packing" in debugger_prompt


def test_a_finished_run_goes_further_when_rounds_are_raised(database: Database, tmp_path: Path) -> None:
    from evoforge.graph.runner import resume_run

    config = scripted_config(database, tmp_path, "every_branch.yaml", rounds=1)
    start_run(config, "extend")
    store = services.get_services(config).nodes
    assert store.count_nodes("extend") == 2
    outcome = resume_run("extend", base=config, rounds=2)
    assert outcome.state["round"] == 2 and store.count_nodes("extend") == 3
    assert store.get_run("extend").config["rounds"] == 2


def test_runs_of_one_process_each_read_the_script_from_its_start(database: Database, tmp_path: Path) -> None:
    """One cached scripted model serves every run with the same settings (as in one `langgraph dev` server)."""
    config = RunConfig(task=str(TOY), rounds=2, llm={"provider": "scripted", "script": str(SCRIPTS / "slow_toy.yaml")},
                       database_url=database.url, state_dir=tmp_path / "state", sampling={"policy": "greedy"})
    start_run(config, "first")
    start_run(config, "second")
    store = services.get_services(config).nodes
    for run_id in ("first", "second"):
        assert [node.name for node in store.list_nodes(run_id)] == ["seed", "v2", "v3"], run_id


def test_a_missing_script_stops_the_run_before_its_first_step(database: Database, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_script.yaml"
    settings: dict[str, Any] = {"task": str(TOY), "rounds": 1, "database_url": database.url,
                                "state_dir": tmp_path / "state"}
    steps: list[str] = []
    with pytest.raises(ConfigError, match=f"llm: the researcher model cannot be built: .*cannot read {missing}"):
        start_run(RunConfig(**settings, llm={"provider": "scripted", "script": str(missing)}), "broken",
                  on_update=lambda node, update: steps.append(node))
    with pytest.raises(ConfigError, match=f"roles.analyzer: the analyzer model cannot be built: .*{missing}"):
        start_run(RunConfig(**settings, llm={"provider": "scripted", "script": str(SCRIPTS / "slow_toy.yaml")},
                            roles={"analyzer": {"provider": "scripted", "script": str(missing)}}), "broken-too",
                  on_update=lambda node, update: steps.append(node))
    assert steps == [], "a step ran before the configuration was checked"
    store = NodeStore(database)
    assert store.list_nodes("broken") == [] and store.list_nodes("broken-too") == [], "the seed was evaluated"


def test_without_llm_analysis_the_node_gets_a_factual_report_and_no_model_call(database: Database,
                                                                             tmp_path: Path) -> None:
    config = scripted_config(database, tmp_path, "every_branch.yaml", rounds=1, llm_analysis=False)
    outcome, steps = run_recording_steps(config, "no-analyzer")
    assert steps == ["prepare_run", *ROUND_1]
    grid = next(n for n in services.get_services(config).nodes.list_nodes("no-analyzer") if n.round == 1)
    assert grid.valid and grid.analysis.startswith("RESULT: evaluated") and "stage full: ok" in grid.analysis
    transcript = tmp_path / "state" / "runs" / "no-analyzer" / "nodes" / grid.id / TRANSCRIPT
    assert [json.loads(line)["role"] for line in transcript.read_text().splitlines()] == ["researcher"] * 3


@pytest.mark.parametrize(("focus", "top_k"), [(True, 3), (False, 3), (True, 1)])
def test_each_round_focuses_on_the_retrieved_idea_used_least(database: Database, tmp_path: Path,
                                                             focus: bool, top_k: int) -> None:
    import shutil

    task_dir = tmp_path / "toy"
    shutil.copytree(TOY, task_dir)
    ideas = ("Return a bigger constant", "Return a product of numbers", "Return a sum of numbers")
    (task_dir / "cognition" / "notes.md").write_text("# Ways to score higher\n" + "".join(
        f"## {title}\nsolve() returns the score, so {title.lower()} from solve().\n" for title in ideas))
    config = RunConfig(task=str(task_dir), rounds=3, database_url=database.url, state_dir=tmp_path / "state",
                       llm={"provider": "scripted", "script": str(SCRIPTS / "slow_toy.yaml")},
                       sampling={"policy": "greedy"},
                       cognition={"top_k": top_k, "focus_pool": 3, "min_similarity": -1, "focus": focus})
    start_run(config, "focus")
    nodes = [node for node in services.get_services(config).nodes.list_nodes("focus") if node.round > 0]
    # with top_k 1 the prompt holds the focus alone, and the focus still goes round the pool of 3
    assert len(nodes) == 3 and all(len(node.cognition_ids) == top_k for node in nodes)
    firsts = [node.cognition_ids[0] for node in nodes]
    prompts = [json.loads((tmp_path / "state" / "runs" / "focus" / "nodes" / node.id / TRANSCRIPT)
                          .read_text().splitlines()[0])["messages"][-1]["content"] for node in nodes]
    if focus:
        assert len(set(firsts)) == 3, "every round should have worked on an idea no earlier round focused on"
        assert all("## Idea to implement in this candidate" in prompt for prompt in prompts)
    else:
        assert all("## Idea to implement" not in prompt and "## Knowledge" in prompt for prompt in prompts)


def test_an_echo_with_no_priors_runs_a_parameter_experiment_that_is_evaluated_and_recorded(
        database: Database, tmp_path: Path) -> None:
    # circle_packing's seed holds RING_RADIUS = 0.3065: the echo below copies that line into its REPLACE
    script = tmp_path / "echo.yaml"
    echo = ("NAME: same_ring\nMOTIVATION: the ring as it is\n<<<<<<< SEARCH\nRING_RADIUS = 0.3065\n=======\n"
            "RING_RADIUS = 0.3065\n>>>>>>> REPLACE\n")
    script.write_text(json.dumps({"researcher": {"cycle": True, "replies": [echo]},
                                  "analyzer": {"cycle": True, "replies": ["RESULT: as reported.\nNEXT: more."]}}))
    config = scripted_config(database, tmp_path, "every_branch.yaml", rounds=2, tune_constants_on_echo=True,
                             llm={"provider": "scripted", "script": str(script)}, cognition={"top_k": 0})
    start_run(config, "tuned")
    nodes = [n for n in services.get_services(config).nodes.list_nodes("tuned") if n.round > 0]
    assert len(nodes) == 2 and all(node.resources["edit_mode"] == "tuned_constant" for node in nodes)
    assert all(node.stage_results and node.name.startswith("tuned_") for node in nodes), "each was evaluated"
    assert len({node.code_hash for node in nodes}) == 2, "the second round tuned something new"
    for node in nodes:
        calls = (tmp_path / "state" / "runs" / "tuned" / "nodes" / node.id / TRANSCRIPT).read_text().splitlines()
        # the echo was enough, and the exact report of the loop's own candidate needs no Analyzer call
        assert [json.loads(call)["role"] for call in calls] == ["researcher"]
        assert re.fullmatch(r"RESULT: .+ from .+ to .+ scored .+ against the parent's .+\nNEXT: .+", node.analysis)


@pytest.mark.parametrize("fallback", [True, False])
def test_an_echoed_parent_gives_way_to_the_focused_priors_code(database: Database, tmp_path: Path,
                                                              fallback: bool) -> None:
    import shutil

    task_dir = tmp_path / "toy"
    shutil.copytree(TOY, task_dir)
    (task_dir / "cognition" / "notes.md").write_text(
        "# Ways to score higher\n## Return five\nThis solve, in place of the seed's, scores 5:\n"
        "```python\ndef solve():\n    return 5.0\n```\n")
    script = tmp_path / "echo.yaml"
    echo = "NAME: same_again\nMOTIVATION: as before\n```python\ndef solve():\n    return 1.0\n```"
    script.write_text(json.dumps({"researcher": {"cycle": True, "replies": [echo]},
                                  "analyzer": {"cycle": True, "replies": ["RESULT: as reported."]}}))
    config = RunConfig(task=str(task_dir), rounds=1, database_url=database.url, state_dir=tmp_path / "state",
                       llm={"provider": "scripted", "script": str(script)}, sampling={"policy": "greedy"},
                       bounds={"max_parse_retries": 1},
                       cognition={"top_k": 1, "min_similarity": -1, "prior_code_fallback": fallback})
    start_run(config, "echo")
    node = next(n for n in services.get_services(config).nodes.list_nodes("echo") if n.round == 1)
    calls = (tmp_path / "state" / "runs" / "echo" / "nodes" / node.id / TRANSCRIPT).read_text().splitlines()
    researcher_calls = [call for call in map(json.loads, calls) if call["role"] == "researcher"]
    if fallback:
        # the first echo is enough: the prior's function is the candidate, evaluated, and says where it came from
        assert node.valid and node.score == 5.0 and node.name == "prior_return_five"
        assert "'Return five'" in node.motivation and len(researcher_calls) == 1
    else:
        assert node.status == "parse_failed" and "leaves the program as it was" in (node.error or "")
        assert len(researcher_calls) == 2
