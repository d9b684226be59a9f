"""`pirouter stats`: aggregation over ledger rows into frozen summaries. Pure: no I/O, no clock.

A request is a success when its status is `ok`, a failure otherwise; a success is escalated when
an attempt before the answer escalated (a failed request counts as failed, however many models it
tried). Savings compare the actual cost with what the answers would have cost on the baseline
model: the tokens of the attempt whose answer was returned, priced at the baseline's rates (its
cache rates included) by `ledger.pricing`, the one place costs are computed.
Latency percentiles use the nearest-rank method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from pirouter_py.config import Config, ModelConfig
from pirouter_py.ledger.pricing import cost

NO_ANSWER = "(no answer)"


@dataclass(frozen=True, slots=True)
class Baseline:
    alias: str
    model: ModelConfig


@dataclass(frozen=True, slots=True)
class Group:
    """One row of the table: the requests sharing a key."""

    key: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    p50_ms: float | None
    p95_ms: float | None
    escalated: int  # answered after an escalation
    errors: int  # failed: no answer (status other than ok)


@dataclass(frozen=True, slots=True)
class Summary:
    since: float
    by: str
    requests: int
    successes: int
    escalated: int
    cost_usd: float
    baseline: Baseline | None
    baseline_cost_usd: float
    groups: tuple[Group, ...]
    total: Group

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.requests if self.requests else None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.requests if self.requests else None

    @property
    def failures(self) -> int:
        return self.requests - self.successes

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def savings_usd(self) -> float:
        return self.baseline_cost_usd - self.cost_usd

    @property
    def savings_pct(self) -> float | None:
        if self.baseline is None or self.baseline_cost_usd <= 0:
            return None
        return 100 * self.savings_usd / self.baseline_cost_usd


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of `values` (q in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def choose_baseline(config: Config) -> Baseline | None:
    """`[stats] baseline`, else the most expensive enabled model (by in+out price)."""
    alias = config.stats.baseline
    if alias is None:
        priced = [(m.cost, a) for a, m in config.models.items() if m.enabled and m.cost > 0]
        if not priced:
            return None
        alias = max(priced)[1]
    return Baseline(alias, config.models[alias])


def _escalated(row: Mapping[str, Any]) -> bool:
    """Did any attempt escalate (whether or not a later one answered)?"""
    return any(str(a.get("outcome", "")).startswith("escalated_") for a in row["attempts"])


def _answer(row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The attempt whose answer the client got."""
    attempts: list[Mapping[str, Any]] = row["attempts"]
    returned = [a for a in attempts if a.get("returned")]
    if returned:
        return returned[-1]
    ok = [a for a in attempts if a.get("outcome") == "ok"]
    return ok[-1] if ok else None


def key_function(by: str, tz: tzinfo | None) -> Callable[[Mapping[str, Any]], str]:
    if by == "model":
        return lambda row: row["final_model"] or NO_ANSWER
    if by == "rule":
        return lambda row: row["route_rule"] or "(none)"
    if by == "status":
        return lambda row: str(row["status"])
    if by == "client":  # the name of the client key (none without client keys)
        return lambda row: str(row.get("client") or "(no key)")
    if by == "day":
        return lambda row: datetime.fromtimestamp(row["ts"], tz).date().isoformat()
    if by == "provider":

        def provider(row: Mapping[str, Any]) -> str:
            answer = _answer(row)
            return str(answer["provider"]) if answer and answer.get("provider") else NO_ANSWER

        return provider
    raise ValueError(f"unknown dimension {by!r}")


def _group(key: str, rows: list[Mapping[str, Any]]) -> Group:
    latencies = [float(r["latency_ms"]) for r in rows]
    return Group(
        key=key,
        requests=len(rows),
        input_tokens=sum(int(r["input_tokens"]) for r in rows),
        output_tokens=sum(int(r["output_tokens"]) for r in rows),
        cost_usd=sum(float(r["cost_usd"]) for r in rows),
        p50_ms=percentile(latencies, 0.50),
        p95_ms=percentile(latencies, 0.95),
        escalated=sum(r["status"] == "ok" and _escalated(r) for r in rows),
        errors=sum(r["status"] != "ok" for r in rows),
    )


