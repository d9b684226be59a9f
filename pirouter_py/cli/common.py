"""What every command module shares: the Typer app, common options, loading the config, and
turning pirouter's errors into messages and exit codes.

Command modules (`inspect`, `daemon`, `ledger`, `service`, `docs`) import this module and register
their commands on `app`; the package's entry module imports them all. Heavy modules (aiohttp,
pydantic, rich) are imported inside the commands that need them, so `--help` starts fast.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from pirouter_py import __version__
from pirouter_py.errors import ConfigError, ExitCode, PirouterError

if TYPE_CHECKING:
    from pirouter_py.config import Config, LoadedConfig

T = TypeVar("T")
EXIT_CODES_HELP = "Exit codes: 0 ok, 1 runtime or routing error, 2 usage error, 3 config error."
app = typer.Typer(
    name="pirouter",
    help="Local LLM routing daemon: one endpoint for every agent and tool, each request sent to "
    "the cheapest model likely to do the job well, every attempt recorded in a ledger.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich costs ~100 ms of start-up
    context_settings={"help_option_names": ["-h", "--help"]},
)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Path to config.toml (default: $PIROUTER_CONFIG, then the "
        "platform config dir, then the built-in default).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pirouter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: ConfigOption = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = config


def fail(message: str, code: ExitCode) -> NoReturn:
    sys.stderr.write(f"Error: {message}\n")
    raise typer.Exit(int(code))


def load(ctx: typer.Context, config: Path | None, *, warn: bool = True) -> LoadedConfig:
    """The config named after the command, before it, by $PIROUTER_CONFIG, or the default."""
    from pirouter_py.config import load_config  # pydantic costs ~100 ms: not for --help

    chosen = config if config is not None else ctx.obj
    loaded = load_config(chosen)
    started()
    if warn:
        for problem in loaded.warnings:
            sys.stderr.write(f"warning: {problem}\n")
    if loaded.is_default:
        where = loaded.default_path or "the platform config dir"
        sys.stderr.write(
            f"note: no config file at {where}; running on the built-in default "
            "(`pirouter init` writes one for what you have, or pass --config)\n"
        )
    return loaded


def started() -> None:
    """Start-up is over (the command's code and its config are loaded): what lives now lives as
    long as the command, so it goes out of the collector's sight, and collection resumes for the
    command's own work. Only if `main` turned the collector off (not for a caller's own process,
    such as a test runner invoking commands)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def guard(thunk: Callable[[], T]) -> T:
    """Run `thunk`, turning pirouter's own errors into a message and their exit code."""
    try:
        return thunk()
    except ConfigError as exc:
        config_failed(exc)
    except PirouterError as exc:
        fail(exc.message, exc.exit_code)


def config_failed(exc: ConfigError) -> NoReturn:
    """Every error and every warning of a config that cannot be used, in file order."""
    found = [(p, "error") for p in exc.problems] + [(p, "warning") for p in exc.warnings]
    for problem, kind in sorted(found, key=lambda f: f[0].line or 0):
        sys.stderr.write(f"{kind}: {problem}\n")
    raise typer.Exit(int(ExitCode.CONFIG)) from None


def ledger_file(loaded: LoadedConfig) -> Path:
    """[ledger] path (with ~ expanded), else the platform data dir's ledger.db."""
    from pirouter_py.config import default_ledger_path

    path = loaded.config.ledger.path
    return Path(path).expanduser() if path else default_ledger_path()


def ledger_where(loaded: LoadedConfig) -> str:
    """Where the ledger is, for a message: [ledger] url (password hidden), else its file."""
    from pirouter_py.ledger.db import redact

    url = loaded.config.ledger.url
    return redact(url) if url else str(ledger_file(loaded))


def open_ledger(loaded: LoadedConfig, path: Path | None = None) -> Any:
    """A read-only connection to the configured ledger (or the SQLite file `path`), None when
    it holds nothing yet; a ledger that cannot be opened is a message and exit code 1."""
    import sqlite3

    from pirouter_py.ledger import read

    url = None if path is not None else loaded.config.ledger.url
    try:
        return read.open_read_only(path or ledger_file(loaded), url)
    except sqlite3.Error as exc:
        where = str(path) if path is not None else ledger_where(loaded)
        fail(f"cannot read the ledger at {where}: {exc}", ExitCode.RUNTIME)


def learned_path(loaded: LoadedConfig) -> Path:
    """Where the learned router's file is: beside the ledger, where the daemon reads it."""
    from pirouter_py.routing import learned

    return ledger_file(loaded).with_name(learned.FILE_NAME)


def learned_scorer(loaded: LoadedConfig) -> Any:
    """The learned router beside the ledger when the config turns it on, else None (the
    decision is then the difficulty ladder's, as the daemon's would be)."""
    if not loaded.config.routing.learned:
        return None
    from pirouter_py.routing import learned

    return guard(lambda: learned.load(learned_path(loaded)))


def daemon_url(config: Config) -> str:
    """Where clients reach the daemon this config runs: [server] bind, any-address binds as
    loopback."""
    from pirouter_py.config import parse_bind

    bound = parse_bind(config.server.bind)
    assert bound is not None  # validated at load
    host = "127.0.0.1" if bound[0] in ("0.0.0.0", "::") else bound[0]
    return f"http://{f'[{host}]' if ':' in host else host}:{bound[1]}"
