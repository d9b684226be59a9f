"""The `pirouter` command line: Typer commands that parse, call one function and render.

Only this package prints. Reports go to stdout (a rich table for people, `--json` for scripts);
errors, warnings and notes go to stderr. This entry module imports the command modules, which
register on `common.app`, and runs it; no command module imports it.
"""

from __future__ import annotations

import gc
import os
import sys

# isort: off
# Each module registers its commands on `app` as it is imported: this order is --help's.
from pirouter_py.cli import setup, inspect, daemon, agents, shell, ledger, replay, learning, service  # noqa: F401
from pirouter_py.cli.common import app

# isort: on

__all__ = ["app", "main"]
COMMAND_MODULES = (
    *("setup", "inspect", "daemon", "agents", "shell"),
    *("ledger", "replay", "learning", "service"),
)


def main() -> None:
    """Console entry point."""
    # No garbage collection while the command starts: its imports and config make ~55,000
    # objects that live as long as it does and almost no cyclic garbage, and the collector's
    # passes over them took ~10 % of `pirouter route` and ~12 % of the daemon's start to its
    # first answer (same-run A/B, bench/). `load` turns it back on (`started`).
    gc.disable()
    # pydantic looks for plugins once per process by reading every installed distribution's
    # entry points (~5 ms of each command here); pirouter uses none. A value the user set wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