def summarize(
    rows: Iterable[Mapping[str, Any]],
    *,
    since: float,
    by: str = "model",
    baseline: Baseline | None = None,
    tz: tzinfo | None = None,
) -> Summary:
    """The report over request rows (each with its `attempts`), grouped by `by`."""
    rows = list(rows)
    key = key_function(by, tz)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    table = sorted(
        (_group(k, v) for k, v in groups.items()),
        key=(lambda g: g.key) if by == "day" else (lambda g: (-g.requests, g.key)),
    )
    baseline_cost = 0.0
    if baseline is not None:
        for row in rows:
            answer = _answer(row) if row["status"] == "ok" else None
            if answer is not None:
                baseline_cost += cost(
                    baseline.model,
                    int(answer.get("input_tokens") or 0),
                    int(answer.get("output_tokens") or 0),
                    int(answer.get("cache_read_tokens") or 0),
                    int(answer.get("cache_write_tokens") or 0),
                )
    total = _group("TOTAL", rows)
    return Summary(
        since=since,
        by=by,
        requests=len(rows),
        successes=sum(r["status"] == "ok" for r in rows),
        escalated=total.escalated,
        cost_usd=total.cost_usd,
        baseline=baseline,
        baseline_cost_usd=baseline_cost,
        groups=tuple(table),
        total=total,
    )


@dataclass(frozen=True, slots=True)
class Trend:
    """Requests and cost per day (per hour when the rows span two days or less), from the
    first row's period to the last's, periods without requests included."""

    unit: str  # "day" or "hour"
    labels: tuple[str, ...]
    requests: tuple[int, ...]
    cost_usd: tuple[float, ...]


def trend(rows: Sequence[Mapping[str, Any]], tz: tzinfo | None = None) -> Trend | None:
    """The trend of `rows` (None without rows)."""
    if not rows:
        return None
    first = min(float(r["ts"]) for r in rows)
    last = max(float(r["ts"]) for r in rows)
    hourly = last - first <= 2 * 86_400
    # the next period: an hour on, or 26 hours on floored to midnight (days of 23 to 25 hours)
    step = 3_600 if hourly else 26 * 3_600

    def period(ts: float) -> datetime:
        when = datetime.fromtimestamp(ts, tz)
        when = when.replace(minute=0, second=0, microsecond=0)
        return when if hourly else when.replace(hour=0)

    starts = [period(first)]
    end = period(last)
    while starts[-1] < end:
        starts.append(period(starts[-1].timestamp() + step))
    index = {start: i for i, start in enumerate(starts)}
    requests = [0] * len(starts)
    spent = [0.0] * len(starts)
    for row in rows:
        i = index[period(float(row["ts"]))]
        requests[i] += 1
        spent[i] += float(row["cost_usd"])
    fmt = "%Y-%m-%d %H:00" if hourly else "%Y-%m-%d"
    return Trend(
        "hour" if hourly else "day",
        tuple(s.strftime(fmt) for s in starts),
        tuple(requests),
        tuple(spent),
    )


@dataclass(frozen=True, slots=True)
class Burn:
    """One configured budget and how much of it is spent."""

    key: str  # "budget.daily_usd", "models.<alias>.monthly_usd"
    limit: float
    spent: float

    @property
    def percent(self) -> float:
        return 100.0 if self.limit <= 0 else 100.0 * self.spent / self.limit


def budget_burn(
    config: Config, today: Mapping[str, float], month: Mapping[str, float]
) -> list[Burn]:
    """Every configured budget against the ledger's spend today and this month (local time)."""
    burns = []
    b = config.budget
    if b.daily_usd is not None:
        burns.append(Burn("budget.daily_usd", b.daily_usd, sum(today.values())))
    if b.monthly_usd is not None:
        burns.append(Burn("budget.monthly_usd", b.monthly_usd, sum(month.values())))
    for alias in config.aliases:
        m = config.models[alias]
        if m.daily_usd is not None:
            burns.append(Burn(f"models.{alias}.daily_usd", m.daily_usd, today.get(alias, 0.0)))
        if m.monthly_usd is not None:
            burns.append(Burn(f"models.{alias}.monthly_usd", m.monthly_usd, month.get(alias, 0.0)))
    return burns
