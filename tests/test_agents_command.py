"""`pirouter agents <client>`: the settings printed for each coding agent, from the config."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.cli.agents import codex_catalog
from pirouter_py.config import load_config
from tests.conftest import EXAMPLE

runner = CliRunner()

LOCAL = """
[server]
bind = "127.0.0.1:18080"
{keys}
[providers.ollama]
[models.small]
provider = "ollama"
model_id = "qwen3:8b"
supports_tools = true
context_window = 40960
local = true
[models.big]
provider = "ollama"
model_id = "qwen3:32b"
supports_tools = true
context_window = 131072
local = true
[models.notools]
provider = "ollama"
model_id = "gemma3:1b"
context_window = 8192
[models.fim]
provider = "ollama"
model_id = "qwen2.5-coder:1.5b"
supports_fim = true
context_window = 32768
[models.vectors]
provider = "ollama"
model_id = "nomic-embed-text"
kind = "embedding"
"""


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def local(write_config: Callable[[str], Path]) -> Path:
    return write_config(LOCAL.replace("{keys}", ""))


def test_claude_code_compacts_before_the_smallest_window_its_turns_can_reach(local: Path) -> None:
    code, out, err = run("agents", "claude-code", "--config", str(local))
    assert code == 0 and err == ""
    assert out.splitlines() == [
        "export ANTHROPIC_BASE_URL=http://127.0.0.1:18080",
        "export ANTHROPIC_MODEL=auto",
        "export ANTHROPIC_DEFAULT_HAIKU_MODEL=auto",
        "export ANTHROPIC_API_KEY=unused",
        "export CLAUDE_CODE_AUTO_COMPACT_WINDOW=40960",  # small's: notools takes no agent turns
    ]


def test_the_example_config_gives_its_own_smallest_tool_window() -> None:
    config = load_config(EXAMPLE).config
    expected = min(
        m.context_window
        for m in config.models.values()
        if m.enabled and m.supports_tools and m.kind == "chat" and m.context_window
    )
    code, out, _ = run("agents", "claude-code", "--config", str(EXAMPLE))
    assert code == 0 and f"CLAUDE_CODE_AUTO_COMPACT_WINDOW={expected}" in out


def test_codex_gets_a_responses_provider(local: Path) -> None:
    code, out, _ = run("agents", "codex", "--config", str(local))
    assert code == 0 and out.startswith("export PIROUTER_API_KEY=unused\n")
    toml = out.split("# ~/.codex/config.toml\n", 1)[1]
    parsed = tomllib.loads(toml)
    assert parsed["model"] == "auto" and parsed["model_provider"] == "pirouter"
    provider = parsed["model_providers"]["pirouter"]
    assert provider["base_url"] == "http://127.0.0.1:18080/v1"
    assert (provider["wire_api"], provider["supports_websockets"]) == ("responses", False)


def test_continue_gets_chat_autocomplete_and_embeddings(local: Path) -> None:
    code, out, _ = run("agents", "continue", "--config", str(local), "--json")
    assert code == 0
    yaml = json.loads(out)["files"]["~/.continue/config.yaml"]
    assert "model: auto" in yaml and "model: fim\n    apiBase" in yaml
    assert "roles: [autocomplete]" in yaml and "model: vectors" in yaml
    assert "roles: [embed]" in yaml


def test_aider_and_opencode_know_the_window(local: Path) -> None:
    code, out, _ = run("agents", "aider", "--config", str(local), "--json")
    settings = json.loads(out)
    assert code == 0 and "--model openai/auto" in settings["command"]
    meta = json.loads(settings["files"][".aider.model.metadata.json"])
    assert meta["openai/auto"]["max_input_tokens"] == 40960
    code, out, _ = run("agents", "opencode", "--config", str(local), "--json")
    body = json.loads(json.loads(out)["files"]["opencode.json"])
    models = body["provider"]["pirouter"]["models"]
    assert body["model"] == "pirouter/auto" and models["auto"]["limit"]["context"] == 40960
    assert "vectors" not in models and "notools" in models


def test_client_keys_are_named_not_invented(write_config: Callable[[str], Path]) -> None:
    keyed = write_config(LOCAL.replace("{keys}", 'api_keys_env = ["MY_CLIENT_KEY"]'))
    code, out, err = run("agents", "claude-code", "--config", str(keyed))
    assert code == 0 and "export ANTHROPIC_API_KEY=$PIROUTER_API_KEY" in out
    assert "set PIROUTER_API_KEY to one of your client keys" in err


def test_catalog_is_for_codex_only(local: Path, tmp_path: Path) -> None:
    code, _, err = run("agents", "aider", "--config", str(local), "--catalog", str(tmp_path / "x"))
    assert code == 2 and "--catalog is for codex" in err


def test_the_codex_catalog_takes_an_entry_that_calls_tools_directly() -> None:
    config = load_config(EXAMPLE).config
    bundled = {
        "models": [
            {"slug": "code-mode", "priority": 1, "visibility": "list", "tool_mode": "code_mode"},
            {"slug": "hidden", "priority": 0, "visibility": "hide"},
            {"slug": "plain", "priority": 5, "visibility": "list", "base_instructions": "be nice"},
        ]
    }
    made = codex_catalog(config, bundled)["models"]
    assert made[0]["slug"] == "auto"
    assert all(m["base_instructions"] == "be nice" and m["tool_mode"] is None for m in made)
    windows = {m["slug"]: m.get("context_window") for m in made}
    assert all(windows[a] == config.models[a].context_window for a in windows if a != "auto")
