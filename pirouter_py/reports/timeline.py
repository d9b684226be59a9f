"""The dashboard's charts: requests, errors, escalations, latency and time-to-first-token
percentiles, spend and what the baseline model would have cost, per time step and per model.
Pure: hourly rollups (ledger/timeline.py) and request rows in, the `/ui/api/series` body out.

Steps are whole minutes (the 1 h window, read from rows) or whole hours (longer windows, read
from rollups where they are ready and from rows elsewhere). Percentiles are read from the
rollups' fine buckets for both, so a step's p95 is the same whichever way it was read (at most 5%
above the exact one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pirouter_py.ledger import rollups
from pirouter_py.ledger.pricing import cost
from pirouter_py.reports.dashboard_api import SeriesBody, SeriesLine
from pirouter_py.reports.stats import NO_ANSWER, Baseline, _answer, _escalated

ALL = "all"  # the line of every model together
MAX_STEPS = 24 * 40  # a `since` window longer than 40 days is drawn in steps of whole days


class _Line:
    def __init__(self, n: int) -> None:
        self.requests, self.errors, self.escalated = [0] * n, [0] * n, [0] * n
        self.cost, self.base = [0.0] * n, [0.0] * n
        self.times: dict[str, list[dict[int, int]]] = {
            kind: [{} for _ in range(n)] for kind in ("latency", "ttft")
        }

    def add(self, i: int, sums: Sequence[float], error: bool, base: float) -> None:
        self.requests[i] += int(sums[0])
        self.escalated[i] += int(sums[1])
        self.cost[i] += float(sums[2])
        self.errors[i] += int(sums[0]) if error else 0
        self.base[i] += base

    def count(self, i: int, kind: str, counts: Mapping[int, int]) -> None:
        if kind in self.times:
            into = self.times[kind][i]
            for b, n in counts.items():
                into[b] = into.get(b, 0) + n

    def shape(self, model: str, baseline: bool) -> SeriesLine:
        def q(kind: str, at: float) -> list[float | None]:
            return [rollups.percentile(c, at) for c in self.times[kind]]

        return {
            "model": model,
            "requests": self.requests,
            "errors": self.errors,
            "escalated": self.escalated,
            "cost_usd": [round(v, 10) for v in self.cost],
            "baseline_usd": [round(v, 10) for v in self.base] if baseline else None,
            "p50_ms": q("latency", 0.50),
            "p95_ms": q("latency", 0.95),
            "ttft_p50_ms": q("ttft", 0.50),
            "ttft_p95_ms": q("ttft", 0.95),
        }


def steps(since: float, until: float, minutes: bool) -> tuple[float, int, int]:
    """(the first step's start, the step in seconds, how many steps) across since..until."""
    step = 60 if minutes else rollups.HOUR
    start = math.floor(since / step) * step
    n = max(1, math.ceil((until - start) / step))
    while n > MAX_STEPS:  # a very long `since`: days
        step *= 24
        start = math.floor(since / step) * step
        n = max(1, math.ceil((until - start) / step))
    return start, step, n


def _baseline_usd(baseline: Baseline | None, answer: Sequence[float]) -> float:
    if baseline is None:
        return 0.0
    uncached, read, write, output = (int(v) for v in answer)
    return cost(baseline.model, uncached + read + write, output, read, write)


def series(
    hours: Iterable[Sequence[Any]],
    hour_times: Iterable[tuple[int, str, str, Mapping[int, int]]],
    rows: Iterable[Mapping[str, Any]],
    *,
    since: float,
    until: float,
    minutes: bool,
    baseline: Baseline | None,
) -> SeriesBody:
    """Every model's line (and `all`, first), per step, from rollups' hours and rows."""
    start, step, n = steps(since, until, minutes)
    lines: dict[str, _Line] = {ALL: _Line(n)}

    def at(ts: float) -> int:
        return min(n - 1, max(0, int((ts - start) // step)))

    for hour, model, status, *sums in hours:
        i, name = at(int(hour) * rollups.HOUR), str(model or NO_ANSWER)
        base = _baseline_usd(baseline, sums[3:7])
        for line in (lines[ALL], lines.setdefault(name, _Line(n))):
            line.add(i, sums[:3], status != "ok", base)
    for hour, model, kind, counts in hour_times:
        i, name = at(hour * rollups.HOUR), str(model or NO_ANSWER)
        for line in (lines[ALL], lines.setdefault(name, _Line(n))):
            line.count(i, kind, counts)
    for row in rows:
        i, name = at(float(row["ts"])), str(row.get("final_model") or NO_ANSWER)
        ok = row["status"] == "ok"
        answer = _answer(row) if ok else None
        tokens: tuple[int, ...] = (0, 0, 0, 0)
        if answer is not None:
            read = int(answer.get("cache_read_tokens") or 0)
            write = int(answer.get("cache_write_tokens") or 0)
            uncached = max(0, int(answer.get("input_tokens") or 0) - read - write)
            tokens = (uncached, read, write, int(answer.get("output_tokens") or 0))
        base = _baseline_usd(baseline, tokens)
        counted = (1, int(_escalated(row)), float(row["cost_usd"]))
        for line in (lines[ALL], lines.setdefault(name, _Line(n))):
            line.add(i, counted, not ok, base)
            for kind, column in (("latency", "latency_ms"), ("ttft", "ttft_ms")):
                if row.get(column) is not None:
                    line.count(i, kind, {rollups.bucket(float(row[column])): 1})
    ordered = [ALL, *sorted((m for m in lines if m != ALL), key=lambda m: -sum(lines[m].requests))]
    return {
        "start": start,
        "step_s": step,
        "until": until,
        "baseline": baseline.alias if baseline is not None else None,
        "lines": [lines[m].shape(m, baseline is not None) for m in ordered],
    }
