"""`pirouter agents <client>`: the settings printed for each coding agent, from the config.

Each printed file is loaded by the client's own code, pinned in `tests/agents/package.json`:
Continue's config-yaml schema (what `cn` parses with), `codex doctor`, `opencode debug config`.
Aider's files are read with real YAML and JSON parsers. The clients run in a network namespace of
their own (`unshare -n`): they reach nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML, installed with the test extra
from typer.testing import CliRunner

from pirouter_py.cli import agents, app
from pirouter_py.cli.agents import codex_catalog
from pirouter_py.config import load_config
from tests.agent_scenario import AGENTS, INSTALL, PACKAGES, installed
from tests.conftest import EXAMPLE, need

needs_agents = need("the agent CLIs", installed(), INSTALL)
CLIENT_TIMEOUT_S = 90
# Continue's own parser (the one `cn` runs), on the file read from stdin: the config as Continue
# keeps it, and the template variables (`${{ secrets.X }}`) it will fill in
CONTINUE_CHECK = """
import {parseConfigYaml, getTemplateVariables} from "@continuedev/config-yaml";
import {readFileSync} from "node:fs";
const text = readFileSync(0, "utf8");
console.log(JSON.stringify({config: parseConfigYaml(text), variables: getTemplateVariables(text)}));
"""

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


def printed(agent: str, config: Path, *options: str) -> dict[str, Any]:
    code, out, err = run("agents", agent, "--config", str(config), "--json", *options)
    assert code == 0, err
    settings: dict[str, Any] = json.loads(out)
    return settings


def isolated(
    command: list[str], cwd: Path, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """A client's command in a network namespace of its own, with HOME in the test's temp dir."""
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    return subprocess.run(
        [*unshare, *command],
        cwd=cwd,
        env={"PATH": os.environ["PATH"], **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def local(write_config: Callable[[str], Path]) -> Path:
    return write_config(LOCAL.replace("{keys}", ""))


def test_claude_code_compacts_before_the_smallest_window_its_turns_can_reach(
    local: Path, write_config: Callable[[str], Path]
) -> None:
    # small's window (40,960: notools takes no agent turns) is below the least Claude Code
    # compacts at: not exported (Claude Code would read it as its minimum and warn), and said
    code, out, err = run("agents", "claude-code", "--config", str(local))
    assert code == 0
    assert out.splitlines() == [
        "export ANTHROPIC_BASE_URL=http://127.0.0.1:18080",
        "export ANTHROPIC_MODEL=auto",
        "export ANTHROPIC_DEFAULT_HAIKU_MODEL=auto",
        "export ANTHROPIC_API_KEY=unused",
    ]
    assert err == (
        "note: the smallest tool-capable context window is 40,960 tokens, and Claude Code "
        "compacts no earlier than 100,000: a longer conversation is routed to the models whose "
        "window fits it (a routing error when none does)\n"
    )
    # a window Claude Code can compact before is exported
    large = write_config(LOCAL.replace("{keys}", "").replace("40960", "131072"))
    code, out, err = run("agents", "claude-code", "--config", str(large))
    assert code == 0 and err == ""
    assert out.splitlines()[-1] == "export CLAUDE_CODE_AUTO_COMPACT_WINDOW=131072"


def test_the_example_config_gives_its_own_smallest_tool_window() -> None:
    config = load_config(EXAMPLE).config
    expected = min(
        m.context_window
        for m in config.models.values()
        if m.enabled and m.supports_tools and m.kind == "chat" and m.context_window
    )
    code, out, err = run("agents", "claude-code", "--config", str(EXAMPLE))
    if expected >= agents.CLAUDE_MIN_COMPACT_WINDOW:
        assert code == 0 and f"CLAUDE_CODE_AUTO_COMPACT_WINDOW={expected}" in out
    else:
        assert code == 0 and f"window is {expected:,} tokens" in err


def test_codex_gets_a_responses_provider(local: Path) -> None:
    code, out, _ = run("agents", "codex", "--config", str(local))
    assert code == 0 and out.startswith("export PIROUTER_API_KEY=unused\n")
    toml = out.split(
        "# ~/.codex/config.toml (part to merge into yours; --whole prints it whole)\n"
    )[1]
    assert toml.startswith("# pirouter's part of your file: its top-level keys go above")
    parsed = tomllib.loads(toml)
    assert parsed["model"] == "auto" and parsed["model_provider"] == "pirouter"
    provider = parsed["model_providers"]["pirouter"]
    assert provider["base_url"] == "http://127.0.0.1:18080/v1"
    assert (provider["wire_api"], provider["supports_websockets"]) == ("responses", False)


def test_continue_gets_chat_autocomplete_and_embeddings(local: Path) -> None:
    code, out, _ = run("agents", "continue", "--config", str(local), "--json")
    assert code == 0
    settings = json.loads(out)
    assert settings["parts"] == []  # always the whole file: cn needs its name and version
    made = yaml.safe_load(settings["files"]["~/.continue/config.yaml"])
    assert (made["name"], made["version"], made["schema"]) == ("pirouter", "1.0.0", "v1")
    roles = {m["model"]: m["roles"] for m in made["models"]}
    assert roles == {
        "auto": ["chat", "edit", "apply", "summarize"],
        "fim": ["autocomplete"],
        "vectors": ["embed"],
    }


def test_aider_and_opencode_know_the_window(local: Path) -> None:
    settings = printed("aider", local)
    assert "--model openai/auto" in settings["command"]
    meta = json.loads(settings["files"][".aider.model.metadata.json"])
    assert meta["openai/auto"]["max_input_tokens"] == 40960
    body = json.loads(printed("opencode", local)["files"]["opencode.json"])
    models = body["provider"]["pirouter"]["models"]
    assert body["model"] == "pirouter/auto" and models["auto"]["limit"]["context"] == 40960
    assert "vectors" not in models and "notools" in models


def test_client_keys_are_named_not_invented(write_config: Callable[[str], Path]) -> None:
    keyed = write_config(LOCAL.replace("{keys}", 'api_keys_env = ["MY_CLIENT_KEY"]'))
    code, out, err = run("agents", "claude-code", "--config", str(keyed))
    assert code == 0 and "export ANTHROPIC_API_KEY=$PIROUTER_API_KEY" in out
    assert "set PIROUTER_API_KEY to one of your client keys" in err
    # aider takes it from its own variable: never quoted into a literal `$PIROUTER_API_KEY`
    code, out, _ = run("agents", "aider", "--config", str(keyed))
    assert code == 0 and "export AIDER_OPENAI_API_KEY=$PIROUTER_API_KEY" in out
    assert "PIROUTER_API_KEY" not in out.split("\n", 1)[1]


def test_parts_are_marked_and_whole_files_are_offered(local: Path) -> None:
    for agent, path in (
        ("codex", "~/.codex/config.toml"),
        ("opencode", "opencode.json"),
        ("aider", "~/.aider.conf.yml"),
    ):
        code, out, _ = run("agents", agent, "--config", str(local))
        assert code == 0 and f"# {path} (part to merge into yours; --whole prints it whole)" in out
        code, out, _ = run("agents", agent, "--config", str(local), "--whole")
        assert code == 0 and f"# {path} (whole)" in out and "part" not in out
        assert printed(agent, local, "--whole")["parts"] == []
    whole = json.loads(printed("opencode", local, "--whole")["files"]["opencode.json"])
    assert whole["$schema"] == "https://opencode.ai/config.json"


def test_aider_reads_its_files_as_options(local: Path) -> None:
    """The YAML keys are aider's long options (it reads `.aider.conf.yml` with them), the same
    as the printed command's; the metadata is litellm's model-cost entry for `openai/auto`."""
    for options in ((), ("--whole",)):
        settings = printed("aider", local, *options)
        conf = yaml.safe_load(settings["files"]["~/.aider.conf.yml"])
        argv = shlex.split(settings["command"])
        flags = dict(zip(argv[1::2], argv[2::2], strict=True))
        assert {f"--{k}": v for k, v in conf.items()} == flags
        assert conf == {
            "openai-api-base": "http://127.0.0.1:18080/v1",
            "openai-api-key": "unused",
            "model": "openai/auto",
        }
        meta = json.loads(settings["files"][".aider.model.metadata.json"])
        assert meta["openai/auto"]["litellm_provider"] == "openai"


def continue_parses(text: str) -> dict[str, Any]:
    done = subprocess.run(
        ["node", "--input-type=module", "-e", CONTINUE_CHECK],
        cwd=PACKAGES,
        input=text,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


@needs_agents
def test_continue_parses_the_config_yaml_with_its_own_schema(
    local: Path, write_config: Callable[[str], Path]
) -> None:
    """Continue's parser keeps what it knows and drops the rest: every key printed must survive."""
    text = printed("continue", local)["files"]["~/.continue/config.yaml"]
    made = continue_parses(text)
    assert made["config"] == yaml.safe_load(text)  # nothing dropped, nothing renamed
    chat = made["config"]["models"][0]
    assert chat["capabilities"] == ["tool_use"]  # `auto` is no model Continue knows to call tools
    assert chat["defaultCompletionOptions"] == {"contextLength": 40960}
    keyed = write_config(LOCAL.replace("{keys}", 'api_keys_env = ["MY_CLIENT_KEY"]'))
    made = continue_parses(printed("continue", keyed)["files"]["~/.continue/config.yaml"])
    assert made["variables"] == ["secrets.PIROUTER_API_KEY"]  # filled from the environment
    with pytest.raises(AssertionError, match="name: Required, version: Required"):
        continue_parses("models:\n" + text.split("models:\n", 1)[1])  # what 0.x printed


