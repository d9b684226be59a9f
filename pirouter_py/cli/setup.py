"""`pirouter init`, `models` (the catalog, and `add`, `enable`, `disable`) and `config set`:
writing the user's config.toml, keeping its comments (config/init.py, config/edit.py)."""

from __future__ import annotations

import os
import shutil
import sys
import time
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
    """Find local model servers and cloud keys, and write a commented config.toml for them."""
    import tomlkit

    from pirouter_py.config import init as finder
    from pirouter_py.config.load import parse_config

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
    text = tomlkit.dumps(finder.document(chosen))
    parse_config(text, str(target))  # what it writes always loads; a slip here is a bug
    if to_stdout:
        sys.stdout.write(text)
        return
    from pirouter_py.config.edit import write_text

    if target.exists():
        backup = target.with_name(f"{target.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        shutil.copy2(target, backup)
        sys.stderr.write(f"kept the old file as {backup}\n")
    write_text(target, text, 0o600)
    models = sum(len(f.models) for f in chosen) if chosen else len(finder.FALLBACK.models)
    sys.stdout.write(
        f"wrote {target}: {len(chosen) or 1} provider{'s' if len(chosen) > 1 else ''}, "
        f"{models} models\nnext: `pirouter run`, then point clients at http://127.0.0.1:11435\n"
    )


# ---------------------------------------------------------------------------------------------
# models


models_app = typer.Typer(
    help="The model catalog; `add`, `enable` and `disable` edit the config file in place.",
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


def _edit(ctx: typer.Context, config: Path | None, change: Any, done: str) -> None:
    """Read the file, apply `change(doc)`, check the result and write it; say `done`."""
    from pirouter_py.config import edit

    target = _target(ctx, config)
    try:
        doc: tomlkit.TOMLDocument = edit.read(target)
        change(doc)
        warnings = edit.write(target, doc, os.environ)
    except edit.EditError as exc:
        fail(str(exc), ExitCode.CONFIG)
    except ConfigError as exc:
        sys.stderr.write(f"not changed: the edit would leave {target} invalid\n")
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
    """Let routing use a model again (enabled = true in the config file)."""
    from pirouter_py.config import edit

    _edit(ctx, config, lambda doc: edit.set_enabled(doc, alias, True), f"enabled `{alias}`")


@models_app.command("disable")
def models_disable(ctx: typer.Context, alias: Alias, config: ConfigOption = None) -> None:
    """Keep routing off a model (enabled = false in the config file)."""
    from pirouter_py.config import edit

    _edit(ctx, config, lambda doc: edit.set_enabled(doc, alias, False), f"disabled `{alias}`")


# ---------------------------------------------------------------------------------------------
# config set


config_app = typer.Typer(help="Edit the config file in place (its comments and layout stay).")
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
    """Set one key of the config file, checking the result before writing it."""
    from pirouter_py.config import edit

    parsed = edit.value_of(value)
    _edit(ctx, config, lambda doc: edit.set_value(doc, key, parsed), f"set {key} = {value}")
