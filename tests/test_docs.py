"""Docs kept honest by tests: the example config, the commands and options (README, docs/cli.md),
exit codes, the set-up commands, and every link between the docs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from pirouter_py.cli import app
from pirouter_py.cli import docs as clidoc
from pirouter_py.config import Config
from pirouter_py.errors import ExitCode
from tests.conftest import EXAMPLE, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
# docs/cli.md as written by hand: its table of commands, before the generated reference
CLI_TABLE = clidoc.CLI_DOC.read_text(encoding="utf-8").split(clidoc.REFERENCE_BEGIN)[0]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


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
    """Every command that runs (not the groups), as "ledger tail", with its long options."""
    return [
        (" ".join(c.path), [o.long for o in c.options if o.long not in ("--help", "--config")])
        for c in clidoc.commands()
        if c.path and not c.subcommands
    ]


@pytest.mark.parametrize(("name", "options"), _commands())
def test_every_command_and_option_is_in_the_cli_doc(name: str, options: list[str]) -> None:
    """docs/cli.md's table (written by hand) has a row for each command, naming every option."""
    top, _, sub = name.partition(" ")
    rows = [line for line in CLI_TABLE.splitlines() if line.startswith(f"| `pirouter {top}")]
    rows = [row for row in rows if not sub or re.search(rf"\b{re.escape(sub)}\b", row)]
    assert rows, f"`pirouter {name}` has no row in docs/cli.md's table"
    for option in options:
        assert any(option in row for row in rows), f"{name} {option} is not in docs/cli.md"


@pytest.mark.parametrize("name", sorted({name.split(" ")[0] for name, _ in _commands()}))
def test_the_readme_names_every_command(name: str) -> None:
    assert f"pirouter {name}" in README, f"the README never names `pirouter {name}`"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", doc.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {_anchor(h) for h in re.findall(r"^#+ (.*)$", text, re.MULTILINE)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_between_the_docs_leads_somewhere(doc: Path) -> None:
    """Relative links (README <-> docs/*.md, files of the checkout) name files that exist and
    headings those files have."""
    text = doc.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        assert file.exists(), f"{doc.name}: link to {target}: no such file"
        if anchor:
            assert anchor in _anchors(file), f"{doc.name}: link to {target}: no such heading"


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


def test_the_readme_stats_example_is_what_stats_prints() -> None:
    """The ledger section's `pirouter stats` is tests/test_stats.py's golden report, verbatim."""
    from tests.test_stats import GOLDEN

    assert f"$ pirouter stats\n{GOLDEN}```" in README
