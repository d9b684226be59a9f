"""`pirouter run`, `status` and `completions`: the daemon's life, and the shell's."""

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pirouter_py import __version__
from pirouter_py.cli.common import (
    ConfigOption,
    JsonOption,
    UrlOption,
    app,
    ask_daemon,
    fail,
    find_daemon,
    guard,
    ledger_file,
    ledger_where,
    load,
    print_json,
    remove_run_file,
    write_run_file,
)
from pirouter_py.errors import ExitCode, install_hint

# ---------------------------------------------------------------------------------------------
# run


def has_module(name: str) -> bool:
    """`name` imports (it will be imported anyway: checked here to fail before serving)."""
    import importlib

    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@app.command("run")
def run(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Listen on this address instead of [server] bind's.", show_default=False
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            help="Listen on this port instead of [server] bind's (0 picks a free one).",
            show_default=False,
            min=0,
            max=65535,
        ),
    ] = None,
    no_ledger: Annotated[
        bool, typer.Option("--no-ledger", help="Record nothing (benchmarks, experiments).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run the daemon until SIGINT or SIGTERM."""
    import asyncio

    from pirouter_py.config import parse_bind
    from pirouter_py.config.load import is_loopback
    from pirouter_py.observe import log
    from pirouter_py.server.serve import serve

    loaded = guard(lambda: load(ctx, config))
    cfg = loaded.config
    bound = parse_bind(cfg.server.bind)
    assert bound is not None  # validated at load
    host = host if host is not None else bound[0]
    port = port if port is not None else bound[1]
    if not is_loopback(host) and not cfg.server.keyed:
        fail(
            f"refusing to listen on {host}: beyond loopback pirouter would serve anyone who can "
            "reach this machine; set client keys ([server] api_keys_env or api_keys_file) or "
            "bind to 127.0.0.1",
            ExitCode.USAGE if ctx.params.get("host") else ExitCode.CONFIG,
        )
    log.setup(cfg.server.log_level)

    ledger_path = None if no_ledger else ledger_file(loaded)
    if ledger_path is not None and cfg.ledger.url is not None and not has_module("psycopg"):
        fail(
            f"[ledger] url needs the PostgreSQL driver: {install_hint('team')} "
            "(or remove [ledger] url to keep the ledger in a SQLite file)",
            ExitCode.CONFIG,
        )

    written: list[Path] = []

    def announce(url: str) -> None:
        run_file = write_run_file(url, loaded.source)  # for `status`, `dashboard`, `feedback`
        written.extend([run_file] if run_file is not None else [])
        sys.stdout.write(
            f"pirouter {__version__} listening on {url}\n"
            f"  OpenAI base URL: {url}/v1 (Anthropic and Ollama clients: {url})\n"
            f"  config: {loaded.source}\n"
            f"  ledger: {ledger_where(loaded) if ledger_path else 'off (--no-ledger)'}\n"
        )
        sys.stdout.flush()

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run

    def report(line: str) -> None:
        sys.stderr.write(f"  {line}\n")
        sys.stderr.flush()

    try:
        guard(
            lambda: runner(
                serve(loaded, host, port, announce=announce, ledger_path=ledger_path, report=report)
            )
        )
    finally:
        for path in written:
            remove_run_file(path)


@app.command("status")
def status(
    ctx: typer.Context,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show whether the daemon answers: version, uptime, counters.

    The daemon is found by --url, else by the run file of a running `pirouter run`, else at
    the config's [server] bind."""
    loaded = guard(lambda: load(ctx, config, warn=False))
    url, found = find_daemon(loaded.config, url)
    try:
        with ask_daemon(url + "/health", timeout=2) as response:
            health = json.loads(response.read())
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if as_json:
            print_json({"running": False, "url": url, "found_by": found, "error": str(reason)})
        else:
            sys.stdout.write(
                f"pirouter is not answering at {url} ({reason}; address from {found})\n"
                "  start it with `pirouter run`, or name its address with --url\n"
            )
        raise typer.Exit(int(ExitCode.RUNTIME)) from None
    if as_json:
        print_json({"running": True, "url": url, "found_by": found, **health})
        return
    uptime = int(health.get("uptime_s", 0))
    lines = [
        f"pirouter {health.get('version', '?')} is {health.get('status', 'ok')} at {url}",
        *([f"  reason:    {health['reason']}"] if health.get("reason") else []),
        f"  uptime:    {uptime // 3600}h {uptime % 3600 // 60}m {uptime % 60}s",
        f"  config:    {health.get('config')}" + _other_config(health.get("config"), loaded.source),
        f"  requests:  {health.get('requests')} served, {health.get('in_flight')} in flight",
    ]
    ledger = health.get("ledger")
    if ledger:
        state = f"failing: {ledger['last_error']}" if ledger.get("failing") else "ok"
        lines.append(
            f"  ledger:    {ledger['path']} ({ledger['written']} written, backlog "
            f"{ledger['backlog']}, {state})"
        )
    else:
        lines.append("  ledger:    off")
    cooling = {a: m for a, m in (health.get("models") or {}).items() if m.get("cooling")}
    lines.append(
        "  cooling:   "
        + (
            ", ".join(
                f"{a} ({m['cooldown_left_s']:.0f}s left, {m['failures']} failures)"
                for a, m in cooling.items()
            )
            or "none"
        )
    )
    sys.stdout.write("\n".join(lines) + "\n")


def _other_config(running: Any, named: str) -> str:
    """A note when the daemon answering runs another config than the one this command read."""
    from pathlib import Path

    if not isinstance(running, str) or running == named:
        return ""
    same = Path(running).exists() and Path(named).exists() and Path(running).samefile(named)
    return "" if same else f"\n             (not {named}, the config this command read)"


@app.command("dashboard")
def dashboard(
    ctx: typer.Context,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Print the address; do not open a browser.")
    ] = False,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Open the running daemon's dashboard in the browser.

    It is served at / by `pirouter run`; the daemon is found as `pirouter status` finds it."""
    import webbrowser

    loaded = guard(lambda: load(ctx, config, warn=False))
    base, found = find_daemon(loaded.config, url)
    url = base + "/"
    try:
        with ask_daemon(url + "healthz", timeout=2):
            pass
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        fail(
            f"pirouter is not answering at {url} ({reason}; address from {found}); start it "
            "with `pirouter run`, or name its address with --url",
            ExitCode.RUNTIME,
        )
    sys.stdout.write(f"{url}\n")
    if not no_open and not webbrowser.open(url):
        sys.stdout.write("no browser to open here: open the address above\n")
