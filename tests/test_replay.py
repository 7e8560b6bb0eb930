"""Time travel: a past step of a run is inspected and re-run from its checkpoint as a fork (another model for
the Analyzer), and the original run's nodes and checkpoints stay exactly as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_graph import scripted_config
from typer.testing import CliRunner

from evoforge.cli import app
from evoforge.commands.studio import parse_settings
from evoforge.config import RunConfig
from evoforge.graph import replay
from evoforge.graph.runner import checkpointed_graph, start_run, thread_config
from evoforge.memory.database import Database
from evoforge.runtime import services

SCRIPTS = Path(__file__).parent / "fixtures" / "scripts"
TOY = Path(__file__).parent / "fixtures" / "tasks" / "toy"
SECOND_OPINION = {"roles": {"analyzer": {"provider": "scripted", "script": str(SCRIPTS / "second_opinion.yaml")}}}


def test_fork_settings_keep_the_run_and_change_only_what_is_asked() -> None:
    config = RunConfig(rounds=30, workers=2, llm={"provider": "scripted", "script": "replies.yaml"})
    forked = replay.fork_config(config, 12, {"roles": {"analyzer": {"model": "other"}}})
    assert (forked.rounds, forked.workers) == (12, 1)
    assert forked.roles["analyzer"].provider == "scripted" and forked.roles["analyzer"].model == "other"
    assert forked.llm == config.llm
    assert replay.model_override(config, "analyze_result", "other") == {
        "roles": {"analyzer": {**config.llm.model_dump(mode="json"), "model": "other"}}}
    with pytest.raises(replay.ReplayError, match="calls no model"):
        replay.model_override(config, "run_evaluation", "other")
    with pytest.raises(replay.ReplayError, match="keeps the original run's database_url"):
        replay.fork_config(config, 12, {"database_url": "postgresql://elsewhere/db"})
    assert parse_settings(["roles.analyzer.model=m", "roles.analyzer.temperature=0.2", "rounds=3"]) == {
        "roles": {"analyzer": {"model": "m", "temperature": 0.2}}, "rounds": 3}
    with pytest.raises(ValueError, match="dotted.key=VALUE"):
        parse_settings(["roles..model=m"])


@pytest.mark.integration
def test_rerun_the_analyzer_of_a_past_round_as_a_fork(database: Database, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config = scripted_config(database, tmp_path, "approval.yaml", rounds=1)
    start_run(config, "orig")
    store = services.get_services(config).nodes
    nodes_before = store.list_nodes("orig")
    with checkpointed_graph(config) as graph:
        checkpoints_before = [s.config for s in graph.get_state_history(thread_config("orig"))]

    steps = replay.history("orig", base=config)
    assert [s.node for s in steps if s.round == 1] == [
        "sample_context", "propose_candidate", "check_candidate", "check_novelty", "run_evaluation",
        "run_evaluation", "analyze_result", "record_node"]
    past = replay.inspect_step("orig", 1, "analyze_result", base=config)
    assert past.given is not None and past.wrote is not None
    assert past.given["candidate"]["name"] == "square_grid" and past.given["analysis"] == ""
    assert past.wrote["analysis"].startswith("RESULT: the grid")

    ran: list[str] = []
    fork = replay.fork_run("orig", 1, overrides=SECOND_OPINION, base=config,
                           on_update=lambda node, update: ran.append(node))
    assert ran == ["analyze_result", "record_node"]  # nothing before the Analyzer ran again
    assert fork.run_id.startswith("orig-fork-") and fork.finished
    (forked,) = store.list_nodes(fork.run_id)
    original = next(node for node in nodes_before if node.round == 1)
    assert forked.id == f"{fork.run_id}-r0001-l0"
    assert forked.analysis.startswith("RESULT: second opinion")
    assert (forked.code, forked.score, forked.parent_ids, forked.stage_results) == (
        original.code, original.score, original.parent_ids, original.stage_results)
    fork_run = store.get_run(fork.run_id)
    assert fork_run is not None and fork_run.config["roles"]["analyzer"]["script"].endswith("second_opinion.yaml")
    assert [s.node for s in replay.history(fork.run_id, base=config)] == ["analyze_result", "record_node"]

    # the original run is untouched: its nodes, its record and its checkpoints
    assert store.list_nodes("orig") == nodes_before
    original_run = store.get_run("orig")
    assert original_run is not None and original_run.config == config.model_dump(mode="json")
    with checkpointed_graph(config) as graph:
        assert [s.config for s in graph.get_state_history(thread_config("orig"))] == checkpoints_before

    with pytest.raises(replay.ReplayError, match="from_node"):
        replay.fork_run("orig", 1, from_node="sample_context", base=config)
    with pytest.raises(replay.ReplayError, match="never ran"):
        replay.fork_run("orig", 7, base=config)

    # the same from the command line
    monkeypatch.setenv("EVOFORGE_DATABASE_URL", database.url)
    cli = CliRunner()
    listed = cli.invoke(app, ["history", "orig", "--round", "1"])
    assert listed.exit_code == 0, listed.output
    assert "analyze_result" in listed.output and "RESULT: the grid" in listed.output
    rerun = cli.invoke(app, ["replay", "orig", "--round", "1", "--fork-id", "orig-second",
                             "--set", "roles.analyzer.provider=scripted",
                             "--set", f"roles.analyzer.script={SCRIPTS / 'second_opinion.yaml'}"])
    assert rerun.exit_code == 0, rerun.output
    assert "fork orig-second of run orig" in rerun.output and "RESULT: second opinion" in rerun.output
    assert store.list_nodes("orig") == nodes_before


@pytest.mark.integration
def test_a_fork_checks_novelty_against_the_memory_its_step_saw(database: Database, tmp_path: Path) -> None:
    config = RunConfig(task=str(TOY), rounds=1, llm={"provider": "scripted", "script": str(SCRIPTS / "slow_toy.yaml")},
                       database_url=database.url, state_dir=tmp_path / "state", sampling={"policy": "greedy"},
                       bounds={"max_novelty_retries": 0},
                       novelty={"duplicate_similarity": 0.9999, "judge_similarity": 0.9999})
    start_run(config, "orig")
    store = services.get_services(config).nodes
    seed, first = store.list_nodes("orig")

    def fork_proposing(code: str, fork_id: str) -> None:
        script = tmp_path / f"{fork_id}.yaml"
        script.write_text(yaml.safe_dump({"researcher": [f"NAME: again\nMOTIVATION: once more\n```python\n{code}```"]}))
        replay.fork_run("orig", 1, from_node="propose_candidate", fork_id=fork_id, base=config,
                        overrides={"roles": {"researcher": {"provider": "scripted", "script": str(script)}}})

    # the Researcher of the fork echoes the parent with a comment added (an unchanged echo is refused as an edit
    # error before novelty is checked): a duplicate of the seed of the original run, which the step saw
    fork_proposing(seed.code.replace("def solve():\n", "def solve():\n    # once more\n"), "orig-echo")
    (echo,) = store.list_nodes("orig-echo")
    assert echo.novelty["nearest_id"] == seed.id and echo.novelty["verdict"] == "duplicate"
    assert echo.status == "duplicate" and echo.stage_results == [], "the echo was evaluated again"

    # round 1's own node was recorded after the step ran: the fork may propose it again, as the step did
    fork_proposing(first.code, "orig-again")
    (again,) = store.list_nodes("orig-again")
    assert again.novelty["verdict"] == "novel" and again.status == "evaluated" and again.score == first.score
