"""Prometheus metrics for `GET /metrics`, fed from each finished request's record.

One registry per app (tests run several apps in a process). Label children are looked up once
and kept, so a request costs a few dict lookups and increments, not prometheus_client's locked
label resolution each time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pirouter_py.config import ModelConfig
from pirouter_py.ledger import attempt_cost
from pirouter_py.record import RequestRecord

__all__ = ["CONTENT_TYPE", "Metrics"]

# Upstream latency and time to first token, in seconds: from local models' tens of milliseconds
# to long cloud generations.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        *,
        in_flight: Callable[[], float],
        ledger_backlog: Callable[[], float],
    ) -> None:
        self.models = models
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "pirouter_requests",
            "Requests routed, by rule, answering model, status and client protocol.",
            ["rule", "model", "status", "protocol"],
            registry=r,
        )
        self.attempts = Counter(
            "pirouter_attempts",
            "Models tried, by alias, provider and outcome.",
            ["alias", "provider", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "pirouter_upstream_latency_seconds",
            "Time an upstream took for one attempt.",
            ["alias"],
            buckets=BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "pirouter_time_to_first_token_seconds",
            "Time to the first streamed event of an attempt.",
            ["alias"],
            buckets=BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "pirouter_tokens",
            "Tokens, by alias and direction (input or output).",
            ["alias", "direction"],
            registry=r,
        )
        self.cost = Counter(
            "pirouter_cost_usd", "Cost in USD, priced by alias.", ["alias"], registry=r
        )
        self.overhead = Histogram(
            "pirouter_overhead_seconds",
            "Time spent in pirouter itself per request.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            registry=r,
        )
        Gauge("pirouter_in_flight_requests", "Requests being served now.", registry=r).set_function(
            in_flight
        )
        Gauge(
            "pirouter_ledger_backlog", "Ledger rows waiting to be written.", registry=r
        ).set_function(ledger_backlog)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, record: RequestRecord) -> None:
        self._child(
            self.requests, record.rule or "", record.final or "", record.status, record.protocol
        ).inc()
        self.overhead.observe(max(0.0, record.overhead_ms) / 1000)
        for a in record.attempts:
            self._child(self.attempts, a.alias, a.provider, a.outcome).inc()
            self._child(self.latency, a.alias).observe(a.latency_ms / 1000)
            if a.ttft_ms is not None:
                self._child(self.ttft, a.alias).observe(a.ttft_ms / 1000)
            if a.input_tokens:
                self._child(self.tokens, a.alias, "input").inc(a.input_tokens)
            if a.output_tokens:
                self._child(self.tokens, a.alias, "output").inc(a.output_tokens)
            cost = attempt_cost(self.models.get(a.alias), a)
            if cost:
                self._child(self.cost, a.alias).inc(cost)

    def render(self) -> bytes:
        return generate_latest(self.registry)
