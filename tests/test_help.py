"""`pirouter --help` and every group's `--help` at 80 columns show each command's summary whole:
Click cuts a summary that does not fit with "...", which hid most of them."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from pirouter_py.cli import app
from tests.conftest import ROOT

WIDTH = 80


def groups() -> list[tuple[str, ...]]:
    """The path of every command group, the root first."""
    found: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        if hasattr(command, "commands"):  # a group (Typer bundles its own Click)
            found.append(path)
            for name, sub in command.commands.items():
                walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def summaries(help_text: str) -> dict[str, str]:
    """Each command's summary under "Commands:", its continuation lines joined."""
    listed: dict[str, str] = {}
    section = help_text.split("\nCommands:\n", 1)[1]
    name = ""
    for line in section.splitlines():
        entry = re.match(r"^  (\S+)\s{2,}(.*)$", line)
        if entry:
            name = entry.group(1)
            listed[name] = entry.group(2)
        elif line.startswith("   ") and name:
            listed[name] += " " + line.strip()
        else:
            name = ""
    return listed


def test_there_are_groups_to_check() -> None:
    assert {(), ("models",), ("config",), ("ledger",), ("service",)} <= set(groups())


@pytest.mark.parametrize("path", groups(), ids=lambda p: " ".join(("pirouter", *p)))
def test_every_summary_is_whole_at_80_columns(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    assert all(len(line) <= WIDTH for line in result.stdout.splitlines()), result.stdout
    listed = summaries(result.stdout)
    group: Any = typer.main.get_command(app)
    for name in path:
        group = group.commands[name]
    assert set(listed) == set(group.commands)
    cut = {name: text for name, text in listed.items() if text.endswith("...") or not text}
    assert cut == {}, f"summaries cut at {WIDTH} columns"


def test_command_modules_keep_their_annotations_as_code() -> None:
    """Typer reads every command's signature at each start; with `from __future__ import
    annotations` each annotation is a string it must compile and evaluate (about a tenth of
    `pirouter --help`'s time over the stack's own floor, bench/): the command modules keep real
    annotations, quoting only the names imported for type checking."""
    from pirouter_py.cli import COMMAND_MODULES

    for module in (*COMMAND_MODULES, "common"):
        text = (ROOT / "pirouter_py" / "cli" / f"{module}.py").read_text()
        assert "\nfrom __future__ import annotations\n" not in text, module
