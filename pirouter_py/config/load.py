"""The config file: pydantic models of config.toml, loading, validation and default paths.

Every key of pirouter v0.1 keeps its type, default and meaning; new keys are additive. The file is
read with the standard library's `tomllib`: loading needs only the values, and tomlkit (the
design's choice for commands that will write the file keeping its comments; none does yet) took
18.5 ms to parse config.example.toml against tomllib's 1.0, plus 7.5 ms to import, on every
command, start and reload. `toml_lines` finds the lines that errors name. Loading either
returns a `LoadedConfig` whose config is fully validated, with derived state computed once
(compiled regexes, resolved provider types, normalised URLs), or raises `ConfigError` listing
every problem located by file, line and dotted key, with what to do. Unknown keys are warnings,
never fatal.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from pirouter_py.config.rules import check_rules, did_you_mean
from pirouter_py.config.schema import (
    APP_NAME,
    BUILTIN_SOURCE,
    CONFIG_ENV,
    DEFAULT_BIND,
    OFFICIAL_BASE_URLS,
    PROVIDER_TYPES,
    Config,
    LoadedConfig,
    ProviderConfig,
)
from pirouter_py.config.toml_lines import KeyPath, key_lines, locate
from pirouter_py.errors import ConfigError, ConfigProblem

# ---------------------------------------------------------------------------------------------
# Paths


def default_config_path() -> Path:
    """`<platform user config dir>/pirouter/config.toml`."""
    import platformdirs  # imported here: only needed when no --config is given

    return platformdirs.user_config_path(APP_NAME, appauthor=False) / "config.toml"


def default_ledger_path() -> Path:
    """`<platform user data dir>/pirouter/ledger.db`."""
    import platformdirs

    return platformdirs.user_data_path(APP_NAME, appauthor=False) / "ledger.db"


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load from `path`, else $PIROUTER_CONFIG, else the platform default, else the built-in one.

    A path that was asked for (flag or variable) must exist; only the platform default may be
    absent, in which case the built-in default config is used.
    """
    env = os.environ if environ is None else environ
    default_path = default_config_path()
    chosen = path if path is not None else (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    if chosen is None:
        if not default_path.exists():
            text = default_config_text(env)
            config, warnings = parse_config(text, BUILTIN_SOURCE, env)
            return LoadedConfig(config, BUILTIN_SOURCE, None, default_path, warnings)
        chosen = default_path
    source = str(chosen)
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        how = "--config" if path is not None else f"${CONFIG_ENV}"
        raise ConfigError(
            [
                ConfigProblem(
                    source,
                    None,
                    "",
                    f"config file not found (named by {how}); "
                    "check the path, or write one there with `pirouter init`",
                )
            ]
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            [ConfigProblem(source, None, "", "is a directory; name the config.toml file inside")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    source,
                    None,
                    "",
                    f"is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8",
                )
            ]
        ) from None
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(source, None, "", f"cannot be read: {exc.strerror}")]
        ) from None
    config, warnings = parse_config(text, source, env)
    warnings += _unsafe_modes(chosen, source, text, config)
    return LoadedConfig(config, source, chosen, default_path, warnings)


def _unsafe_modes(path: Path, source: str, text: str, config: Config) -> tuple[ConfigProblem, ...]:
    """Files that other local users could change or read: a config they can write (they could
    point `base_url` elsewhere and collect the keys at the next reload), one holding a literal
    key they can read, a client-keys file they can read."""
    found = []
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return ()
    if mode & 0o077 and any(p.api_key for p in config.providers.values()):
        found.append(
            ConfigProblem(
                source,
                None,
                "",
                f"holds a literal api_key and is readable by others (mode {mode:o}); run "
                f"`chmod 600 {source}`, or use api_key_env",
            )
        )
    if mode & 0o022:
        found.append(
            ConfigProblem(
                source,
                None,
                "",
                f"can be changed by other users (mode {mode:o}): one could send your requests and "
                f"keys elsewhere; run `chmod 600 {source}`",
            )
        )
    keys = config.server.api_keys_file
    if keys:
        keys_path = Path(keys).expanduser()
        try:
            keys_mode = keys_path.stat().st_mode & 0o777
        except OSError:
            keys_mode = 0
        if keys_mode & 0o077:
            found.append(
                ConfigProblem(
                    source,
                    locate(key_lines(text), ("server", "api_keys_file")),
                    "server.api_keys_file",
                    f"{keys} can be read by other users (mode {keys_mode:o}); run "
                    f"`chmod 600 {keys}`",
                )
            )
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# Parsing and validation

