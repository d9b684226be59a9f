"""What the daemon learns from its own traffic and feeds back into routing, for one config.

`Traffic` is the `Live` view the router consults (policy.py): health and cooldowns, rpm/tpm
limits, budgets, sessions, latency. A reload does not change it: `reconfigured()` makes a new one
for the new config that shares everything learned (spend, session pins, latency, health, the
buckets whose capacity is unchanged), and the server swaps it in with the config and cascade as
one snapshot. A request in flight keeps the view it started with. Clocks are parameters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from pirouter_py.config import Config
from pirouter_py.ledger.pricing import attempt_cost
from pirouter_py.live.budgets import Budgets, Spend, Spent
from pirouter_py.live.health import Health
from pirouter_py.live.latency import Latency
from pirouter_py.live.limits import Limits
from pirouter_py.live.sessions import Sessions
from pirouter_py.record import RequestRecord


class Traffic:
    """The live state the router consults and the daemon updates as attempts start and requests
    finish."""

    def __init__(
        self,
        config: Config,
        health: Health | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        *,
        limits: Limits | None = None,
        spend: Spend | None = None,
        sessions: dict[str, tuple[str, float]] | None = None,
        latency: Latency | None = None,
    ) -> None:
        self.config = config
        self.health = health
        self.limits = Limits(config, clock) if limits is None else limits
        self.budgets = Budgets(config, Spend(wall) if spend is None else spend)
        self.sessions = Sessions(config.affinity, wall, sessions)
        self.latency = Latency() if latency is None else latency
        self.budget_action = config.budget.action

    def reconfigured(self, config: Config) -> Traffic:
        """The view for a reloaded config: new limits and budgets; what was learned carries on."""
        return Traffic(
            config,
            self.health,
            self.limits.clock,
            self.sessions.clock,
            limits=self.limits.carried(config),
            spend=self.budgets.spend,
            sessions=self.sessions.last,
            latency=self.latency,
        )

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

    def seed(
        self,
        today: Mapping[str, float],
        month: Mapping[str, float],
        sessions: Mapping[str, tuple[str, float]],
        ttft: Sequence[tuple[str, float]],
    ) -> None:
        """Start from what the ledger knows (ledger.read.traffic_seed): spend per model today and
        this month, each session's last model and time, recent times to first token."""
        self.budgets.spend.seed(today, month)
        self.sessions.last.update(sessions)
        for alias, ms in ttft:
            self.latency.observe(alias, ms)

    def finished(self, record: RequestRecord) -> None:
        """A request is done: spend, true up the token buckets, learn latency, pin its session."""
        estimated = record.estimated_tokens
        for attempt in record.attempts:
            model = self.config.models.get(attempt.alias)
            self.budgets.spend.add(attempt.alias, attempt_cost(model, attempt))
            used = attempt.input_tokens + attempt.output_tokens
            if used:
                self.limits.settle(attempt.alias, estimated, used)
            if attempt.ttft_ms is not None:
                self.latency.observe(attempt.alias, attempt.ttft_ms)
        if record.session is not None and record.final is not None and record.status == "ok":
            self.sessions.served(record.session, record.final)
