"""Prometheus metrics for `GET /metrics`, fed from each finished request's record.

A request only adds to plain dicts on the event loop (no locks, no prometheus objects); the
numbers become Prometheus metric families when `/metrics` is scraped, through a custom collector.
One registry per app, so tests can run several apps in one process. prometheus_client is imported
at the first scrape: a daemon nobody scrapes never loads it (~35 ms of start-up, 1 MiB).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pirouter_py.config import ModelConfig
from pirouter_py.ledger.pricing import attempt_cost
from pirouter_py.record import RequestRecord

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

__all__ = ["Metrics"]

# Upstream latency and time to first token, in seconds: from local models' tens of milliseconds
# to long cloud generations.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


@dataclass(slots=True)
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class Metrics:
    def __init__(
        self,
        *,
        in_flight: Callable[[], float],
        ledger_backlog: Callable[[], float],
        ledger_unsaved: Callable[[], float] = lambda: 0,
        shared_state: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.in_flight = in_flight
        self.ledger_backlog = ledger_backlog
        self.ledger_unsaved = ledger_unsaved
        self.shared_state = shared_state  # 1 or 0 with [state] url, None without
        self.requests: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        self.attempts: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.tokens: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.cost: defaultdict[str, float] = defaultdict(float)
        self.latency: dict[str, _Histogram] = {}
        self.ttft: dict[str, _Histogram] = {}
        self.overhead = _Histogram(OVERHEAD_BUCKETS)
        self.registry: CollectorRegistry | None = None  # made at the first scrape

    def observe(self, record: RequestRecord, models: Mapping[str, ModelConfig]) -> None:
        """A finished request, priced with the catalog it was served under."""
        self.requests[(record.rule or "", record.final or "", record.status, record.protocol)] += 1
        self.overhead.observe(max(0.0, record.overhead_ms) / 1000)
        for a in record.attempts:
            self.attempts[(a.alias, a.provider, a.outcome)] += 1
            hist = self.latency.get(a.alias) or self.latency.setdefault(
                a.alias, _Histogram(BUCKETS)
            )
            hist.observe(a.latency_ms / 1000)
            if a.ttft_ms is not None:
                self.ttft.setdefault(a.alias, _Histogram(BUCKETS)).observe(a.ttft_ms / 1000)
            if a.input_tokens:
                self.tokens[(a.alias, "input")] += a.input_tokens
            if a.output_tokens:
                self.tokens[(a.alias, "output")] += a.output_tokens
            cost = attempt_cost(models.get(a.alias), a)
            if cost:
                self.cost[a.alias] += cost

    def collect(self) -> Iterator[Metric]:
        """Called by the registry at each scrape."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        counters: tuple[tuple[str, str, list[str], Mapping[Any, float]], ...] = (
            (
                "pirouter_requests",
                "Requests routed, by rule, answering model, status and client protocol.",
                ["rule", "model", "status", "protocol"],
                self.requests,
            ),
            (
                "pirouter_attempts",
                "Models tried, by alias, provider and outcome.",
                ["alias", "provider", "outcome"],
                self.attempts,
            ),
            (
                "pirouter_tokens",
                "Tokens, by alias and direction (input or output).",
                ["alias", "direction"],
                self.tokens,
            ),
            (
                "pirouter_cost_usd",
                "Cost in USD, priced by alias.",
                ["alias"],
                {(alias,): cost for alias, cost in self.cost.items()},
            ),
        )
        for name, doc, labels, values in counters:
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, value in values.items():
                family.add_metric(list(key), value)
            yield family
        for name, doc, hists in (
            (
                "pirouter_upstream_latency_seconds",
                "Time an upstream took for one attempt.",
                self.latency,
            ),
            (
                "pirouter_time_to_first_token_seconds",
                "Time to the first streamed event of an attempt.",
                self.ttft,
            ),
        ):
            histogram = HistogramMetricFamily(name, doc, labels=["alias"])
            for alias, hist in hists.items():
                histogram.add_metric([alias], hist.buckets(), hist.total)
            yield histogram
        overhead = HistogramMetricFamily(
            "pirouter_overhead_seconds", "Time spent in pirouter itself per request."
        )
        if self.overhead.counts:
            overhead.add_metric([], self.overhead.buckets(), self.overhead.total)
        yield overhead
        yield GaugeMetricFamily(
            "pirouter_in_flight_requests", "Requests being served now.", value=self.in_flight()
        )
        yield GaugeMetricFamily(
            "pirouter_ledger_backlog",
            "Ledger rows waiting to be written.",
            value=self.ledger_backlog(),
        )
        yield GaugeMetricFamily(
            "pirouter_ledger_unsaved_rows",
            "Answered rows on no disk (the journal and its reserve were full): a stop now would "
            "lose them.",
            value=self.ledger_unsaved(),
        )
        if (reachable := self.shared_state()) is not None:
            yield GaugeMetricFamily(
                "pirouter_shared_state_reachable",
                "1 while Redis ([state] url) answers; 0 while this instance uses its own state.",
                value=reachable,
            )

    def render(self) -> tuple[bytes, str]:
        """The exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.registry is None:
            self.registry = CollectorRegistry(auto_describe=False)
            self.registry.register(self)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