RULE_PARTS = ("when", "then")  # named in the error for an unknown key inside a rule
_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")
_TOML_HINTS = {  # tomllib's words for the commonest slips, and what they mean to a person
    "Illegal character '\\n'": "a string is not closed on its line (add the closing quote, or "
    'use """ for text over several lines)',
}


def parse_config(
    text: str, source: str, environ: Mapping[str, str] | None = None
) -> tuple[Config, tuple[ConfigProblem, ...]]:
    """Parse and validate TOML text; raise ConfigError with every located problem. With
    `environ`, key variables it lacks are warnings (their models are left out of routing)."""
    repeated: list[tuple[KeyPath, int]] = []
    lines = key_lines(text, repeated)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(source, str(exc), repeated, lines)]) from None

    def problem(path: KeyPath, message: str) -> ConfigProblem:
        return ConfigProblem(source, locate(lines, path), _dotted(path), message)

    # Errors of every stage at once: a value of the wrong kind is reported, taken out (its
    # default applies; a table missing a required key goes whole), and the rest still checked,
    # except for what only follows from what was taken out (an alias of a model taken out).
    errors: list[ConfigProblem] = []
    removed: set[str] = set()
    config = None
    for _ in range(8):
        try:
            config = Config.model_validate(data)
            break
        except ValidationError as exc:
            clean = True
            for err in exc.errors():
                path = tuple(err["loc"])
                errors.append(problem(path, _describe(err)))
                clean &= _take_out(data, path[:-1] if err["type"] == "missing" else path, removed)
            if not clean:
                break
    if config is None:
        raise ConfigError(sorted(errors, key=lambda p: p.line or 0))
    found = len(errors)
    warnings: list[ConfigProblem] = []
    for path, message in _unknown_keys(config, ()):
        if path[0] == "rules":  # ignoring it would change what the rule matches or does
            hint = message.removeprefix("unknown key, ignored")
            part = path[2] if len(path) > 3 and path[2] in RULE_PARTS else None
            where = f"the rule's `{part}`" if part else "a rule"
            does = "matches" if part == "when" else "does"
            errors.append(
                problem(
                    path,
                    f"unknown key in {where}: ignoring it would change what the rule {does}; "
                    f"fix or remove it{hint}",
                )
            )
        else:
            warnings.append(problem(path, message))
    warnings.sort(key=lambda p: p.line or 0)
    config = _resolve(
        config,
        lambda path, msg: errors.append(problem(path, msg)),
        lambda path, msg: warnings.append(problem(path, msg)),
    )
    if errors:
        kept = errors[:found] + [e for e in errors[found:] if not _follows(e, removed)]
        raise ConfigError(sorted(kept, key=lambda p: p.line or 0), tuple(warnings))
    if environ is not None:
        for name, provider in config.providers.items():
            why = provider.key_missing(environ)
            if why is not None:
                aliases = ", ".join(
                    a for a, m in sorted(config.models.items()) if m.provider == name
                )
                warnings.append(
                    problem(
                        ("providers", name, "api_key_env"),
                        f"{why}: the models of provider `{name}` ({aliases or 'none'}) are left "
                        "out of routing until it is; export it, or remove api_key_env if the "
                        "server needs no key",
                    )
                )
    return config, tuple(warnings)


