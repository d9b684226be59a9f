"""What every command module shares: the Typer app, common options, loading the config, and
turning pirouter's errors into messages and exit codes.

Command modules (`inspect`, `daemon`, `ledger`, `service`, `docs`) import this module and register
their commands on `app`; the package's entry module imports them all. Heavy modules (aiohttp,
pydantic, rich) are imported inside the commands that need them, so `--help` starts fast. The
command modules do without `from __future__ import annotations`: Typer reads each command's
signature at every start, and string annotations it would compile and evaluate one by one
(names imported only for type checking are quoted instead).
"""

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


def load(ctx: typer.Context, config: Path | None, *, warn: bool = True) -> "LoadedConfig":
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


def ledger_file(loaded: "LoadedConfig") -> Path:
    """[ledger] path (with ~ expanded), else the platform data dir's ledger.db."""
    from pirouter_py.config import default_ledger_path

    path = loaded.config.ledger.path
    return Path(path).expanduser() if path else default_ledger_path()


def ledger_where(loaded: "LoadedConfig") -> str:
    """Where the ledger is, for a message: [ledger] url (password hidden), else its file."""
    from pirouter_py.ledger.db import redact

    url = loaded.config.ledger.url
    return redact(url) if url else str(ledger_file(loaded))


def open_ledger(loaded: "LoadedConfig", path: Path | None = None) -> Any:
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


def learned_path(loaded: "LoadedConfig") -> Path:
    """Where the learned router's file is: beside the ledger, where the daemon reads it."""
    from pirouter_py.routing import learned

    return ledger_file(loaded).with_name(learned.FILE_NAME)


def learned_scorer(loaded: "LoadedConfig") -> Any:
    """The learned router the daemon would use (the owner's model beside the ledger with the
    shipped prior, prior.build) when the config turns it on, else None (the decision is then
    the difficulty ladder's, as the daemon's would be). What cannot be read goes to stderr."""
    if not loaded.config.routing.learned:
        return None
    from pirouter_py.routing import prior

    scorer, problems = prior.build(loaded.config, learned_path(loaded))
    for problem in problems:
        sys.stderr.write(f"warning: {problem}\n")
    return scorer


def daemon_url(config: "Config") -> str:
    """Where clients reach the daemon this config runs: [server] bind, any-address binds as
    loopback."""
    from pirouter_py.config import parse_bind

    bound = parse_bind(config.server.bind)
    assert bound is not None  # validated at load
    host = "127.0.0.1" if bound[0] in ("0.0.0.0", "::") else bound[0]
    return f"http://{f'[{host}]' if ':' in host else host}:{bound[1]}"


# ---------------------------------------------------------------------------------------------
# finding the running daemon: --url, else the run file of a live `pirouter run`, else the config

RUN_FILE_NAME = "run.json"  # in the platform state dir: {"pid", "url", "host", "port", "config"}

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The daemon's address, e.g. http://127.0.0.1:18402 (default: the running "
        "daemon's, from its run file, else the config's [server] bind).",
        metavar="<url>",
        show_default=False,
    ),
]


def run_file() -> Path:
    """Where `pirouter run` says where it listens: `<platform user state dir>/pirouter/run.json`."""
    import platformdirs

    return platformdirs.user_state_path("pirouter", appauthor=False) / RUN_FILE_NAME


def write_run_file(url: str, config: str) -> Path | None:
    """Say where this daemon listens (replacing another's file); None, with a warning, when the
    state dir cannot be written (the daemon serves anyway)."""
    import os
    from urllib.parse import urlsplit

    path = run_file()
    parts = urlsplit(url)
    doc = {
        "pid": os.getpid(),
        "url": url,
        "host": parts.hostname,
        "port": parts.port,
        "config": config,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{RUN_FILE_NAME}.{os.getpid()}")
        temporary.write_text(json.dumps(doc) + "\n", encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        sys.stderr.write(
            f"warning: cannot write the run file {path} ({exc}): `pirouter status` finds this "
            "daemon only with --url\n"
        )
        return None
    return path


def remove_run_file(path: Path) -> None:
    """Remove the run file at `path` if it is still this process's (another daemon started since
    may have replaced it)."""
    import os

    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def pid_alive(pid: int) -> bool:
    import os

    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    except OSError:
        return False
    return True


def running_daemon() -> str | None:
    """The address in the run file, if the process that wrote it is alive; a stale or unreadable
    file is ignored."""
    try:
        doc = json.loads(run_file().read_text(encoding="utf-8"))
        pid, url = doc["pid"], doc["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(pid, int) or not isinstance(url, str) or not pid_alive(pid):
        return None
    return url


def checked_url(url: str) -> str:
    """A --url value without its trailing slash; a usage error unless it is http(s)://host."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise typer.BadParameter(
            f"{url!r} is not a daemon address: use e.g. http://127.0.0.1:11435",
            param_hint="--url",
        )
    return url.strip().rstrip("/")


def ask_daemon(request: Any, timeout: float) -> Any:
    """Open `request` (a URL or a urllib Request) on the daemon directly, never through an HTTP
    proxy from the environment (a loopback address is not the proxy's to reach)."""
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return direct.open(request, timeout=timeout)


def find_daemon(config: "Config", url: str | None) -> tuple[str, str]:
    """The daemon's address and how it was found: --url, else the run file of a live `pirouter
    run`, else the config's [server] bind."""
    if url is not None:
        return checked_url(url), "--url"
    running = running_daemon()
    if running is not None:
        return running, f"the run file {run_file()}"
    return daemon_url(config), "the config's [server] bind"
