"""`pirouter agents <client>`: the exact settings that point a coding agent at this daemon.

The settings are made from the running config (`settings`, a pure function): the daemon's URL,
`auto` as the model, the client key variable when keys are required, and what each agent needs
to know about the models behind `auto` (Claude Code compacts its conversation before the
smallest context window the route can reach; Continue's autocomplete and indexing models are
the config's fill-in-the-middle and embedding aliases). For Codex, `--catalog FILE` also writes a
`model_catalog_json` made from the installed Codex's own catalog with pirouter's aliases.

Every file printed is in the client's own format and accepted by it (the tests load each one with
the client itself: `cn`, `codex doctor`, `opencode debug config`). A file that users usually
already have is printed as a part to merge into theirs, marked so in its heading and, where the
format has comments, in its first line; `--whole` prints it as a whole file instead. Continue's
config.yaml is always whole: `cn` rejects one without `name` and `version`.
"""

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pirouter_py.cli.common import ConfigOption, JsonOption, app, daemon_url, fail, guard, load
from pirouter_py.errors import ExitCode

if TYPE_CHECKING:
    from pirouter_py.config import Config

KEY_VARIABLE = "PIROUTER_API_KEY"  # what the snippets name for the client key
CATALOG_HINT = "# model_catalog_json = ...  (pirouter agents codex --catalog FILE writes one)\n"
OPENCODE_SCHEMA = "https://opencode.ai/config.json"  # what opencode's own files declare
OUTPUT_LIMIT = 32_000  # the most output tokens opencode is told a model gives in one answer
# Claude Code compacts no earlier than this: it reads a smaller CLAUDE_CODE_AUTO_COMPACT_WINDOW as
# this minimum, with a warning (seen in 2.1.337), so a smaller window is not exported
CLAUDE_MIN_COMPACT_WINDOW = 100_000


class Agent(StrEnum):
    claude_code = "claude-code"
    codex = "codex"
    continue_ = "continue"
    opencode = "opencode"
    aider = "aider"


@dataclass(slots=True)
class Settings:
    """Environment variables to export, files (or parts of files) to write, and notes."""

    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)  # paths in `files` to merge, not to write
    command: str | None = None
    notes: list[str] = field(default_factory=list)


def _chat(config: "Config", tools: bool) -> list[str]:
    return [
        a
        for a in config.aliases
        for m in (config.models[a],)
        if m.enabled and m.kind == "chat" and (m.supports_tools or not tools)
    ]


def smallest_window(config: "Config", tools: bool = True) -> int | None:
    """The smallest context window among the models `auto` can route an agent's turn to (agents
    offer tools on every turn); None when no such model declares one."""
    windows = [config.models[a].context_window for a in _chat(config, tools)]
    known = [w for w in windows if w]
    return min(known) if known else None


def _key(config: "Config") -> tuple[str, bool]:
    """What the client sends as its key, and whether pirouter checks it."""
    keyed = config.server.keyed
    return (f"${KEY_VARIABLE}" if keyed else "unused"), keyed


def _yaml(value: str) -> str:
    """A YAML scalar: a JSON string is a YAML double-quoted one, whatever the alias or URL holds."""
    return json.dumps(value)


def _part(whole: bool, how: str) -> str:
    """The first line of a part to merge, in the format's comments: what to do with it."""
    return "" if whole else f"# pirouter's part of your file: {how}\n"