def _take_out(data: Any, path: KeyPath, removed: set[str]) -> bool:
    """Delete the value at `path` (noting the names of whole tables taken out); False when that
    cannot be done cleanly (an array's item: the items after it would be renumbered)."""
    node = data
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return True
    if not path or not isinstance(node, dict):
        return False
    node.pop(path[-1], None)
    removed.add(_dotted(path))
    return True


def _follows(problem: ConfigProblem, removed: set[str]) -> bool:
    """A problem that only follows from what was taken out for an earlier error: about the
    same key or one around it (`models` with its only model taken out), or naming a table taken
    out (`unknown model alias `m``)."""
    for path in removed:
        inside = path.startswith(problem.key + ".") or problem.key.startswith(path)
        table = path.split(".", 1)[1].strip('"') if path.count(".") == 1 else None
        if (problem.key and inside) or (table and f"`{table}`" in problem.message):
            return True
    return False


def _syntax_problem(
    source: str, message: str, repeated: list[tuple[KeyPath, int]], lines: dict[KeyPath, int]
) -> ConfigProblem:
    """A TOML decode error, located; a key set twice gets its own words (v0.1's parser, like
    tomllib, refuses the file)."""
    at = _TOML_POSITION.search(message)
    line = int(at[1]) if at is not None and at[1] is not None else None
    if repeated and (line is None or line >= repeated[0][1]):
        path, again = repeated[0]
        return ConfigProblem(
            source, again, _dotted(path), f"is set twice (first at line {lines[path]}); keep one"
        )
    what = _TOML_POSITION.sub("", message)
    what = _TOML_HINTS.get(what, what)
    if line is None:
        return ConfigProblem(source, None, "", f"TOML syntax error at the end of the file: {what}")
    assert at is not None
    return ConfigProblem(source, line, "", f"TOML syntax error: {what}", int(at[2]))


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            out += f".{text}" if out else text
    return out


