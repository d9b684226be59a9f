"""Completions, the man page and docs/cli.md's reference are what the CLI generates, and work."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pirouter_py.cli import docs as clidoc
from tests.conftest import ROOT, need


@pytest.mark.parametrize("shell", clidoc.SHELLS)
def test_committed_completions_are_current(shell: str) -> None:
    committed = (ROOT / "completions" / clidoc.COMPLETION_FILES[shell]).read_text()
    assert committed == clidoc.completion(shell), (
        "completions/ is stale: run `python -m pirouter_py.cli.docs`"
    )


def test_committed_man_page_is_current() -> None:
    assert (ROOT / "man" / "pirouter.1").read_text() == clidoc.manpage(), (
        "man/pirouter.1 is stale: run `python -m pirouter_py.cli.docs`"
    )


def test_man_page_covers_every_command_and_option() -> None:
    page = (ROOT / "man" / "pirouter.1").read_text().replace("\\-", "-")
    for command in clidoc.commands():
        if command.path and not command.subcommands:
            assert "pirouter " + " ".join(command.path) in page
        for option in command.options:
            for name in option.names:
                assert name in page, f"{' '.join(command.path)} {name} is not in the man page"
    for section in ("EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "CONFIGURATION"):
        assert f".SH {section}" in page


@need("groff", shutil.which("groff"), "apt-get install groff-base")
def test_man_page_renders_without_warnings() -> None:
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(ROOT / "man" / "pirouter.1")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_cli_reference_is_current() -> None:
    doc = clidoc.CLI_DOC.read_text()
    assert clidoc.with_reference(doc) == doc, (
        "docs/cli.md's CLI reference is stale: run `python -m pirouter_py.cli.docs`"
    )


def complete(line: str) -> list[str]:
    """What bash offers for `line` (the cursor at its end), with the committed script."""
    words = line.split(" ")
    script = (
        f"source {ROOT / 'completions' / 'pirouter.bash'}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_pirouter\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.split()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("pirouter ", {"check-config", "models", "route", "run", "stats", "ledger", "completions"}),
        ("pirouter ro", {"route"}),
        ("pirouter route --p", {"--prompt", "--profile"}),
        ("pirouter route --profile ", {"local-first", "balanced", "best-quality", "cloud-only"}),
        ("pirouter --config x.toml ru", {"run"}),
        ("pirouter ledger ", {"path", "tail", "export"}),
        ("pirouter ledger export --format ", {"csv", "jsonl"}),
        ("pirouter stats --by d", {"day"}),
        ("pirouter completions ", {"bash", "zsh", "fish"}),
    ],
)
def test_bash_completion_completes(line: str, expected: set[str]) -> None:
    offered = set(complete(line))
    assert expected <= offered and (len(expected) > 2 or offered == expected)


def test_the_completions_command_offers_every_shell_the_generator_writes() -> None:
    from pirouter_py.cli.shell import Shell

    assert tuple(s.value for s in Shell) == clidoc.SHELLS
