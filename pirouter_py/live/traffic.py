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
from typing import Any

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
        self.shared: Any = None  # live.shared.Shared with [state] url: told of spend and pins

    def reconfigured(self, config: Config) -> Traffic:
        """The view for a reloaded config: new limits and budgets; what was learned carries on."""
        carried = Traffic(
            config,
            self.health,
            self.limits.clock,
            self.sessions.clock,
            limits=self.limits.carried(config),
            spend=self.budgets.spend,
            sessions=self.sessions.last,
            latency=self.latency,
        )
        carried.shared = self.shared
        return carried

    def busy(self, alias: str, tokens: int) -> str | None:
        if self.health is not None and self.health.cooling(alias):
            return "cooling down after a failure"
        return self.limits.busy(alias, tokens)

    def spent(self, alias: str) -> Spent | None:
        return self.budgets.spent(alias)

    def for_client(self, client: str | None) -> Traffic:
        """The view one client's requests are routed with: its own budget counts too, when
        `[budget.clients]` sets one for it."""
        if client is None or client not in self.config.budget.clients:
            return self
        return _ClientView(self, client)

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
            usd = attempt_cost(model, attempt)
            self.budgets.spend.add(attempt.alias, usd)
            if record.client is not None:
                self.budgets.spend.add_client(record.client, usd)
            if self.shared is not None:
                self.shared.spend(attempt.alias, record.client, usd)
            used = attempt.input_tokens + attempt.output_tokens
            if used:
                self.limits.settle(attempt.alias, estimated, used)
            if attempt.ttft_ms is not None:
                self.latency.observe(attempt.alias, attempt.ttft_ms)
        if record.session is not None and record.final is not None and record.status == "ok":
            self.sessions.served(record.session, record.final)
            if self.shared is not None:
                self.shared.pinned(record.session, record.final)


class _ClientView(Traffic):
    """Traffic as one client with a budget of its own sees it: a priced model is spent when the
    client's budget is, besides the model's and the global ones."""

    def __init__(self, traffic: Traffic, client: str) -> None:  # shares all of its state
        self.__dict__.update(traffic.__dict__)
        self.client = client

    def spent(self, alias: str) -> Spent | None:
        return self.budgets.spent(alias) or self.budgets.client_spent(self.client, alias)
