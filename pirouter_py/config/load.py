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
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from pirouter_py.config.rules import Profile, Rule, check_rules, did_you_mean
from pirouter_py.config.toml_lines import KeyPath, key_lines, locate
from pirouter_py.errors import ConfigError, ConfigProblem

APP_NAME = "pirouter"
CONFIG_ENV = "PIROUTER_CONFIG"
DEFAULT_BIND = "127.0.0.1:11435"
BUILTIN_SOURCE = "<built-in default>"

ProviderType = Literal["openai", "anthropic", "ollama"]
Quality = Literal["basic", "standard", "strong", "premium"]
PROVIDER_TYPES: tuple[str, ...] = ("openai", "anthropic", "ollama")
QUALITY_RANK: dict[str, int] = {"basic": 0, "standard": 1, "strong": 2, "premium": 3}
# Where a provider table named after its type points when it gives no base_url (v0.1 required one).
OFFICIAL_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
    "ollama": "http://127.0.0.1:11434",
}


class _Section(BaseModel):
    # strict: TOML is typed, so "1" is not a number and 1 is not a boolean; ints pass as floats.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class ServerConfig(_Section):
    bind: str = DEFAULT_BIND
    log_level: str = "info"
    # Routine requests (answered by their first model) logged a second at info; past it, one
    # line counts the rest of that second's. 0: a line for every request.
    log_requests_per_sec: int = Field(default=100, ge=0)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    body_timeout_secs: float = Field(default=30.0, gt=0)  # a slower request body gets 408
    shutdown_timeout_secs: float = Field(default=10.0, ge=0)
    metrics: bool = True  # serve Prometheus metrics at GET /metrics
    # Client keys: names of environment variables holding them, and/or a file of one per line.
    # With keys, every endpoint but /healthz wants one; without, only loopback binds are allowed.
    api_keys_env: list[str] = Field(default_factory=list)
    api_keys_file: str | None = None
    # Host header values accepted besides localhost, 127.0.0.1, [::1] and the bind host (DNS
    # rebinding protection).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Origins whose web pages may call pirouter (CORS); empty: none, "*": any.
    cors_origins: list[str] = Field(default_factory=list)


class LedgerConfig(_Section):
    path: str | None = None
    store_prompts: bool = False  # keep request messages and answer text (separate table)
    retention_days: int = Field(default=0, ge=0)  # 0 keeps every row forever


class StatsConfig(_Section):
    baseline: str | None = None  # the alias savings are measured against; default: the priciest


class ProviderConfig(_Section):
    type: ProviderType | None = None  # resolved from the table name at load when unset
    base_url: str | None = (
        None  # normalised at load: no trailing "/" (nor "/v1" for openai/anthropic)
    )
    # The name of the environment variable holding the key; several names rotate the keys.
    api_key_env: str | list[str] | None = None
    api_key: str | None = None
    request_timeout_secs: int = Field(default=120, ge=0)
    connect_timeout_secs: float = Field(default=10.0, gt=0)
    # Time allowed until the response headers arrive; unset = only the total timeout applies.
    first_byte_timeout_secs: float | None = Field(default=None, gt=0)

    @property
    def kind(self) -> ProviderType:
        assert self.type is not None, "provider types are resolved at load"
        return self.type

    @property
    def url(self) -> str:
        assert self.base_url is not None, "base URLs are resolved at load"
        return self.base_url

    @property
    def key_envs(self) -> tuple[str, ...]:
        """The names of the variables holding this provider's keys (several rotate)."""
        env = self.api_key_env
        return () if not env else (env,) if isinstance(env, str) else tuple(env)


class ModelConfig(_Section):
    provider: str
    model_id: str
    input_per_m: float = Field(default=0.0, ge=0)
    output_per_m: float = Field(default=0.0, ge=0)
    cache_read_per_m: float | None = Field(
        default=None, ge=0
    )  # unset: cached input costs input_per_m
    cache_write_per_m: float | None = Field(default=None, ge=0)
    quality: Quality = "standard"
    context_window: int | None = Field(default=None, ge=0)
    supports_tools: bool = False
    supports_vision: bool = False
    local: bool = False
    enabled: bool = True
    # max_tokens sent to Anthropic-type upstreams (which require one) when the request sets none.
    default_max_tokens: int = Field(default=1024, ge=1)
    rpm: int | None = Field(default=None, ge=1)  # requests per minute this model may take
    tpm: int | None = Field(default=None, ge=1)  # input+output tokens per minute
    daily_usd: float | None = Field(default=None, ge=0)  # this model's budgets
    monthly_usd: float | None = Field(default=None, ge=0)

    @property
    def rank(self) -> int:
        return QUALITY_RANK[self.quality]

    @property
    def cost(self) -> float:
        """The policy's cost key: input plus output price per million tokens."""
        return self.input_per_m + self.output_per_m


class RoutingConfig(_Section):
    profile: Profile = "balanced"
    auto_cascade: bool = True
    max_policy_fallbacks: int = Field(default=3, ge=0)
    honor_requested_model: bool = False
    latency_ties: bool = True  # among models tied on the profile's keys, prefer the faster


class BudgetConfig(_Section):
    daily_usd: float | None = Field(default=None, ge=0)  # all models together, today (local)
    monthly_usd: float | None = Field(default=None, ge=0)  # ... this calendar month
    action: Literal["downgrade", "refuse"] = "downgrade"


