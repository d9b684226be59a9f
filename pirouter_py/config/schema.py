"""The pydantic models of config.toml: every section and key, with its type and default.

Every key of pirouter v0.1 keeps its type, default and meaning; new keys are additive. Models are
strict (TOML is typed) and frozen; unknown keys are allowed here and reported by `load.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from pirouter_py.config.rules import Profile, Rule
from pirouter_py.errors import ConfigProblem

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
    # While a stream is held back (the cascade judging its start), a keep-alive goes to the
    # client this often in its protocol (agents abort streams silent for 180-300 s). 0: none.
    stream_keepalive_secs: float = Field(default=10.0, ge=0)
    metrics: bool = True  # serve Prometheus metrics at GET /metrics
    # Client keys: names of environment variables holding them, and/or a file of one per line.
    # With keys, every endpoint but /healthz wants one; without, only loopback binds are allowed.
    api_keys_env: list[str] = Field(default_factory=list)
    api_keys_file: str | None = None
    # Operator keys: names of environment variables holding them. A request with one sees every
    # client's requests, prompts, feedback and live events (as loopback does with no keys set);
    # a client key sees only its own. An operator key is a client key too, named by its variable.
    admin_keys_env: list[str] = Field(default_factory=list)
    # Host header values accepted besides localhost, 127.0.0.1, [::1] and the bind host (DNS
    # rebinding protection).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Origins whose web pages may call pirouter (CORS); empty: none, "*": any. A request from a
    # page of any other origin is refused, whatever its content type.
    cors_origins: list[str] = Field(default_factory=list)
    # Client connections: the first request's headers must arrive within header_timeout_secs;
    # an idle keep-alive connection closes after idle_timeout_secs; past max_connections open at
    # once (0: half the open-file limit less 64, at most 4096), new ones get a 503.
    header_timeout_secs: float = Field(default=10.0, gt=0)
    idle_timeout_secs: float = Field(default=75.0, gt=0)
    max_connections: int = Field(default=0, ge=0)

    @property
    def keyed(self) -> bool:
        """Are client (or operator) keys configured: every endpoint but /healthz wants one?"""
        return bool(self.api_keys_env or self.api_keys_file or self.admin_keys_env)


def postgres_url(url: str) -> str:
    """`url` if it names a PostgreSQL database; ValueError with the fix otherwise."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("use a postgresql:// URL, e.g. postgresql://user@host:5432/db")
    return url


class LedgerConfig(_Section):
    path: str | None = None
    # The ledger in PostgreSQL, e.g. "postgresql://pirouter@db.internal/pirouter" (needs
    # `.venv/bin/pip install -e '.[team]'`); `path` then only places the journal and spill files.
    url: str | None = None
    store_prompts: bool = False  # keep request messages and answer text (separate table)
    # The most of one prompt (its body's JSON) or one answer kept with store_prompts, in
    # characters; past it, the rest is left out and a marker says how much.
    max_stored_chars: int = Field(default=1_048_576, ge=1_024)
    retention_days: int = Field(default=0, ge=0)  # 0 keeps every row forever
    # Refuse to answer (503) while a request's row could not be kept on disk: the ledger
    # cannot be written and its journal and reserve are full (a full disk). Off: answer anyway,
    # the rows waiting in memory for the disk to have room.
    require: bool = False

    @field_validator("url")
    @classmethod
    def _postgres(cls, value: str | None) -> str | None:
        return None if value is None else postgres_url(value)


class LearningConfig(_Section):
    # Keep each request's hashed features (never its text) in the ledger, so `pirouter learn`
    # can train on requests whose prompts were not stored. Unset: kept while [routing] learned
    # or shadow checks are on (about 4 bytes per word and word pair of the latest instruction).
    keep_features: bool | None = None
    # Shadow checks: this share of requests answered by a model stronger than the cheapest local
    # capable one are asked of that local model as well, after the answer is sent and only while
    # no other shadow call runs; its answer is judged (by the answer checks, and by
    # shadow_judge's verdict on whether it agrees with the answer given, when set) and kept as a
    # label for `pirouter learn`. 0: off.
    shadow_rate: float = Field(default=0.0, ge=0, le=1)
    shadow_judge: str | None = None  # a model alias asked "do these two answers agree?"


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
    # Time allowed until the response headers arrive, and for a stream until its first event;
    # unset = only the total timeout applies.
    first_byte_timeout_secs: float | None = Field(default=None, gt=0)
    # The largest whole answer taken (its body, decompressed); a larger one is a malformed answer
    # and escalates. Streams pass through and are not capped, but one event is.
    max_answer_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)

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

    def key_missing(self, environ: Mapping[str, str]) -> str | None:
        """Why this provider cannot be called for want of a key, or None: it names key
        variables and none is set (no key configured at all means none is sent)."""
        envs = self.key_envs
        if self.kind == "ollama" or not envs or any(environ.get(e) for e in envs):
            return None
        names = ", ".join(envs)
        return f"{names} {'are' if len(envs) > 1 else 'is'} not set"


