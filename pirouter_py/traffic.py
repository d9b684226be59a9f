"""What the daemon learns from its own traffic and feeds back into routing.

- **Limits**: per-model `rpm` and `tpm` token buckets, kept in memory. A request takes one request
  token and its estimated input tokens when an attempt starts; when it ends, the bucket is trued
  up with the tokens the upstream reported. A model without room is *busy*: the router tries it
  last instead of letting its upstream answer 429.
- **Budgets**: spend per model and in total, today and this month (local time), seeded from the
  ledger at start and added to as requests finish. A model whose budget (or, for priced models, the
  global budget) is spent is *spent*: `[budget] action` says whether the router goes around it or
  refuses the request.
- **Latency**: recent time to first token per model (an exponentially weighted mean over streamed
  answers), seeded from the ledger; the policy prefers the faster of models tied on its keys.
- **Affinity**: the model that last served each conversation, and when. Sessions are kept in the
  ledger's request rows, so they survive a restart.

Every clock is a parameter, so tests are exact.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pirouter_py.config import Config
from pirouter_py.health import Health
from pirouter_py.ledger import attempt_cost
from pirouter_py.policy import Pin
from pirouter_py.record import RequestRecord
from pirouter_py.types import ChatRequest

SESSION_HEADER = "x-pirouter-session"
TTFT_WEIGHT = 0.3  # weight of the newest time-to-first-token sample in the running mean


# ---------------------------------------------------------------------------------------------
# Limits


@dataclass(slots=True)
class _Bucket:
    capacity: float
    level: float
    stamp: float

    def refill(self, now: float) -> float:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.capacity / 60.0)
        self.stamp = now
        return self.level


class Limits:
    """Token buckets for `[models.<alias>] rpm` and `tpm` (full at start, refilled per second)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        now = clock()
        self.rpm = {a: _Bucket(m.rpm, m.rpm, now) for a, m in config.models.items() if m.rpm}
        self.tpm = {a: _Bucket(m.tpm, m.tpm, now) for a, m in config.models.items() if m.tpm}

    def busy(self, alias: str, tokens: int) -> str | None:
        """Why `alias` has no room for a request of `tokens` input tokens now, or None."""
        now = self.clock()
        rpm = self.rpm.get(alias)
        if rpm is not None and rpm.refill(now) < 1:
            return f"at its limit of {rpm.capacity:g} requests per minute"
        tpm = self.tpm.get(alias)
        if tpm is not None and tpm.refill(now) < min(tokens, tpm.capacity):
            return f"at its limit of {tpm.capacity:g} tokens per minute"
        return None

    def take(self, alias: str, tokens: int) -> None:
        """An attempt starts: one request, `tokens` estimated input tokens."""
        now = self.clock()
        if (rpm := self.rpm.get(alias)) is not None:
            rpm.refill(now)
            rpm.level -= 1
        if (tpm := self.tpm.get(alias)) is not None:
            tpm.refill(now)
            tpm.level -= tokens

    def settle(self, alias: str, estimated: int, used: int) -> None:
        """An attempt ended having used `used` tokens (input + output) against `estimated`."""
        if (tpm := self.tpm.get(alias)) is not None:
            tpm.refill(self.clock())
            tpm.level -= used - estimated

    def snapshot(self) -> dict[str, dict[str, float]]:
        now = self.clock()
        out: dict[str, dict[str, float]] = {}
        for name, buckets in (("rpm_left", self.rpm), ("tpm_left", self.tpm)):
            for alias, bucket in buckets.items():
                out.setdefault(alias, {})[name] = round(max(0.0, bucket.refill(now)), 1)
        return out


# ---------------------------------------------------------------------------------------------
# Budgets


def day_start(now: float) -> datetime:
    return datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: float) -> datetime:
    return day_start(now).replace(day=1)


def next_reset(period: str, now: float) -> datetime:
    """When the daily or monthly budget period that contains `now` ends (local time)."""
    if period == "daily":
        return day_start(now) + timedelta(days=1)
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


