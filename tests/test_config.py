"""The run configuration: validation errors name the key, and precedence is explicit > environment > default."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from evoforge.config import ConfigError, RunConfig, load_config


def test_precedence_explicit_over_environment_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RunConfig().rounds == 10
    monkeypatch.setenv("EVOFORGE_ROUNDS", "7")
    monkeypatch.setenv("EVOFORGE_DATABASE_URL", "postgresql://env/db")
    assert RunConfig().rounds == 7
    assert RunConfig().database_url == "postgresql://env/db"
    assert RunConfig(rounds=3).rounds == 3
    assert load_config(None, rounds=4).rounds == 4
    assert load_config(None, rounds=None).rounds == 7, "a None override must not mask the environment"


def test_structured_field_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOFORGE_SAMPLING", "{policy: greedy, inspirations: 1}")
    config = RunConfig()
    assert config.sampling.policy == "greedy" and config.sampling.inspirations == 1


def test_yaml_file_and_override(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("rounds: 12\nllm: {provider: openai, model: gpt-x, base_url: 'http://127.0.0.1:9/v1'}\n")
    config = load_config(path, rounds=2)
    assert config.rounds == 2
    assert config.model_for("analyzer").model == "gpt-x"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rounds: -1\n", "rounds"),
        ("roundz: 3\n", "roundz"),
        ("sampling: {policy: best}\n", "sampling.policy"),
        ("roles: {wizard: {provider: local}}\n", "roles.wizard"),
        ("- a list\n", "expected a mapping"),
        ("rounds: [1\n", "cannot read config"),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(path)


def test_role_override_leaves_other_roles_on_the_default() -> None:
    config = RunConfig(roles={"analyzer": {"provider": "scripted", "script": "x.yaml"}})
    assert config.model_for("analyzer").provider == "scripted"
    assert config.model_for("researcher").provider == "local"


def test_the_local_server_gets_one_slot_per_lane_unless_told() -> None:
    config = RunConfig(workers=3, roles={"analyzer": {"model": "qwen2.5-coder-0.5b"}})
    assert config.model_for("researcher").slots == 3
    assert config.model_for("analyzer").slots == 3  # a role's own model is batched for every lane too
    assert RunConfig().llm.slots == 1
    assert RunConfig(workers=3, llm={"slots": 2}).llm.slots == 2
    with pytest.raises(ValidationError):
        RunConfig(llm={"slots": 0})