# Claude models without structured outputs (`output_config.format`): 3.x, and Sonnet 4 and
# Opus 4 as first released (claude-sonnet-4-20250514, claude-opus-4-20250514 or -4-0)
OLD_CLAUDE = re.compile(r"^claude-(?:3|(?:sonnet|opus)-4-(?:0|2025))")


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
    # "embedding": serves /v1/embeddings, /api/embed and /api/embeddings, never chat
    kind: Literal["chat", "embedding"] = "chat"
    # fill-in-the-middle: serves /v1/completions and /api/generate (with `suffix`)
    supports_fim: bool = False
    # max_tokens sent to Anthropic-type upstreams (which require one) when the request sets none.
    default_max_tokens: int = Field(default=1024, ge=1)
    # How an Anthropic-type model is asked for a JSON answer: "native" (`output_config.format`)
    # or "tool" (a forced tool call carrying the schema). Unset: "tool" for the Claude models
    # that came before structured outputs (OLD_CLAUDE), "native" for every other.
    structured_output: Literal["native", "tool"] | None = None
    rpm: int | None = Field(default=None, ge=1)  # requests per minute this model may take
    tpm: int | None = Field(default=None, ge=1)  # input+output tokens per minute
    daily_usd: float | None = Field(default=None, ge=0)  # this model's budgets
    monthly_usd: float | None = Field(default=None, ge=0)

    @property
    def rank(self) -> int:
        return QUALITY_RANK[self.quality]

    @property
    def json_by_tool(self) -> bool:
        """Is a JSON answer asked of this model through a forced tool call?"""
        if self.structured_output is not None:
            return self.structured_output == "tool"
        return OLD_CLAUDE.match(self.model_id) is not None

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
    # Agent-aware decisions: difficulty from the latest instruction (tools do not make a turn
    # hard), tool-result turns stay on the model that started the step, background and
    # compaction turns go to the cheapest capable model. Off: v0.1's decisions.
    turns: bool = False
    # The learned router: among the capable models, the cheapest whose predicted chance of a
    # good enough answer is at most 1 - quality_bias below the strongest's takes the request,
    # else the strongest. Its chances come from the owner's model (`pirouter learn`) and, until
    # that has labels enough, the shipped prior. Off: the difficulty ladder.
    learned: bool = False
    # The shipped prior (trained on public labelled prompts): routes from the first request,
    # giving way to the owner's model as labels accumulate. false: the owner's labels only.
    prior: bool = True
    # The share of the strongest model's quality to keep: the learned router's threshold is the
    # cheapest that kept it on held-out labels (the owner's, else the prior's).
    quality_target: float = Field(default=0.95, gt=0, le=1)
    # The raw threshold (v0.1-era configs): when set, it is used as is and quality_target is not.
    quality_bias: float | None = Field(default=None, ge=0, le=1)


class ClientBudget(_Section):
    daily_usd: float | None = Field(default=None, ge=0)  # this client's requests, today (local)
    monthly_usd: float | None = Field(default=None, ge=0)  # ... this calendar month


class StateConfig(_Section):
    # Share budgets' spend, rpm limits and session pins with other pirouter instances through
    # Redis, e.g. "redis://127.0.0.1:6379/0" (unset: each instance keeps its own, in memory).
    url: str | None = None
    prefix: str = "pirouter"  # the Redis keys' prefix (instances of one team share it)


class BudgetConfig(_Section):
    daily_usd: float | None = Field(default=None, ge=0)  # all models together, today (local)
    monthly_usd: float | None = Field(default=None, ge=0)  # ... this calendar month
    action: Literal["downgrade", "refuse"] = "downgrade"
    # Per client key, by its name ([server] api_keys_env / api_keys_file): a client whose budget
    # is spent gets only unpriced models (downgrade) or 429 (refuse); the others are unaffected.
    clients: dict[str, ClientBudget] = Field(default_factory=dict)


class AffinityConfig(_Section):
    enabled: bool = False  # keep a conversation on the model that served its previous turn
    hard_secs: float = Field(default=300.0, ge=0)  # within this: always the same model
    soft_secs: float = Field(default=1800.0, ge=0)  # within this: it wins ties and near-ties
    near_tie: float = Field(default=0.25, ge=0)  # a near-tie costs at most this much more


def _regex(cls: Any, value: str | None) -> str | None:
    """A regular expression of an answer check, checked at load."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a regular expression ({exc})") from None
    return value


class CascadeConfig(_Section):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True, populate_by_name=True)

    on_http_error: bool = True
    on_short_response: bool = False
    min_output_tokens: int = Field(default=8, ge=0)
    min_output_chars: int = Field(default=0, ge=0)
    on_marker: str | None = None
    on_truncated: bool = False
    on_empty: bool = False
    # answer checks (checks.py): regexes the answer must / must not match, JSON, valid tool
    # calls, refusals, degenerate repetition
    require_match: str | None = None
    forbid_match: str | None = None
    json_check: bool = Field(default=False, alias="json")
    tool_calls_valid: bool = False
    refusal: bool = False
    repetition: bool = False
    retries: int = Field(default=0, ge=0)  # retries of the same model on a retryable error

    _regexes = field_validator("require_match", "forbid_match")(_regex)
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
    state: StateConfig = Field(default_factory=StateConfig)
    affinity: AffinityConfig = Field(default_factory=AffinityConfig)
    learning: LearningConfig = Field(default_factory=LearningConfig)
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
                *(c.daily_usd for c in b.clients.values()),
                *(c.monthly_usd for c in b.clients.values()),
            )
        )

    def unavailable(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Models that cannot be called now, and why (their provider's key variable is unset):
        routing leaves them out, naming the reason."""
        out = {}
        for alias, model in self.models.items():
            provider = self.providers.get(model.provider)
            why = provider.key_missing(environ) if provider is not None else None
            if why is not None:
                out[alias] = f"key missing: {why}"
        return out

    @property
    def keeps_features(self) -> bool:
        """Does the ledger keep requests' hashed features ([learning] keep_features)?"""
        learning = self.learning
        if learning.keep_features is not None:
            return learning.keep_features
        return self.routing.learned or learning.shadow_rate > 0

    @property
    def policy_cache(self) -> dict[Any, Any]:
        """Derived routing state the policy computes once per config (routing/policy.py's)."""
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