@needs_agents
@pytest.mark.parametrize("whole", [False, True])
def test_codex_loads_the_printed_config(local: Path, tmp_path: Path, whole: bool) -> None:
    """`codex doctor` loads ~/.codex/config.toml as every Codex command does, catalog included."""
    bin = AGENTS
    home = tmp_path / "codex"
    home.mkdir()
    catalog = tmp_path / "models.json"
    options = ["--catalog", str(catalog)] if whole else []
    if whole:  # --catalog asks the Codex on PATH for its own catalog
        os.environ["PATH"] = f"{bin}:{os.environ['PATH']}"
    try:
        text = printed("codex", local, *options, *(["--whole"] if whole else []))["files"]
    finally:
        os.environ["PATH"] = os.environ["PATH"].removeprefix(f"{bin}:")
    (home / "config.toml").write_text(text["~/.codex/config.toml"])
    env = {"HOME": str(tmp_path), "CODEX_HOME": str(home), "PIROUTER_API_KEY": "unused"}
    done = isolated([str(bin / "codex"), "doctor", "--json"], tmp_path, env)
    loaded = json.loads(done.stdout)["checks"]["config.load"]
    assert loaded["status"] == "ok", loaded
    details = loaded["details"]
    assert (details["model"], details["model provider"]) == ("auto", "pirouter")
    broken = text["~/.codex/config.toml"].replace('"responses"', '"chat-ish"')
    (home / "config.toml").write_text(broken)  # and it does check: a wrong wire_api fails
    done = isolated([str(bin / "codex"), "doctor", "--json"], tmp_path, env)
    assert json.loads(done.stdout)["checks"]["config.load"]["status"] == "fail"


@needs_agents
@pytest.mark.parametrize("whole", [False, True])
def test_opencode_loads_the_printed_config(local: Path, tmp_path: Path, whole: bool) -> None:
    """`opencode debug config` validates opencode.json against opencode's own schema."""
    bin = AGENTS
    text = printed("opencode", local, *(["--whole"] if whole else []))["files"]["opencode.json"]
    (tmp_path / "opencode.json").write_text(text)
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config")}
    done = isolated([str(bin / "opencode"), "debug", "config", "--pure"], tmp_path, env)
    assert done.returncode == 0, done.stderr[-2000:]
    resolved = json.loads(done.stdout)
    assert resolved["model"] == "pirouter/auto"
    pirouter = resolved["provider"]["pirouter"]
    assert pirouter["options"]["baseURL"] == "http://127.0.0.1:18080/v1"
    assert pirouter["models"]["auto"]["limit"] == {"context": 40960, "output": 32000}
    (tmp_path / "opencode.json").write_text(text.replace("40960", '"big"'))
    done = isolated([str(bin / "opencode"), "debug", "config", "--pure"], tmp_path, env)
    assert done.returncode != 0 and "Expected number" in done.stderr  # and it does check


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