@dataclass(frozen=True, slots=True)
class Spent:
    """A budget that is used up: which one, what was spent, and when it resets."""

    key: str  # "budget.daily_usd" or "models.<alias>.monthly_usd"
    limit: float
    spent: float
    resets: datetime
    at: float  # when this was found out

    def message(self) -> str:
        left = max(0, int(self.resets.timestamp() - self.at))
        return (
            f"the {self.key} budget of ${self.limit:.2f} is spent (${self.spent:.2f}); "
            f"it resets at {self.resets:%Y-%m-%d %H:%M} local time, in {left // 3600}h"
            f"{left % 3600 // 60:02d}m"
        )

    def retry_after(self) -> int:
        return max(1, int(self.resets.timestamp() - self.at))


@dataclass(slots=True)
class Budgets:
    """Spend today and this month, per model and in total, against the configured budgets."""

    config: Config
    clock: Callable[[], float] = time.time
    day: datetime = field(init=False)
    month: datetime = field(init=False)
    today: dict[str, float] = field(default_factory=dict)
    this_month: dict[str, float] = field(default_factory=dict)
    day_end: float = field(init=False)  # when the current day ends (a month ends with a day)
    active: bool = field(init=False)  # any budget configured at all

    def __post_init__(self) -> None:
        self.day, self.month = day_start(self.clock()), month_start(self.clock())
        self.day_end = 0.0
        self._roll(self.clock())
        self.active = self.config.has_budgets

    def _roll(self, now: float) -> None:
        if now < self.day_end:  # the request path: one comparison
            return
        day = day_start(now)
        if day != self.day:
            self.day, self.today = day, {}
        month = month_start(now)
        if month != self.month:
            self.month, self.this_month = month, {}
        self.day_end = next_reset("daily", now).timestamp()

    def seed(self, today: Mapping[str, float], this_month: Mapping[str, float]) -> None:
        self.today, self.this_month = dict(today), dict(this_month)

    def add(self, alias: str, usd: float) -> None:
        if usd <= 0:
            return
        self._roll(self.clock())
        self.today[alias] = self.today.get(alias, 0.0) + usd
        self.this_month[alias] = self.this_month.get(alias, 0.0) + usd

    def spent(self, alias: str) -> Spent | None:
        """The budget that stops `alias` now, or None. A model with no price spends nothing, so
        no budget stops it."""
        if not self.active:
            return None
        model = self.config.models.get(alias)
        if model is None or model.cost <= 0:
            return None
        now = self.clock()
        self._roll(now)
        checks = (
            (f"models.{alias}.daily_usd", model.daily_usd, self.today.get(alias, 0.0), "daily"),
            (
                f"models.{alias}.monthly_usd",
                model.monthly_usd,
                self.this_month.get(alias, 0.0),
                "monthly",
            ),
        )
        for key, limit, spent, period in checks:
            if limit is not None and spent >= limit:
                return Spent(key, limit, spent, next_reset(period, now), now)
        return self.global_spent(now)

    def global_spent(self, now: float | None = None) -> Spent | None:
        if not self.active:
            return None
        now = self.clock() if now is None else now
        self._roll(now)
        b = self.config.budget
        for key, limit, totals, period in (
            ("budget.daily_usd", b.daily_usd, self.today, "daily"),
            ("budget.monthly_usd", b.monthly_usd, self.this_month, "monthly"),
        ):
            total = sum(totals.values())
            if limit is not None and total >= limit:
                return Spent(key, limit, total, next_reset(period, now), now)
        return None


# ---------------------------------------------------------------------------------------------
# Affinity


def session_key(request: ChatRequest, headers: Mapping[str, str]) -> str:
    """The conversation a request belongs to: the client's `x-pirouter-session`, else a hash of
    its user agent, system prompt and first user message (what every later turn repeats)."""
    digest = hashlib.blake2b(digest_size=12)
    given = headers.get(SESSION_HEADER)
    if given:
        parts: tuple[str, ...] = ("header", given)
    else:
        system = "\n".join(m.text for m in request.messages if m.role == "system")
        first = next((m.text for m in request.messages if m.role == "user"), "")
        parts = (headers.get("user-agent", ""), system, first)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


