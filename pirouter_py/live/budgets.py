"""Budgets: spend per model and in total, today and this month (local time).

Spend is seeded from the ledger at start and added to as requests finish. A model whose budget
(or, for priced models, the global budget) is spent is *spent*: `[budget] action` says whether the
router goes around it or refuses the request. The spend outlives a reload (`Spend` is shared by
the `Budgets` of every config); the limits come from the config in force. Clocks are parameters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pirouter_py.config import Config


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
class Spend:
    """USD spent per model today and this month; rolls over at local midnight."""

    clock: Callable[[], float] = time.time
    day: datetime = field(init=False)
    month: datetime = field(init=False)
    today: dict[str, float] = field(default_factory=dict)
    this_month: dict[str, float] = field(default_factory=dict)
    day_end: float = 0.0  # when the current day ends (a month ends with a day)
    # USD per client key (its name) today and this month, for [budget.clients.<name>]
    clients_today: dict[str, float] = field(default_factory=dict)
    clients_month: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.day, self.month = day_start(self.clock()), month_start(self.clock())
        self.roll(self.clock())

    def roll(self, now: float) -> None:
        if now < self.day_end:  # the request path: one comparison
            return
        day = day_start(now)
        if day != self.day:
            self.day, self.today, self.clients_today = day, {}, {}
        month = month_start(now)
        if month != self.month:
            self.month, self.this_month, self.clients_month = month, {}, {}
        self.day_end = next_reset("daily", now).timestamp()

    def seed(self, today: Mapping[str, float], this_month: Mapping[str, float]) -> None:
        self.today, self.this_month = dict(today), dict(this_month)

    def add(self, alias: str, usd: float) -> None:
        if usd <= 0:
            return
        self.roll(self.clock())
        self.today[alias] = self.today.get(alias, 0.0) + usd
        self.this_month[alias] = self.this_month.get(alias, 0.0) + usd

    def add_client(self, client: str, usd: float) -> None:
        if usd <= 0:
            return
        self.roll(self.clock())
        self.clients_today[client] = self.clients_today.get(client, 0.0) + usd
        self.clients_month[client] = self.clients_month.get(client, 0.0) + usd

    def seed_clients(self, today: Mapping[str, float], this_month: Mapping[str, float]) -> None:
        self.clients_today, self.clients_month = dict(today), dict(this_month)


class Budgets:
    """The configured budgets against the spend."""

    def __init__(self, config: Config, spend: Spend) -> None:
        self.config = config
        self.spend = spend
        self.active = config.has_budgets  # any budget configured at all

    @property
    def clock(self) -> Callable[[], float]:
        return self.spend.clock

    def spent(self, alias: str) -> Spent | None:
        """The budget that stops `alias` now, or None. A model with no price spends nothing, so
        no budget stops it."""
        if not self.active:
            return None
        model = self.config.models.get(alias)
        if model is None or model.cost <= 0:
            return None
        now = self.clock()
        self.spend.roll(now)
        checks = (
            (f"models.{alias}.daily_usd", model.daily_usd, self.spend.today, "daily"),
            (f"models.{alias}.monthly_usd", model.monthly_usd, self.spend.this_month, "monthly"),
        )
        for key, limit, totals, period in checks:
            spent = totals.get(alias, 0.0)
            if limit is not None and spent >= limit:
                return Spent(key, limit, spent, next_reset(period, now), now)
        return self.global_spent(now)

    def client_spent(self, client: str, alias: str) -> Spent | None:
        """The client's own budget, when it is spent and `alias` is priced; else None."""
        limits = self.config.budget.clients.get(client)
        model = self.config.models.get(alias)
        if limits is None or model is None or model.cost <= 0:
            return None
        now = self.clock()
        self.spend.roll(now)
        for period, limit, totals in (
            ("daily", limits.daily_usd, self.spend.clients_today),
            ("monthly", limits.monthly_usd, self.spend.clients_month),
        ):
            spent = totals.get(client, 0.0)
            if limit is not None and spent >= limit:
                key = f"budget.clients.{client}.{period}_usd"
                return Spent(key, limit, spent, next_reset(period, now), now)
        return None

    def global_spent(self, now: float | None = None) -> Spent | None:
        if not self.active:
            return None
        now = self.clock() if now is None else now
        self.spend.roll(now)
        b = self.config.budget
        for key, limit, totals, period in (
            ("budget.daily_usd", b.daily_usd, self.spend.today, "daily"),
            ("budget.monthly_usd", b.monthly_usd, self.spend.this_month, "monthly"),
        ):
            total = sum(totals.values())
            if limit is not None and total >= limit:
                return Spent(key, limit, total, next_reset(period, now), now)
        return None
