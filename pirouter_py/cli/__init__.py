"""The `pirouter` command line: Typer commands that parse, call one function and render.

Only this module prints. Reports go to stdout (a rich table for people, `--json` for scripts);
errors, warnings and notes go to stderr. Heavy modules (aiohttp, aiosqlite, rich) are imported
inside the commands that need them, so `pirouter route` and `--help` start fast.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from pirouter_py import __version__
from pirouter_py.errors import ConfigError, ExitCode, PirouterError

if TYPE_CHECKING:
    from pirouter_py.config import LoadedConfig

T = TypeVar("T")
EXIT_CODES_HELP = "Exit codes: 0 ok, 1 runtime or routing error, 2 usage error, 3 config error."
# A 1×1 PNG, so `route --image` builds a request shaped like a real one with an image.
SAMPLE_IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

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


class ProfileName(StrEnum):
    local_first = "local-first"
    balanced = "balanced"
    best_quality = "best-quality"
    cloud_only = "cloud-only"


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


def _fail(message: str, code: ExitCode) -> NoReturn:
    sys.stderr.write(f"Error: {message}\n")
    raise typer.Exit(int(code))


def _load(ctx: typer.Context, config: Path | None, *, warn: bool = True) -> LoadedConfig:
    """The config named after the command, before it, by $PIROUTER_CONFIG, or the default."""
    from pirouter_py.config import load_config  # pydantic costs ~100 ms: not for --help

    chosen = config if config is not None else ctx.obj
    loaded = load_config(chosen)
    _started()
    if warn:
        for problem in loaded.warnings:
            sys.stderr.write(f"warning: {problem}\n")
    if loaded.is_default:
        where = loaded.default_path or "the platform config dir"
        sys.stderr.write(
            f"note: no config file at {where}; running on the built-in default "
            "(copy config.example.toml there, or pass --config)\n"
        )
    return loaded


def _started() -> None:
    """Start-up is over (the command's code and its config are loaded): what lives now lives as
    long as the command, so it goes out of the collector's sight, and collection resumes for the
    command's own work. Only if `main` turned the collector off (not for a caller's own process,
    such as a test runner invoking commands)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------
# check-config


