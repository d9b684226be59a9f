"""The shapes of the dashboard's API (`/ui/api/...`): the one place its field names are written.

The server builds these (server/dashboard.py, reports/dashboard.py, reports/timeline.py) and the
page reads them (server/ui/app.js); tests/test_dashboard_fields.py checks that every field the
page reads of each endpoint is named here, so a rename on one side fails a test instead of
showing "none" on the page.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Kind = Literal["ok", "escalated", "failed", "cancelled"]


class Cooling(TypedDict):
    """A model in cooldown after failures: skipped until `left_s` runs out."""

    model: str
    left_s: float
    why: str | None  # the last error that sent it there
    failures: int
    down: bool  # its provider did not answer at all (connection refused, DNS)


class RestingKey(TypedDict):
    """A provider's API key resting after a 401/403/429 (by its variable's name)."""

    provider: str
    key: str
    left_s: float
    why: str | None


class Limit(TypedDict):
    """A model's rpm or tpm limit and what is left of it this minute."""

    model: str
    kind: Literal["rpm", "tpm"]
    limit: int
    left: float
    near: bool  # less than a fifth left


class Budget(TypedDict):
    budget: str
    limit_usd: float
    spent_usd: float
    percent: float
    near: bool  # 80% spent or more


class LedgerHealth(TypedDict):
    path: str
    failing: bool
    last_error: str | None
    backlog: int
    written: int
    spilled: int
    unsaved: int


class StateBody(TypedDict):
    """`/ui/api/state`: what is true now. A client key's (`scope`: its name) leaves out what
    belongs to the operator (the NotRequired fields): the config's path, how much the daemon
    served, its keys, limits, budgets, sessions and ledger."""

    scope: str | None
    config_loaded_at: float
    started: float
    now: float
    catalog: list[str]
    store_prompts: bool
    cooling: list[Cooling]
    config: NotRequired[str]
    requests: NotRequired[int]
    in_flight: NotRequired[int]
    keys: NotRequired[list[RestingKey]]
    limits: NotRequired[list[Limit]]
    budgets: NotRequired[list[Budget]]
    sessions: NotRequired[int]
    ledger: NotRequired[LedgerHealth]


class AttemptRow(TypedDict):
    alias: str
    provider: str
    model_id: str
    outcome: str
    http_status: int | None
    error: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None


class RequestRow(TypedDict):
    """One request as the requests table shows it, and as the live feed and exports carry it."""

    id: str
    ts: float
    status: str  # the ledger's own word (ok, exhausted, client_cancelled, ...)
    kind: Kind  # ok, escalated (then answered), failed, cancelled
    rule: str | None
    model: str | None
    protocol: str | None
    client: str | None  # the client key's name (None: no key)
    app: str  # the calling program, from its user agent (claude-cli, codex_cli_rs, ...)
    session: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    ttft_ms: float | None
    overhead_ms: float | None
    attempts: list[AttemptRow]
    feedback: float | None  # the newest score given on it (1 good, 0 bad)
    prompt: str | None  # kept only with [ledger] store_prompts
    answer: str | None


class RequestsBody(TypedDict):
    """`/ui/api/requests`: the newest requests of the window passing the filters."""

    requests: list[RequestRow]
    filters: dict[str, str]
    limit: int
    searchable: bool  # prompts are kept, so `q` finds text


class SeriesLine(TypedDict):
    model: str  # "all" for every model together
    requests: list[int]
    errors: list[int]
    escalated: list[int]
    cost_usd: list[float]
    baseline_usd: list[float] | None
    p50_ms: list[float | None]
    p95_ms: list[float | None]
    ttft_p50_ms: list[float | None]
    ttft_p95_ms: list[float | None]


class SeriesBody(TypedDict):
    """`/ui/api/series`: per step from `start`, `step_s` seconds each, one line per model."""

    start: float
    step_s: int
    until: float
    baseline: str | None
    lines: list[SeriesLine]


class LearnedModel(TypedDict):
    model: str
    labels: int
    good: int
    bad: int
    ready: bool
    needs: str  # what it lacks before `learn` trains it ("" when ready)


class LearningBody(TypedDict):
    """`/ui/api/learning`: the labels the ledger holds and what `pirouter learn` needs."""

    min_labels: int
    min_each: int
    models: list[LearnedModel]
    feedback: int  # labels a person gave
    ready: bool  # at least one model can be learned
    command: str
    newest: int | None  # counted over this many newest requests; None: all of them


class Count(TypedDict):
    key: str
    requests: int


class SummaryBody(TypedDict):
    """`/ui/api/summary`: the window's panels; `stats` is `pirouter stats --json`'s own."""

    stats: dict[str, Any]
    until: float
    by_rule: list[Count]
    by_app: list[Count]
    by_client: list[Count]
    by_protocol: list[Count]
    escalations: list[dict[str, Any]]
    latency: dict[str, Any]
    ttft: dict[str, Any]
    overhead: dict[str, Any]
    series: dict[str, Any]
    cut: bool
    rolled_up: bool
    budgets: list[Budget]


ENDPOINTS: dict[str, type] = {
    "/ui/api/state": StateBody,
    "/ui/api/requests": RequestsBody,
    "/ui/api/series": SeriesBody,
    "/ui/api/learning": LearningBody,
    "/ui/api/summary": SummaryBody,
}