class AffinityConfig(_Section):
    enabled: bool = False  # keep a conversation on the model that served its previous turn
    hard_secs: float = Field(default=300.0, ge=0)  # within this: always the same model
    soft_secs: float = Field(default=1800.0, ge=0)  # within this: it wins ties and near-ties
    near_tie: float = Field(default=0.25, ge=0)  # a near-tie costs at most this much more


class CascadeConfig(_Section):
    on_http_error: bool = True
    on_short_response: bool = False
    min_output_tokens: int = Field(default=8, ge=0)
    min_output_chars: int = Field(default=0, ge=0)
    on_marker: str | None = None
    on_truncated: bool = False
    on_empty: bool = False
    retries: int = Field(default=0, ge=0)  # retries of the same model on a retryable error
    cooldown_secs: float = Field(default=5.0, ge=0)  # first cooldown after a failure
    max_cooldown_secs: float = Field(default=300.0, ge=0)  # cooldowns double up to this


class Config(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    rules: list[Rule] = Field(default_factory=list)
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    affinity: AffinityConfig = Field(default_factory=AffinityConfig)
    _aliases: tuple[str, ...] = PrivateAttr(default=())
    _policy_cache: dict[Any, Any] = PrivateAttr(default_factory=dict)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every declared alias in byte order (v0.1 keeps the catalog in a sorted map)."""
        return self._aliases

    @property
    def has_budgets(self) -> bool:
        """Is any budget set, in [budget] or on a model?"""
        b = self.budget
        return any(
            limit is not None
            for limit in (
                b.daily_usd,
                b.monthly_usd,
                *(m.daily_usd for m in self.models.values()),
                *(m.monthly_usd for m in self.models.values()),
            )
        )

    @property
    def policy_cache(self) -> dict[Any, Any]:
        """Derived routing state the policy computes once per config (owned by policy.py)."""
        private = self.__pydantic_private__  # direct: pydantic's __getattr__ costs µs per call
        assert private is not None
        return private["_policy_cache"]  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config plus where it came from and what was worth a warning."""

    config: Config
    source: str  # the path as given, or BUILTIN_SOURCE
    path: Path | None  # None when running on the built-in default
    default_path: Path | None  # where a user config file goes (for messages); None if unknown
    warnings: tuple[ConfigProblem, ...] = ()

    @property
    def is_default(self) -> bool:
        return self.path is None


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
            config, warnings = parse_config(text, BUILTIN_SOURCE)
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
                    "check the path, or copy config.example.toml there",
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
    config, warnings = parse_config(text, source)
    if any(p.api_key for p in config.providers.values()):
        mode = chosen.stat().st_mode
        if mode & 0o077:
            warnings += (
                ConfigProblem(
                    source,
                    None,
                    "",
                    f"holds a literal api_key and is readable by others (mode "
                    f"{mode & 0o777:o}); run `chmod 600 {source}`, or use api_key_env",
                ),
            )
    return LoadedConfig(config, source, chosen, default_path, warnings)


# ---------------------------------------------------------------------------------------------
# Parsing and validation

_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")
_TOML_HINTS = {  # tomllib's words for the commonest slips, and what they mean to a person
    "Illegal character '\\n'": "a string is not closed on its line (add the closing quote, or "
    'use """ for text over several lines)',
}


def parse_config(text: str, source: str) -> tuple[Config, tuple[ConfigProblem, ...]]:
    """Parse and validate TOML text; raise ConfigError with every located problem."""
    repeated: list[tuple[KeyPath, int]] = []
    lines = key_lines(text, repeated)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_problem(source, str(exc), repeated, lines)]) from None

    def problem(path: KeyPath, message: str) -> ConfigProblem:
        return ConfigProblem(source, locate(lines, path), _dotted(path), message)

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            [problem(tuple(err["loc"]), _describe(err)) for err in exc.errors()]
        ) from None
    warnings = sorted(
        (problem(path, message) for path, message in _unknown_keys(config, ())),
        key=lambda p: p.line or 0,
    )
    errors: list[ConfigProblem] = []
    config = _resolve(
        config,
        lambda path, msg: errors.append(problem(path, msg)),
        lambda path, msg: warnings.append(problem(path, msg)),
    )
    if errors:
        raise ConfigError(errors)
    return config, tuple(warnings)


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


def parse_bind(bind: str) -> tuple[str, int] | None:
    """`"127.0.0.1:11435"` -> ("127.0.0.1", 11435); `"[::1]:80"` -> ("::1", 80); None if invalid."""
    match = _BIND.match(bind)
    if match is None or int(match["port"]) > 65535:
        return None
    return match["v6"] or match["host"], int(match["port"])


Report = Any  # Callable[[KeyPath, str], None]


def _resolve(config: Config, error: Report, warn: Report) -> Config:
    """Semantic validation (reference §2.9 and more) and derived state; returns the final config."""
    if parse_bind(config.server.bind) is None:
        error(
            ("server", "bind"),
            f'{_show(config.server.bind)} is not host:port; write e.g. bind = "{DEFAULT_BIND}"',
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

    aliases = sorted(config.models)
    check_rules(config.rules, aliases, error, warn)

    baseline = config.stats.baseline
    if baseline is not None and baseline not in config.models:
        error(
            ("stats", "baseline"),
            f"`{baseline}` is not a declared model alias" + did_you_mean(baseline, aliases),
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
        "# pirouter's built-in default. Run `pirouter init` to write an editable copy.",
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