@app.command("check-config")
def check_config(
    ctx: typer.Context, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Validate the config file and summarise it."""
    try:
        loaded = _load(ctx, config, warn=False)
    except ConfigError as exc:
        if as_json:
            _print_json({"ok": False, "errors": [_problem_json(p) for p in exc.problems]})
        else:
            for problem in exc.problems:
                sys.stderr.write(f"error: {problem}\n")
        raise typer.Exit(int(ExitCode.CONFIG)) from None
    cfg = loaded.config
    providers: list[dict[str, Any]] = [
        {
            "name": name,
            "type": p.kind,
            "base_url": p.url,
            "api_key_env": p.api_key_env,
            "api_key_set": _key_state(p.kind, p.key_envs, p.api_key),
        }
        for name, p in sorted(cfg.providers.items())
    ]
    if as_json:
        _print_json(
            {
                "ok": True,
                "source": loaded.source,
                "default": loaded.is_default,
                "models": len(cfg.models),
                "rules": len(cfg.rules),
                "providers": providers,
                "warnings": [_problem_json(p) for p in loaded.warnings],
            }
        )
        return
    out = [
        f"config OK: {loaded.source}",
        f"  models:    {len(cfg.models)}",
        f"  rules:     {len(cfg.rules)}",
        f"  providers: {len(providers)}",
    ]
    width = max((len(p["name"]) for p in providers), default=0)
    for p in providers:
        out.append(f"    {p['name']:<{width}}  {p['type']:<9}  {p['base_url']}  {p['api_key_set']}")
    out.append(f"  warnings:  {len(loaded.warnings)}")
    out += [f"    {w}" for w in loaded.warnings]
    sys.stdout.write("\n".join(out) + "\n")


def _key_state(kind: str, envs: tuple[str, ...], literal: str | None) -> str:
    """How a provider's key is found, naming variables only, never a key."""
    import os

    if kind == "ollama" and not envs:
        return "no key needed"
    if envs:
        states = [f"${e} ({'set' if os.environ.get(e) else 'NOT SET'})" for e in envs]
        return ("key from " if len(envs) == 1 else "keys rotated from ") + ", ".join(states)
    return "literal api_key" if literal else "NO KEY: set api_key_env"


def _problem_json(problem: Any) -> dict[str, Any]:
    return {
        "source": problem.source,
        "line": problem.line,
        "column": problem.column,
        "key": problem.key,
        "message": problem.message,
        "text": str(problem),
    }


# ---------------------------------------------------------------------------------------------
# models


@app.command("models")
def models(ctx: typer.Context, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the model catalog."""
    cfg = _guard(lambda: _load(ctx, config)).config
    rows: list[dict[str, Any]] = [
        {
            "alias": alias,
            "provider": m.provider,
            "model_id": m.model_id,
            "quality": m.quality,
            "context_window": m.context_window,
            "supports_tools": m.supports_tools,
            "supports_vision": m.supports_vision,
            "local": m.local,
            "enabled": m.enabled,
            "input_per_m": m.input_per_m,
            "output_per_m": m.output_per_m,
        }
        for alias in cfg.aliases
        for m in (cfg.models[alias],)
    ]
    if as_json:
        _print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (
        ("alias", "left"),
        ("provider", "left"),
        ("model id", "left"),
        ("quality", "left"),
        ("context", "right"),
        ("tools", "right"),
        ("vision", "right"),
        ("local", "right"),
        ("enabled", "right"),
        ("$/M in", "right"),
        ("$/M out", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=name in ("alias", "model id"))  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r["alias"],
            r["provider"],
            r["model_id"],
            r["quality"],
            str(r["context_window"]) if r["context_window"] is not None else "?",
            yes(r["supports_tools"]),
            yes(r["supports_vision"]),
            yes(r["local"]),
            yes(r["enabled"]),
            f"{r['input_per_m']:.2f}",
            f"{r['output_per_m']:.2f}",
        )
    console = Console()
    if not console.is_terminal:  # piped: print at the table's natural width, never truncated
        console = Console(width=Console(width=10_000).measure(table).maximum)
    console.print(table)


# ---------------------------------------------------------------------------------------------
# route


def _parse_header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition(":")
    if not sep or not name.strip():
        raise typer.BadParameter(f"{raw!r} is not 'Name: value'", param_hint="--header")
    return name.strip().lower(), value.strip()


@app.command("route")
def route(
    ctx: typer.Context,
    prompt: Annotated[
        str,
        typer.Option(
            "--prompt", "-p", help="The user message; '-' reads standard input.", show_default=False
        ),
    ],
    model: Annotated[str, typer.Option("--model", help="The model the client asks for.")] = "auto",
    tools: Annotated[bool, typer.Option("--tools", help="Offer one synthetic tool.")] = False,
    image: Annotated[bool, typer.Option("--image", help="Attach one image to the prompt.")] = False,
    system: Annotated[
        str | None, typer.Option("--system", help="A system message.", show_default=False)
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            help="A request header 'Name: value' (repeatable).",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        ProfileName | None,
        typer.Option(
            "--profile",
            help="Use this policy profile instead of [routing] profile.",
            show_default=False,
        ),
    ] = None,
    stream: Annotated[bool, typer.Option("--stream", help="The client asks for a stream.")] = False,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", help="The client's max_tokens.", show_default=False, min=1),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Dry-run the routing decision for a prompt, and explain it."""
    from pirouter_py.routing.decide import decide
    from pirouter_py.types import ChatRequest, ImagePart, Message, TextPart, ToolSpec

    headers = dict(_parse_header(h) for h in header or [])
    text = sys.stdin.read() if prompt == "-" else prompt
    cfg = _guard(lambda: _load(ctx, config)).config
    messages = [Message("system", (TextPart(system),))] if system is not None else []
    parts = (TextPart(text), ImagePart(SAMPLE_IMAGE)) if image else (TextPart(text),)
    messages.append(Message("user", parts))
    offered = (ToolSpec("tool", "synthetic dry-run tool", {"type": "object", "properties": {}}),)
    request = ChatRequest(
        model=model,
        messages=tuple(messages),
        tools=offered if tools else (),
        stream=stream,
        max_tokens=max_tokens,
    )
    chosen = profile.value if profile is not None else None
    decision = _guard(lambda: decide(cfg, request, headers, profile=chosen, explain=True))  # type: ignore[arg-type]
    if as_json:
        _print_json(_decision_json(decision))
        return
    sys.stdout.write("\n".join(_decision_lines(decision, cfg)) + "\n")


def _decision_json(d: Any) -> dict[str, Any]:
    return {
        "rule": d.rule,
        "primary": d.primary,
        "cascade": list(d.cascade),
        "source": d.source,
        "difficulty": d.difficulty,
        "estimated_tokens": d.features.estimated_tokens,
        "explanation": {
            "difficulty_reason": d.difficulty_reason,
            "profile": d.profile,
            "has_tools": d.features.has_tools,
            "has_images": d.features.has_images,
            "rules": [
                {
                    "name": t.name,
                    "matched": t.matched,
                    "reason": t.reason,
                    "checks": [_check_json(c) for c in t.checks],
                }
                for t in d.rule_traces
            ],
            "candidates": [
                {"alias": c.alias, "verdict": c.verdict, "position": c.position, "reason": c.reason}
                for c in d.candidates
            ],
            "notes": list(d.notes),
        },
    }


def _check_json(c: Any) -> dict[str, Any]:
    out = {"key": c.key, "held": c.held, "detail": c.detail}
    if c.children:
        out["checks"] = [_check_json(child) for child in c.children]
    return out


def _check_lines(checks: Any, depth: int) -> list[str]:
    lines = []
    for c in checks:
        mark = "+" if c.held else "-"
        lines.append(f"{'    ' * depth}  {mark} {c.key}: {c.detail}")
        lines += _check_lines(c.children, depth + 1)
    return lines


def _decision_lines(d: Any, cfg: Any) -> list[str]:
    from pirouter_py.routing.features import REQUIRED_QUALITY

    f = d.features
    lines = [
        f"rule:    {d.rule}",
        f"primary: {d.primary}",
        f"cascade: {' -> '.join(d.cascade) if d.cascade else '<none>'}",
        "",
        f"request: {f.estimated_tokens} estimated tokens, difficulty {d.difficulty} "
        f"({d.difficulty_reason}), tools {'yes' if f.has_tools else 'no'}, "
        f"images {'yes' if f.has_images else 'no'}",
    ]
    if d.rule_traces:
        lines.append("rules, first match wins:")
        width = max(len(t.name) for t in d.rule_traces)
        for t in d.rule_traces:
            lines.append(f"  {'match' if t.matched else 'skip '}  {t.name:<{width}}  {t.reason}")
            if len(t.checks) > 1 or any(c.children for c in t.checks):
                lines += _check_lines(t.checks, 2)
    elif not cfg.rules:
        lines.append("rules: none configured")
    if d.source == "policy":
        lines.append(
            f"policy: profile {d.profile}, {d.difficulty} needs quality "
            f"{REQUIRED_QUALITY[d.difficulty]} or better"
        )
        width = max(len(c.alias) for c in d.candidates)
        for c in d.candidates:
            place = f"{c.position:>2}" if c.position is not None else " -"
            lines.append(f"  {place} {c.alias:<{width}}  {c.verdict:<8}  {c.reason}")
    lines += [f"note: {n}" for n in d.notes]
    return lines


# ---------------------------------------------------------------------------------------------
# run


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
    from pirouter_py.observe import log
    from pirouter_py.server.access import is_loopback
    from pirouter_py.server.serve import serve

    loaded = _guard(lambda: _load(ctx, config))
    cfg = loaded.config
    bound = parse_bind(cfg.server.bind)
    assert bound is not None  # validated at load
    host = host if host is not None else bound[0]
    port = port if port is not None else bound[1]
    if not is_loopback(host) and not (cfg.server.api_keys_env or cfg.server.api_keys_file):
        _fail(
            f"refusing to listen on {host}: beyond loopback pirouter would serve anyone who can "
            "reach this machine; set client keys ([server] api_keys_env or api_keys_file) or "
            "bind to 127.0.0.1",
            ExitCode.USAGE if ctx.params.get("host") else ExitCode.CONFIG,
        )
    log.setup(cfg.server.log_level)

    ledger_path = None if no_ledger else _ledger_path(loaded)

    def announce(url: str) -> None:
        sys.stdout.write(
            f"pirouter {__version__} listening on {url}\n"
            f"  OpenAI base URL: {url}/v1 (Anthropic and Ollama clients: {url})\n"
            f"  config: {loaded.source}\n"
            f"  ledger: {ledger_path or 'off (--no-ledger)'}\n"
        )
        sys.stdout.flush()

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    _guard(lambda: runner(serve(loaded, host, port, announce=announce, ledger_path=ledger_path)))


def _ledger_path(loaded: LoadedConfig) -> Path:
    """[ledger] path (with ~ expanded), else the platform data dir's ledger.db."""
    from pirouter_py.config import default_ledger_path

    path = loaded.config.ledger.path
    return Path(path).expanduser() if path else default_ledger_path()


@app.command("status")
def status(
    ctx: typer.Context,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Is a daemon answering on the configured address? Its version, uptime and counters."""
    import urllib.error
    import urllib.request

    from pirouter_py.config import parse_bind

    loaded = _guard(lambda: _load(ctx, config, warn=False))
    bound = parse_bind(loaded.config.server.bind)
    assert bound is not None
    host = "127.0.0.1" if bound[0] in ("0.0.0.0", "::") else bound[0]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound[1]}"
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            health = json.loads(response.read())
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if as_json:
            _print_json({"running": False, "url": url, "error": str(reason)})
        else:
            sys.stdout.write(
                f"pirouter is not answering at {url} ({reason})\n  start it with `pirouter run`\n"
            )
        raise typer.Exit(int(ExitCode.RUNTIME)) from None
    if as_json:
        _print_json({"running": True, "url": url, **health})
        return
    uptime = int(health.get("uptime_s", 0))
    lines = [
        f"pirouter {health.get('version', '?')} is {health.get('status', 'ok')} at {url}",
        f"  uptime:    {uptime // 3600}h {uptime % 3600 // 60}m {uptime % 60}s",
        f"  config:    {health.get('config')}",
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


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command("completions")
def completions(
    shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.", show_default=False)],
) -> None:
    """Print a shell completion script (bash: source it; zsh: put it on $fpath as _pirouter;
    fish: save it as ~/.config/fish/completions/pirouter.fish)."""
    from pirouter_py.cli import docs as clidoc

    sys.stdout.write(clidoc.completion(shell.value))


def _guard(thunk: Callable[[], T]) -> T:
    """Run `thunk`, turning pirouter's own errors into a message and their exit code."""
    try:
        return thunk()
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"error: {problem}\n")
        raise typer.Exit(int(ExitCode.CONFIG)) from None
    except PirouterError as exc:
        _fail(exc.message, exc.exit_code)


def main() -> None:
    """Console entry point."""
    # No garbage collection while the command starts: its imports and config make ~55,000
    # objects that live as long as it does and almost no cyclic garbage, and the collector's
    # passes over them took ~10 % of `pirouter route` and ~12 % of the daemon's start to its
    # first answer (same-run A/B, bench/). `_load` turns it back on (`_started`).
    gc.disable()
    # pydantic looks for plugins once per process by reading every installed distribution's
    # entry points (~5 ms of each command here); pirouter uses none. A value the user set wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        app()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


# Commands kept in modules of their own register on `app` when imported.
from pirouter_py.cli import ledger as cli_ledger  # noqa: E402, F401
from pirouter_py.cli import service as cli_service  # noqa: E402, F401
