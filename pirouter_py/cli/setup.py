"""`pirouter init`, `providers` (`list`, `add`, `remove`), `models` (the catalog, and `add`,
`enable`, `disable`) and `config set`: writing the user's config.toml, keeping its comments
(config/init.py, config/edit.py). `init` also says what a daemon already answering at the
written address will do with the new file."""

import os
import re
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pirouter_py.cli.common import (
    ConfigOption,
    JsonOption,
    app,
    config_failed,
    fail,
    guard,
    load,
    print_json,
)
from pirouter_py.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    import tomlkit

# ---------------------------------------------------------------------------------------------
# init


def _target(ctx: typer.Context, config: Path | None) -> Path:
    """The file to write or edit: --config, else $PIROUTER_CONFIG, else the platform's."""
    from pirouter_py.config.load import default_config_path
    from pirouter_py.config.schema import CONFIG_ENV

    chosen = config if config is not None else ctx.obj
    if chosen is not None:
        return Path(chosen)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return default_config_path()


@app.command("init")
def init(
    ctx: typer.Context,
    config: ConfigOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Take every provider found without asking.")
    ] = False,
    to_stdout: Annotated[
        bool, typer.Option("--print", help="Print the config instead of writing it.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing file (a dated backup is kept)."),
    ] = False,
) -> None:
    """Write a commented config.toml for what this machine has.

    It finds local model servers and cloud keys, and writes a model for each."""
    import tomlkit

    from pirouter_py.config import edit
    from pirouter_py.config import init as finder

    target = _target(ctx, config)
    if target.exists() and not to_stdout and not force:
        fail(
            f"{target} exists; edit it (`pirouter models add`, `pirouter config set`), or pass "
            "--force to replace it (a dated backup is kept)",
            ExitCode.RUNTIME,
        )
    found = finder.discover(os.environ)
    ask = not yes and not to_stdout and sys.stdin.isatty()
    chosen = []
    for f in found:
        names = ", ".join(m.model_id for m in f.models)
        line = f"{f.how}: {len(f.models)} model{'s' if len(f.models) != 1 else ''} ({names})"
        if ask and not typer.confirm(f"Use {line}?", default=True):
            continue
        sys.stderr.write(f"found {line}\n")
        chosen.append(f)
    if not found:
        sys.stderr.write(
            "found no local model server (Ollama, LM Studio, llama.cpp, vLLM) and no cloud key "
            "variable set; writing Ollama's usual models for when it runs\n"
        )
        chosen = [finder.FALLBACK]
    text = tomlkit.dumps(finder.document(chosen))
    # what it writes always loads (one with no model yet waits for `models add`); a slip is a bug
    edit.check_text(text, str(target))
    if to_stdout:
        sys.stdout.write(text)
        return
    if target.exists():
        backup = target.with_name(f"{target.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        import shutil

        shutil.copy2(target, backup)
        sys.stderr.write(f"kept the old file as {backup}\n")
    edit.write_text(target, text, 0o600)
    models = sum(len(f.models) for f in chosen)
    providers = f"{len(chosen)} provider{'s' if len(chosen) != 1 else ''}"
    sys.stdout.write(f"wrote {target}: {providers}, {models} model{'s' if models != 1 else ''}\n")
    sys.stdout.write(_next_steps(target, models, f"http://{finder.BIND}") + "\n")


def _next_steps(target: Path, models: int, url: str) -> str:
    """What to do after `init`: add models when it wrote none; else start the daemon, or what
    the one already answering at `url` will do with the new file."""
    from pirouter_py.config.load import default_config_path
    from pirouter_py.config.schema import BUILTIN_SOURCE

    flag = "" if target == default_config_path() else f" -c {target}"
    if not models:
        return (
            "no provider taken, so no model written; add yours:\n"
            "  pirouter providers add NAME --type openai|anthropic|ollama --base-url URL "
            f"[--key-env VAR]{flag}\n"
            f"  pirouter models add ALIAS --provider NAME --model-id ID{flag}\n"
            "`pirouter run` serves once the file has a model"
        )
    running = _daemon_config(url)
    if running is None:
        return f"next: `pirouter run{flag}`, then point clients at {url}"
    same = running == str(target) or (
        Path(running).is_file() and target.is_file() and Path(running).samefile(target)
    )
    if same or (running == BUILTIN_SOURCE and not flag):
        was = "with this file" if same else "on the built-in default"
        return (
            f"the daemon answering at {url} runs {was}: it loads the new file within a few "
            f"seconds (no restart needed); point clients at {url}"
        )
    if not running:
        was = "but cannot say with which config (client keys?)"
    else:
        was = "on the built-in default" if running == BUILTIN_SOURCE else f"with {running}"
    return (
        f"a daemon answering at {url} runs {was}, not {target}: to use the new file, stop it "
        f"(Ctrl-C where it runs) and start `pirouter run{flag}`"
    )


def _daemon_config(url: str) -> str | None:
    """The config the daemon answering at `url` runs (its /health `config`): None when nothing
    answers, "" when something does but does not say (it wants a client key, or is not
    pirouter)."""
    import json
    import urllib.error
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with direct.open(url + "/health", timeout=1.5) as response:
            source = json.loads(response.read()).get("config")
    except urllib.error.HTTPError:
        return ""  # it answers, but not with its health (401: client keys)
    except (OSError, ValueError, AttributeError):
        try:  # refused, or an answer we cannot read: does anything listen there at all?
            with direct.open(url + "/healthz", timeout=1.5):
                return ""
        except urllib.error.HTTPError:
            return ""
        except (OSError, ValueError):
            return None
    return source if isinstance(source, str) else ""


# ---------------------------------------------------------------------------------------------
# providers


providers_app = typer.Typer(
    help="List, add or remove the providers models are served by.\n\n`add` and `remove` edit "
    "the config file in place (its comments and layout stay).",
    no_args_is_help=True,
)
app.add_typer(providers_app, name="providers")


class ProviderKind(StrEnum):
    """The APIs a provider can speak ([providers.<name>] type)."""

    openai = "openai"
    anthropic = "anthropic"
    ollama = "ollama"


@providers_app.command("list")
def providers_list(
    ctx: typer.Context, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """List the providers, their keys and their models."""
    rows = [
        {
            "name": name,
            "type": p.kind,
            "base_url": p.url,
            "api_key_env": list(p.key_envs),
            "key": "in file"
            if p.api_key
            else "none"
            if not p.key_envs
            else "not set"
            if p.key_missing(os.environ)
            else "set",
            "models": [a for a, m in sorted(models.items()) if m.provider == name],
        }
        for providers, models in (_providers(ctx, config),)
        for name, p in sorted(providers.items())
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        sys.stdout.write(
            "no providers; add one with `pirouter providers add NAME --type TYPE --base-url URL`\n"
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("name", "type", "base url", "key", "models"):
        table.add_column(column, no_wrap=column != "models")
    for r in rows:
        envs = ", ".join(f"${e}" for e in r["api_key_env"])
        key = f"{envs} ({r['key']})" if envs else r["key"]
        table.add_row(r["name"], r["type"], r["base_url"], key, ", ".join(r["models"]) or "-")
    console = Console()
    if not console.is_terminal:  # piped: print at the table's natural width, never truncated
        console = Console(width=Console(width=10_000).measure(table).maximum)
    console.print(table)


def _providers(ctx: typer.Context, config: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config's providers (types and URLs resolved) and models; a file with providers but
    no model yet (after `init` with every provider declined, then `providers add`) lists too."""
    import tomllib

    from pirouter_py.config.schema import OFFICIAL_BASE_URLS, ProviderConfig

    try:
        cfg = load(ctx, config).config
    except ConfigError as exc:
        target = _target(ctx, config)
        if any(p.key != "models" for p in exc.problems) or not target.is_file():
            config_failed(exc)
        tables = tomllib.loads(target.read_text(encoding="utf-8")).get("providers") or {}
        providers = {}
        for name, table in tables.items():
            kind = table.get("type", name)
            url = table.get("base_url") or OFFICIAL_BASE_URLS.get(kind, "?")
            providers[name] = ProviderConfig.model_validate(
                {**table, "type": kind, "base_url": url}
            )
        return providers, {}
    return dict(cfg.providers), dict(cfg.models)


@providers_app.command("add")
def providers_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Its name, which models give as --provider.")],
    kind: Annotated[
        ProviderKind | None,
        typer.Option(
            "--type",
            help="The API it speaks (OpenRouter, LM Studio, vLLM, llama.cpp, Groq: openai). "
            "Default: the name, when it is one of these.",
            show_default=False,
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="Where it answers, e.g. http://127.0.0.1:1234. Default, for a provider named "
            "openai, anthropic or ollama: their usual address.",
            show_default=False,
        ),
    ] = None,
    key_env: Annotated[
        str | None,
        typer.Option(
            "--key-env",
            help="The environment variable holding its key (the file names it, never the "
            "key). None: no key is sent.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Add a provider to the config file (comments stay)."""
    from pirouter_py.config import edit
    from pirouter_py.config.schema import OFFICIAL_BASE_URLS, PROVIDER_TYPES

    if not edit.PROVIDER_NAME.fullmatch(name):
        fail(
            f"{name!r} cannot name a provider: use letters, digits, `-`, `_` and `.` "
            "(e.g. openrouter, lm-studio)",
            ExitCode.USAGE,
        )
    if kind is None and name not in PROVIDER_TYPES:
        fail(
            f"say which API provider `{name}` speaks: --type openai|anthropic|ollama "
            "(OpenRouter, LM Studio, vLLM, llama.cpp and Groq speak openai)",
            ExitCode.USAGE,
        )
    what = kind.value if kind is not None else name
    if base_url is None:
        if what != name:
            fail(
                f"say where provider `{name}` answers: --base-url URL "
                "(e.g. http://127.0.0.1:1234, https://openrouter.ai/api)",
                ExitCode.USAGE,
            )
        base_url = OFFICIAL_BASE_URLS[what]
    if key_env is not None and not edit.ENV_NAME.fullmatch(key_env):
        fail(
            "--key-env takes the name of the environment variable holding the key "
            "(e.g. OPENROUTER_API_KEY), never the key itself",
            ExitCode.USAGE,
        )
    fields = {"type": what, "base_url": base_url, "api_key_env": key_env}
    _edit(ctx, config, lambda doc: edit.add_provider(doc, name, fields), f"added provider `{name}`")
    sys.stdout.write(
        f"next: add its models: `pirouter models add ALIAS --provider {name} --model-id ID`\n"
    )


@providers_app.command("remove")
def providers_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The provider's name.")],
    config: ConfigOption = None,
) -> None:
    """Remove a provider no model uses from the config file."""
    from pirouter_py.config import edit

    _edit(ctx, config, lambda doc: edit.remove_provider(doc, name), f"removed provider `{name}`")


# ---------------------------------------------------------------------------------------------
# models


models_app = typer.Typer(
    help="List the model catalog; add, enable or disable a model.\n\n`add`, `enable` and "
    "`disable` edit the config file in place.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(models_app, name="models")


@models_app.callback()
def models(ctx: typer.Context, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """List the model catalog."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = config if config is not None else ctx.obj
        return
    cfg = guard(lambda: load(ctx, config)).config
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
        print_json(rows)
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


_UNCONFIGURED = re.compile(r"provider `([^`]+)` is not configured")


def _edit(ctx: typer.Context, config: Path | None, change: Any, done: str) -> None:
    """Read the file, apply `change(doc)`, check the result and write it; say `done`.
    `change` returns the dotted key it set, if it set one from the command line: a key the
    config does not have is then refused (a usage error)."""
    from pirouter_py.config import edit

    target = _target(ctx, config)
    try:
        doc: tomlkit.TOMLDocument = edit.read(target)
        setting = change(doc)
        warnings = edit.write(target, doc, os.environ, setting)
    except edit.UnknownKey as exc:
        fail(str(exc), ExitCode.USAGE)
    except edit.EditError as exc:
        fail(str(exc), ExitCode.CONFIG)
    except ConfigError as exc:
        sys.stderr.write(f"not changed: the edit would leave {target} invalid\n")
        for name in sorted({m[1] for p in exc.problems for m in _UNCONFIGURED.finditer(p.message)}):
            sys.stderr.write(
                f"hint: add provider `{name}` first: pirouter providers add {name} "
                "--type openai|anthropic|ollama --base-url URL\n"
            )
        if any(p.key.startswith("providers.") for p in exc.problems):
            sys.stderr.write(
                "hint: `pirouter providers add NAME --type TYPE --base-url URL` adds a provider "
                "whole\n"
            )
        config_failed(exc)
    for problem in warnings:
        sys.stderr.write(f"warning: {problem}\n")
    sys.stdout.write(f"{done} in {target}\n")


Quality = Annotated[
    str,
    typer.Option(help="basic, standard, strong or premium (how hard a task it can take)."),
]


@models_app.command("add")
def models_add(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="The name routing and clients use.")],
    provider: Annotated[str, typer.Option(help="A [providers.<name>] of the file.")],
    model_id: Annotated[str, typer.Option("--model-id", help="The provider's model id.")],
    quality: Quality = "standard",
    input_per_m: Annotated[float | None, typer.Option(help="USD per million input tokens.")] = None,
    output_per_m: Annotated[
        float | None, typer.Option(help="USD per million output tokens.")
    ] = None,
    context_window: Annotated[int | None, typer.Option(help="Tokens it can take.")] = None,
    tools: Annotated[bool, typer.Option("--tools", help="It can call tools.")] = False,
    vision: Annotated[bool, typer.Option("--vision", help="It can read images.")] = False,
    local: Annotated[bool, typer.Option("--local", help="It runs on this machine.")] = False,
    config: ConfigOption = None,
) -> None:
    """Add a model to the config file (its comments and layout stay)."""
    from pirouter_py.config import edit

    fields = {
        "provider": provider,
        "model_id": model_id,
        "quality": quality,
        "input_per_m": input_per_m,
        "output_per_m": output_per_m,
        "context_window": context_window,
        "supports_tools": tools or None,
        "supports_vision": vision or None,
        "local": local or None,
    }
    _edit(ctx, config, lambda doc: edit.add_model(doc, alias, fields), f"added model `{alias}`")


Alias = Annotated[str, typer.Argument(help="The model's alias.")]


@models_app.command("enable")
def models_enable(ctx: typer.Context, alias: Alias, config: ConfigOption = None) -> None:
    """Let routing use a model again (enabled = true)."""
    from pirouter_py.config import edit

    _edit(ctx, config, lambda doc: edit.set_enabled(doc, alias, True), f"enabled `{alias}`")


@models_app.command("disable")
def models_disable(ctx: typer.Context, alias: Alias, config: ConfigOption = None) -> None:
    """Keep routing off a model (enabled = false in the config file)."""
    from pirouter_py.config import edit

    _edit(ctx, config, lambda doc: edit.set_enabled(doc, alias, False), f"disabled `{alias}`")


# ---------------------------------------------------------------------------------------------
# config set


config_app = typer.Typer(
    help="Edit the config file in place.\n\nIts comments and layout stay as they are."
)
app.add_typer(config_app, name="config")


@config_app.command("set")
def config_set(
    ctx: typer.Context,
    key: Annotated[
        str, typer.Argument(help='A dotted key: routing.profile, models."gpt-4o".quality')
    ],
    value: Annotated[str, typer.Argument(help='A TOML value (true, 2.5, ["a"]) or plain text.')],
    config: ConfigOption = None,
) -> None:
    """Set one config key, checking the result before writing it."""
    from pirouter_py.config import edit

    parsed = edit.value_of(value)
    _edit(ctx, config, lambda doc: edit.set_value(doc, key, parsed), f"set {key} = {value}")