class Sessions:
    """Session -> (model, last served), pruned past the soft window."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.cfg = config.affinity
        self.clock = clock
        self.last: dict[str, tuple[str, float]] = {}

    def pin(self, session: str) -> Pin | None:
        entry = self.last.get(session)
        if entry is None:
            return None
        age = self.clock() - entry[1]
        if age > self.cfg.soft_secs:
            del self.last[session]
            return None
        return Pin(entry[0], age, age <= self.cfg.hard_secs)

    def served(self, session: str, alias: str, at: float | None = None) -> None:
        self.last[session] = (alias, self.clock() if at is None else at)
        if len(self.last) > 50_000:  # bound memory: drop whatever is past the soft window
            cutoff = self.clock() - self.cfg.soft_secs
            self.last = {k: v for k, v in self.last.items() if v[1] >= cutoff}


# ---------------------------------------------------------------------------------------------
# Latency


class Latency:
    """Recent time to first token per model, in milliseconds."""

    def __init__(self) -> None:
        self.ttft: dict[str, float] = {}

    def observe(self, alias: str, ttft_ms: float) -> None:
        old = self.ttft.get(alias)
        self.ttft[alias] = ttft_ms if old is None else old + TTFT_WEIGHT * (ttft_ms - old)


# ---------------------------------------------------------------------------------------------
# All of it


class Traffic:
    """The live state the router consults (the `Live` protocol of policy.py) and the daemon
    updates as attempts start and requests finish."""

    def __init__(
        self,
        config: Config,
        health: Health | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.health = health
        self.limits = Limits(config, clock)
        self.budgets = Budgets(config, wall)
        self.sessions = Sessions(config, wall)
        self.latency = Latency()
        self.budget_action = config.budget.action

    def busy(self, alias: str, tokens: int) -> str | None:
        if self.health is not None and self.health.cooling(alias):
            return "cooling down after a failure"
        return self.limits.busy(alias, tokens)

    def spent(self, alias: str) -> Spent | None:
        return self.budgets.spent(alias)

    def ttft(self, alias: str) -> float | None:
        return self.latency.ttft.get(alias)

    def over_budget(self) -> Spent | None:
        return self.budgets.global_spent()

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: new limits and budgets; spend, sessions and latency carry on."""
        old = self.limits
        self.limits = Limits(config, old.clock)
        for mine, before in ((self.limits.rpm, old.rpm), (self.limits.tpm, old.tpm)):
            for alias, bucket in mine.items():
                kept = before.get(alias)
                if kept is not None and kept.capacity == bucket.capacity:
                    mine[alias] = kept
        self.config = self.budgets.config = config
        self.budgets.active = config.has_budgets
        self.sessions.cfg = config.affinity
        self.budget_action = config.budget.action

    def seed(self, seed: Mapping[str, Any]) -> None:
        """Start from the ledger (ledger.traffic_seed)."""
        self.budgets.seed(seed["spend"]["today"], seed["spend"]["month"])
        self.sessions.last.update(seed["sessions"])
        for alias, ms in seed["ttft"]:
            self.latency.observe(alias, ms)

    def finished(self, record: RequestRecord) -> None:
        """A request is done: spend, true up the token buckets, learn latency, pin its session."""
        estimated = record.estimated_tokens
        for attempt in record.attempts:
            model = self.config.models.get(attempt.alias)
            self.budgets.add(attempt.alias, attempt_cost(model, attempt))
            used = attempt.input_tokens + attempt.output_tokens
            if used:
                self.limits.settle(attempt.alias, estimated, used)
            if attempt.ttft_ms is not None:
                self.latency.observe(attempt.alias, attempt.ttft_ms)
        if record.session is not None and record.final is not None and record.status == "ok":
            self.sessions.served(record.session, record.final)
