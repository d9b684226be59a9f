"""Docs kept honest by tests: the example config, the README's commands, options, exit codes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from pirouter_py.cli import app
from pirouter_py.config import Config
from pirouter_py.errors import ExitCode
from tests.conftest import EXAMPLE, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def config_keys(
    model: type[BaseModel], prefix: str = "", seen: frozenset[type] = frozenset()
) -> list[str]:
    """Every key path a config.toml can set, e.g. "models.<alias>.quality" (a table that nests
    itself, like a rule's `when` inside `any`, is listed once)."""
    if model in seen:
        return []
    keys: list[str] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        keys.append(path)
        keys += _nested(field.annotation, path, seen | {model})
    return keys


def _nested(annotation: Any, path: str, seen: frozenset[type]) -> list[str]:
    args = getattr(annotation, "__args__", ())
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return config_keys(annotation, path + ".", seen)
    found: list[str] = []
    for arg in args:
        found += _nested(
            arg, path + (".<name>" if getattr(annotation, "__origin__", None) is dict else ""), seen
        )
    return found


@pytest.mark.parametrize("key", config_keys(Config))
def test_every_config_key_is_in_the_example(key: str) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    leaf = key.rsplit(".", 1)[-1]
    pattern = (
        rf"^\[\[?{re.escape(leaf)}[\].]"
        if "." not in key  # a section: [name] or [[name]]
        else rf"(^|[\s{{,#]){re.escape(leaf)}\s*="
    )
    assert re.search(pattern, text, re.MULTILINE), f"{key} is not documented in config.example.toml"


def _commands() -> list[tuple[str, list[str]]]:
    import typer.main

    group = typer.main.get_command(app)
    out = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        options = [opt for param in command.params for opt in param.opts if opt.startswith("--")]
        out.append((name, options))
    return out


@pytest.mark.parametrize(("name", "options"), _commands())
def test_every_command_and_option_is_in_the_readme(name: str, options: list[str]) -> None:
    assert f"pirouter {name}" in README
    for option in options:
        if option != "--help":
            assert option in README, f"{name} {option} is not in the README"


def test_exit_codes_are_documented() -> None:
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \| ", README, re.MULTILINE), f"exit code {int(code)}"
    from typer.testing import CliRunner

    assert "Exit codes: 0 ok, 1 runtime or routing error, 2 usage error, 3 config error." in (
        CliRunner().invoke(app, ["--help"]).stdout.replace("\n", " ").replace("  ", " ")
    )


def _fenced_after(heading: str) -> str:
    start = README.index(heading)
    block = README[start:].split("```sh\n", 1)[1]
    return block.split("\n```", 1)[0].strip()


def test_ci_runs_the_readme_test_command() -> None:
    command = _fenced_after("Run the tests")
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_run_command_installs_and_starts_pirouter() -> None:
    command = _fenced_after("Run the daemon")
    assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -e .")
    assert command.endswith(".venv/bin/pirouter run")


def test_license_is_apache() -> None:
    assert "Apache License" in (ROOT / "LICENSE").read_text() and Path(ROOT / "LICENSE").exists()
