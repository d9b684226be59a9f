"""`pirouter completions`: the shell completion script, made by `docs.py`."""

import sys
from enum import StrEnum
from typing import Annotated

import typer

from pirouter_py.cli.common import app


class Shell(StrEnum):  # docs.SHELLS: a test keeps the two the same
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command("completions")
def completions(
    shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.", show_default=False)],
) -> None:
    """Print a shell completion script for bash, zsh or fish.

    bash: source it; zsh: put it on $fpath as _pirouter; fish: save it as
    ~/.config/fish/completions/pirouter.fish."""
    from pirouter_py.cli.docs import completion  # the generator: not loaded by other commands

    sys.stdout.write(completion(shell.value))