def settings(agent: Agent, config: "Config", url: str, whole: bool = False) -> Settings:
    key, keyed = _key(config)
    out = Settings()
    if keyed:
        out.notes.append(f"set {KEY_VARIABLE} to one of your client keys ([server] api_keys_*)")
    window = smallest_window(config)
    enabled = [a for a in config.aliases if config.models[a].enabled]
    fim = [a for a in enabled if config.models[a].supports_fim]
    embed = [a for a in enabled if config.models[a].kind == "embedding"]
    if agent is Agent.claude_code:
        out.env = {
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_MODEL": "auto",
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": "auto",  # its background calls are routed too
            "ANTHROPIC_API_KEY": key,
        }
        if window is not None and window >= CLAUDE_MIN_COMPACT_WINDOW:
            out.env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] = str(window)
        elif window is not None:
            out.notes.append(
                f"the smallest tool-capable context window is {window:,} tokens, and Claude Code "
                f"compacts no earlier than {CLAUDE_MIN_COMPACT_WINDOW:,}: a longer conversation "
                "is routed to the models whose window fits it (a routing error when none does)"
            )
        else:
            out.notes.append(
                "no tool-capable model declares context_window: Claude Code assumes 200k tokens "
                "and will not compact in time for a smaller local model"
            )
    elif agent is Agent.codex:
        path = "~/.codex/config.toml"
        out.env = {KEY_VARIABLE: key if keyed else "unused"}
        # TOML: top-level keys after a [table] would land inside it, hence where to put them
        out.files[path] = (
            _part(whole, "its top-level keys go above your first [table]") + 'model = "auto"\n'
            'model_provider = "pirouter"\n' + CATALOG_HINT + "\n[model_providers.pirouter]\n"
            'name = "pirouter"\n'
            f'base_url = "{url}/v1"\n'
            f'env_key = "{KEY_VARIABLE}"\n'
            'wire_api = "responses"\n'
            "supports_websockets = false\n"
        )
        if not whole:
            out.parts.append(path)
    elif agent is Agent.continue_:
        # Continue reads `${{ secrets.NAME }}` from the environment or ~/.continue/.env
        secret = "${{ secrets." + KEY_VARIABLE + " }}"
        api_key = _yaml(secret if keyed else key)
        base = f"    apiBase: {_yaml(url + '/v1')}\n    apiKey: {api_key}\n"
        # `auto` names no model Continue knows, so it would not offer it tools, nor know its window
        chat = "    roles: [chat, edit, apply, summarize]\n"
        if _chat(config, tools=True):
            chat += "    capabilities: [tool_use]\n"
        if window is not None:
            # under the completion options: config-yaml 1.42 drops a model-level contextLength
            chat += f"    defaultCompletionOptions:\n      contextLength: {window}\n"
        models = [
            # name, version and schema are required: `cn` refuses a config.yaml without them
            "name: pirouter\n"
            "version: 1.0.0\n"
            "schema: v1\n"
            "models:\n"
            "  - name: pirouter\n"
            "    provider: openai\n"
            "    model: auto\n" + base + chat
        ]
        for alias, role in (
            (fim[0] if fim else None, "autocomplete"),
            (embed[0] if embed else None, "embed"),
        ):
            if alias is None:
                what = "supports_fim = true" if role == "autocomplete" else 'kind = "embedding"'
                out.notes.append(f"no model declares {what}: Continue's {role} is not set up")
                continue
            models.append(
                f"  - name: {_yaml('pirouter ' + role)}\n"
                "    provider: openai\n"
                f"    model: {_yaml(alias)}\n" + base + f"    roles: [{role}]\n"
            )
        out.files["~/.continue/config.yaml"] = "".join(models)
    elif agent is Agent.opencode:
        listed: dict[str, dict[str, Any]] = {"auto": {"name": "pirouter auto"}}
        for alias in _chat(config, tools=False):
            entry: dict[str, Any] = {"name": alias}
            if (w := config.models[alias].context_window) is not None:
                entry["limit"] = {"context": w, "output": min(w, OUTPUT_LIMIT)}
            listed[alias] = entry
        if window is not None:
            listed["auto"]["limit"] = {"context": window, "output": min(window, OUTPUT_LIMIT)}
        body: dict[str, Any] = {"$schema": OPENCODE_SCHEMA} if whole else {}
        body |= {
            "provider": {
                "pirouter": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "pirouter",
                    "options": {"baseURL": f"{url}/v1", "apiKey": key},
                    "models": listed,
                }
            },
            "model": "pirouter/auto",
        }
        out.files["opencode.json"] = json.dumps(body, indent=2) + "\n"
        if not whole:
            out.parts.append("opencode.json")
    else:  # aider
        # aider reads every option from AIDER_<OPTION> too: the key stays out of files and argv
        if keyed:
            out.env = {"AIDER_OPENAI_API_KEY": key}
        given = {"openai-api-base": f"{url}/v1", "openai-api-key": key, "model": "openai/auto"}
        if keyed:
            del given["openai-api-key"]
        out.command = shlex.join(["aider", *(x for k, v in given.items() for x in (f"--{k}", v))])
        path = "~/.aider.conf.yml"
        out.files[path] = _part(whole, "merge these keys into yours") + "".join(
            f"{k}: {_yaml(v)}\n" for k, v in given.items()
        )
        if not whole:
            out.parts.append(path)
        if window is not None:
            meta = {
                "openai/auto": {
                    "max_input_tokens": window,
                    "litellm_provider": "openai",
                    "mode": "chat",
                }
            }
            out.files[".aider.model.metadata.json"] = json.dumps(meta, indent=2) + "\n"
            if not whole:
                out.parts.append(".aider.model.metadata.json")
    return out