def _url_problem(url: str) -> str | None:
    """What keeps an http(s) URL from naming a server, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError as exc:
        return f'is not a valid URL ({exc}); write e.g. "http://127.0.0.1:11434"'
    if not parts.hostname:
        return 'names no host; write e.g. "http://127.0.0.1:11434"'
    return None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string in quotes",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "list_type": "an array",
}


def _describe(err: Any) -> str:
    """One pydantic error as a sentence that says what to write instead."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return "required key is missing; add it"
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{_show(value)} is not one of {choices}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_show(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {_show(value)}"
    if kind == "value_error":  # a validator's own sentence
        return f"{_show(value)} {ctx.get('error', err.get('msg', kind))}"
    return str(err.get("msg", kind))


def _unknown_keys(node: Any, path: KeyPath) -> list[tuple[KeyPath, str]]:
    """Every key that no model field knows, with a spelling suggestion when one is close."""
    found: list[tuple[KeyPath, str]] = []
    if isinstance(node, BaseModel):
        fields = type(node).model_fields
        known = [field.alias or name for name, field in fields.items()]
        for key in node.model_extra or {}:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            found.append(((*path, key), f"unknown key, ignored{hint}"))
        for name, field in fields.items():
            found += _unknown_keys(getattr(node, name), (*path, field.alias or name))
    elif isinstance(node, dict):
        for key, value in node.items():
            found += _unknown_keys(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _unknown_keys(value, (*path, index))
    return found


_BIND = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$")


LOOPBACK_NAMES = frozenset(("localhost", "localhost.localdomain"))


def is_loopback(host: str) -> bool:
    """A name or address that only this machine can reach."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_bind(bind: str) -> tuple[str, int] | None:
    """`"127.0.0.1:11435"` -> ("127.0.0.1", 11435); `"[::1]:80"` -> ("::1", 80); None if invalid."""
    match = _BIND.match(bind)
    if match is None or int(match["port"]) > 65535:
        return None
    return match["v6"] or match["host"], int(match["port"])


Report = Any  # Callable[[KeyPath, str], None]


def _resolve(config: Config, error: Report, warn: Report) -> Config:
    """Semantic validation (reference §2.9 and more) and derived state; returns the final config."""
    bound = parse_bind(config.server.bind)
    if bound is None:
        error(
            ("server", "bind"),
            f'{_show(config.server.bind)} is not host:port; write e.g. bind = "{DEFAULT_BIND}"',
        )
    elif not is_loopback(bound[0]) and not config.server.keyed:
        error(
            ("server", "bind"),
            f"{_show(config.server.bind)} is beyond loopback, and without client keys pirouter "
            "would serve anyone who can reach this machine; set [server] api_keys_env or "
            'api_keys_file, or bind = "127.0.0.1:11435"',
        )

    providers: dict[str, ProviderConfig] = {}
    for name, prov in config.providers.items():
        kind = prov.type or (name if name in PROVIDER_TYPES else None)
        if kind is None:
            error(
                ("providers", name),
                'missing `type`; add type = "openai", "anthropic" or '
                '"ollama" (only tables named after a type may leave it out)',
            )
            continue
        if isinstance(prov.api_key_env, list) and (
            not prov.api_key_env or not all(prov.api_key_env)
        ):
            error(
                ("providers", name, "api_key_env"),
                'names no variable; write api_key_env = "NAME" or ["NAME_A", "NAME_B"]',
            )
        url = prov.base_url
        if url is None:
            if name != kind:
                error(("providers", name), f"missing `base_url`; add the URL of this {kind} server")
                continue
            url = OFFICIAL_BASE_URLS[kind]
        if not url.startswith(("http://", "https://")):
            error(
                ("providers", name, "base_url"), f"{_show(url)} is not an http:// or https:// URL"
            )
            continue
        if (host_problem := _url_problem(url)) is not None:
            error(("providers", name, "base_url"), f"{_show(url)} {host_problem}")
            continue
        url = url.rstrip("/")
        if kind in ("openai", "anthropic") and url.endswith("/v1"):
            url = url[:-3]  # adapters append /v1/...; v0.1 would have doubled it
        providers[name] = prov.model_copy(
            update={
                "type": kind,
                "base_url": url,
                "request_timeout_secs": max(1, prov.request_timeout_secs),
            }
        )

    if not config.models:
        error(
            ("models",),
            "no models declared; add a [models.<alias>] table (see config.example.toml)",
        )
    for alias, model in config.models.items():
        if model.provider not in config.providers:
            configured = ", ".join(sorted(config.providers)) or "none"
            error(
                ("models", alias, "provider"),
                f"provider `{model.provider}` is not configured (configured: {configured}); "
                f"add a [providers.{model.provider}] table or fix the name"
                + did_you_mean(model.provider, list(config.providers)),
            )

        serving = providers.get(model.provider)
        if serving is not None and serving.kind == "anthropic":
            if model.kind == "embedding":
                error(
                    ("models", alias, "kind"),
                    "Anthropic serves no embeddings; use an OpenAI-compatible or Ollama provider",
                )
            if model.supports_fim:
                error(
                    ("models", alias, "supports_fim"),
                    "Anthropic serves no text completions; use an OpenAI-compatible or Ollama "
                    "provider for fill-in-the-middle",
                )

    aliases = sorted(config.models)
    check_rules(config.rules, aliases, error, warn)

    baseline = config.stats.baseline
    if baseline is not None and baseline not in config.models:
        error(
            ("stats", "baseline"),
            f"`{baseline}` is not a declared model alias" + did_you_mean(baseline, aliases),
        )

    shared = config.state.url
    if shared is not None and not shared.startswith(("redis://", "rediss://", "unix://")):
        error(
            ("state", "url"),
            f'{_show(shared)} is not a Redis URL; write e.g. url = "redis://127.0.0.1:6379/0"',
        )

    judge = config.learning.shadow_judge
    if judge is not None and judge not in config.models:
        error(
            ("learning", "shadow_judge"),
            f"`{judge}` is not a declared model alias" + did_you_mean(judge, aliases),
        )

    cascade = config.cascade
    if cascade.on_marker == "":
        warn(
            ("cascade", "on_marker"),
            "is empty, which v0.1 matched in every answer; ignored here. "
            'Remove it or set a marker such as "<escalate/>"',
        )
        cascade = cascade.model_copy(update={"on_marker": None})

    for rule in config.rules:
        if rule.then.escalation is not None:
            rule._cascade = cascade.model_copy(update=rule.then.escalation.overrides())
    final = config.model_copy(update={"providers": providers, "cascade": cascade})
    final._aliases = tuple(aliases)
    final._policy_cache = {}  # model_copy shares private dicts: this config gets its own
    return final


# ---------------------------------------------------------------------------------------------
# The built-in default


def default_config_text(environ: Mapping[str, str]) -> str:
    """A config for users with no file: local Ollama, plus each cloud whose key variable is set."""
    parts = [
        "# pirouter's built-in default. `pirouter init` writes a config file for what you have.",
        "[providers.ollama]",
        'base_url = "http://127.0.0.1:11434"',
        "",
        '[models."llama3.2-local"]',
        'provider = "ollama"\nmodel_id = "llama3.2:3b"\nquality = "basic"',
        "context_window = 8192\nlocal = true",
        "",
        '[models."qwen2.5-coder-local"]',
        'provider = "ollama"\nmodel_id = "qwen2.5-coder:7b"\nquality = "standard"',
        "context_window = 32768\nsupports_tools = true\nlocal = true",
        "",
    ]
    if environ.get("OPENAI_API_KEY"):
        parts += [
            '[providers.openai]\nbase_url = "https://api.openai.com"',
            'api_key_env = "OPENAI_API_KEY"',
            "",
            '[models."gpt-4o-mini"]\nprovider = "openai"\nmodel_id = "gpt-4o-mini"',
            'input_per_m = 0.15\noutput_per_m = 0.60\nquality = "standard"',
            "context_window = 128000\nsupports_tools = true\nsupports_vision = true",
            "",
            '[models."gpt-4o"]\nprovider = "openai"\nmodel_id = "gpt-4o"',
            'input_per_m = 2.50\noutput_per_m = 10.00\nquality = "strong"',
            "context_window = 128000\nsupports_tools = true\nsupports_vision = true",
            "",
        ]
    if environ.get("ANTHROPIC_API_KEY"):
        parts += [
            "[providers.anthropic]",
            'base_url = "https://api.anthropic.com"\napi_key_env = "ANTHROPIC_API_KEY"',
            "",
        ]
        for alias, model_id, prices, quality in (
            ("haiku", "claude-haiku-4-5-20251001", (0.80, 4.00), "basic"),
            ("sonnet", "claude-sonnet-4-6", (3.00, 15.00), "strong"),
            ("opus", "claude-opus-4-6", (15.00, 75.00), "premium"),
        ):
            parts += [
                f"[models.{alias}]",
                f'provider = "anthropic"\nmodel_id = "{model_id}"',
                f"input_per_m = {prices[0]:.2f}\noutput_per_m = {prices[1]:.2f}",
                f'quality = "{quality}"\ncontext_window = 200000',
                "supports_tools = true\nsupports_vision = true",
                "",
            ]
    parts += [
        "# Agent-aware: a turn's difficulty comes from its latest instruction, tool results stay",
        "# on the model that started the step, side calls go to the cheapest capable model.",
        "[routing]\nturns = true",
        "",
        "# Keep conversations on the model of their previous turn (prompt caches stay warm).",
        "[affinity]\nenabled = true",
        "",
        "[[rules]]",
        'name = "explicit-override"',
        'when = { header = { name = "x-pirouter-route", any_value = true } }',
        'then = { primary = "$header:x-pirouter-route", cascade = [] }',
        "",
    ]
    return "\n".join(parts)
