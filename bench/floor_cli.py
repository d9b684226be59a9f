"""The start-up floor: pirouter's own libraries doing the least a command of its kind can do.

`python bench/floor_cli.py route --config FILE --prompt TEXT` parses its options with typer, reads
the TOML file with tomllib, validates it with a pydantic model and prints one line;
`serve --config FILE --port P --upstream URL` does the same and then serves the pass-through
(`passthrough.py`) with the rest of the daemon's libraries loaded (structlog, orjson, sqlite3).
Start-up time and idle memory beyond these are pirouter's own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False, rich_markup_mode=None)  # plain help, as pirouter
ConfigOption = Annotated[Path, typer.Option("--config", help="The TOML file.")]


def load(path: Path) -> Any:
    """The config, validated; the libraries load here, not for --help (as in pirouter)."""
    import tomllib

    import platformdirs
    from pydantic import BaseModel, ConfigDict

    class Server(BaseModel):
        bind: str = "127.0.0.1:4000"
        log_level: str = "info"

    class Config(BaseModel):
        model_config = ConfigDict(extra="allow")
        server: Server = Server()
        providers: dict[str, dict[str, Any]] = {}
        models: dict[str, dict[str, Any]] = {}

    platformdirs.user_config_dir("pirouter-floor")
    return Config.model_validate(tomllib.loads(path.read_text()))


@app.command()
def route(
    config: ConfigOption,
    prompt: Annotated[str, typer.Option("--prompt", help="The user message.")],
    model: Annotated[str, typer.Option("--model", help="The model asked for.")] = "auto",
    stream: Annotated[bool, typer.Option("--stream", help="A stream.")] = False,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="max_tokens.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON out.")] = False,
) -> None:
    """Load and validate the config, print the first model."""
    cfg = load(config)
    sys.stdout.write(f"{model} -> {next(iter(cfg.models), 'none')} ({len(prompt)} chars)\n")


@app.command()
def serve(
    config: ConfigOption,
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")],
    upstream: Annotated[str, typer.Option("--upstream", help="The upstream base URL.")],
) -> None:
    """Load and validate the config, then run the pass-through proxy."""
    load(config)
    sys.modules["rich"] = None  # type: ignore[assignment]  # as pirouter loads structlog
    import structlog  # noqa: F401

    del sys.modules["rich"]
    import sqlite3  # noqa: F401

    import orjson  # noqa: F401
    import passthrough

    passthrough.serve(port, upstream)


if __name__ == "__main__":
    app()
