"""The `pirouter` command line: Typer commands that parse, call one function and render.

Only this package prints. Reports go to stdout (a rich table for people, `--json` for scripts);
errors, warnings and notes go to stderr. This entry module imports the command modules, which
register on `common.app`, and runs it; no command module imports it.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pirouter_py.cli.common import app

__all__ = ["app", "main"]
COMMAND_MODULES = (
    *("setup", "inspect", "daemon", "agents", "shell"),
    *("ledger", "replay", "learning", "service"),
)


def __getattr__(name: str) -> Any:
    """`app` with every command registered (imported on first use, so `pirouter --version`
    imports none of them)."""
    if name == "app":
        return _registered()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _registered() -> Any:
    import importlib

    from pirouter_py.cli.common import app

    # Each module registers its commands on `app` as it is imported: this order is --help's.
    for module in COMMAND_MODULES:
        importlib.import_module(f"pirouter_py.cli.{module}")
    return app


def main() -> None:
    """Console entry point."""
    if sys.argv[1:] in (["--version"], ["-V"]):  # the one answer that needs no command
        from pirouter_py import __version__

        sys.stdout.write(f"pirouter {__version__}\n")
        return
    # No garbage collection while the command starts: its imports and config make ~55,000
    # objects that live as long as it does and almost no cyclic garbage, and the collector's
    # passes over them took ~10 % of `pirouter route` and ~12 % of the daemon's start to its
    # first answer (same-run A/B, bench/). `load` turns it back on (`started`).
    gc.disable()
    # pydantic looks for plugins once per process by reading every installed distribution's
    # entry points (~5 ms of each command here); pirouter uses none. A value the user set wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        _registered()()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