def codex_catalog(config: "Config", bundled: dict[str, Any]) -> dict[str, Any]:
    """A `model_catalog_json` for Codex: an entry of the installed Codex's own catalog (its
    instructions and tool settings; the first listed that calls tools directly rather than from
    generated code), once for `auto` and once per tool-capable chat alias, each with pirouter's
    context window and input kinds."""
    models = [m for m in bundled.get("models", []) if isinstance(m, dict)]
    if not models:
        raise ValueError("the Codex catalog lists no models")

    def plain(m: dict[str, Any]) -> bool:  # no JavaScript code mode, no experimental tools
        return not m.get("tool_mode") and not m.get("experimental_supported_tools")

    listed = [m for m in models if m.get("visibility") == "list"] or models
    template = min(listed, key=lambda m: (not plain(m), m.get("priority", 0)))
    out: list[dict[str, Any]] = []
    for slug in ("auto", *_chat(config, tools=True)):
        model = config.models.get(slug)
        window = smallest_window(config) if model is None else model.context_window
        vision = True if model is None else model.supports_vision
        entry = {
            **template,
            "slug": slug,
            "display_name": slug if model is not None else "pirouter auto",
            "description": "routed by pirouter"
            if model is None
            else f"{model.provider}: {model.model_id}",
            "priority": len(out),
            "upgrade": None,
            "tool_mode": None,  # chat models call tools one by one, not from generated code
            "experimental_supported_tools": [],
            "input_modalities": ["text", "image"] if vision else ["text"],
        }
        if window is not None:
            entry["context_window"] = entry["max_context_window"] = window
        out.append(entry)
    return {"models": out}


def render(out: Settings) -> str:
    lines: list[str] = []
    if out.env:
        lines += [
            f"export {k}={shlex.quote(v) if not v.startswith('$') else v}"
            for k, v in out.env.items()
        ]
    if out.command:
        lines.append(out.command)
    for path, text in out.files.items():
        # the heading says what to do with the file even where its format has no comments (JSON)
        what = "part to merge into yours; --whole prints it whole" if path in out.parts else "whole"
        lines += ["", f"# {path} ({what})", text.rstrip()]
    return "\n".join(lines).lstrip("\n") + "\n"


@app.command("agents")
def agents(
    ctx: typer.Context,
    agent: Annotated[
        Agent,
        typer.Argument(help="claude-code, codex, continue, opencode or aider.", show_default=False),
    ],
    catalog: Annotated[
        Path | None,
        typer.Option(
            "--catalog",
            help="codex: also write a model_catalog_json there, made from the installed Codex's "
            "own catalog.",
            show_default=False,
        ),
    ] = None,
    whole: Annotated[
        bool,
        typer.Option(
            "--whole",
            help="Print whole files to write as they are, not parts to merge into yours.",
        ),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the settings that point a coding agent at this daemon.

    They are made for the config in use (its address, keys and models)."""
    loaded = guard(lambda: load(ctx, config, warn=False))
    made = settings(agent, loaded.config, daemon_url(loaded.config), whole)
    if catalog is not None:
        if agent is not Agent.codex:
            fail("--catalog is for codex", ExitCode.USAGE)
        try:
            listed = subprocess.run(
                ["codex", "debug", "models", "--bundled"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            written = codex_catalog(loaded.config, json.loads(listed.stdout))
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            fail(
                f"cannot read the installed Codex's catalog (`codex debug models --bundled`): "
                f"{exc}; is Codex on PATH?",
                ExitCode.RUNTIME,
            )
        try:
            catalog.write_text(json.dumps(written, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {catalog}: {exc.strerror or exc}", ExitCode.RUNTIME)
        path = "~/.codex/config.toml"
        quoted = json.dumps(str(catalog.resolve()))  # a TOML basic string: quotes and \ escaped
        made.files[path] = made.files[path].replace(
            CATALOG_HINT, f"model_catalog_json = {quoted}\n"
        )
        made.notes.append(f"wrote {catalog} ({len(written['models'])} models)")
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "env": made.env,
                    "command": made.command,
                    "files": made.files,
                    "parts": made.parts,
                    "notes": made.notes,
                },
                indent=2,
            )
            + "\n"
        )
        return
    sys.stdout.write(render(made))
    for note in made.notes:
        sys.stderr.write(f"note: {note}\n")
