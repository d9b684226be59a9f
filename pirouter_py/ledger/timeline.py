"""The dashboard's time series, per hour and model, read from the hourly rollups (rollups.py).

Only hours that are rolled up and not dirty (`rollups.READY`) are read here; the caller reads the
rows of the others in the same read transaction and sums them the same way (reports/timeline.py).
"""

from __future__ import annotations

from typing import Any

import orjson

from pirouter_py.ledger.db import Connection
from pirouter_py.ledger.rollups import READY

# one row per (hour, model, status): requests, escalated, cost, and the answers' tokens
SUMS = (
    "SUM(requests), SUM(escalated), SUM(cost_usd), "
    "SUM(answer_uncached), SUM(answer_read), SUM(answer_write), SUM(answer_output)"
)


def hourly(
    db: Connection, first: int, last: int
) -> tuple[list[tuple[Any, ...]], list[tuple[int, str, str, dict[int, int]]]]:
    """(hour, model, status, requests, escalated, cost, answer uncached / read / write /
    output tokens) of the ready hours in first..last, and their (hour, model, kind, bucket
    counts) of latency, time to first token and overhead."""
    bounds = {"first": first, "last": last}
    sums = db.execute(
        f"SELECT hour, model, status, {SUMS} FROM rollup WHERE {READY} "
        "GROUP BY hour, model, status",
        bounds,
    ).fetchall()
    times = [
        (int(hour), str(model), str(kind), {int(b): int(n) for b, n in orjson.loads(c).items()})
        for hour, model, kind, c in db.execute(
            f"SELECT hour, model, kind, counts FROM rollup_times WHERE {READY}", bounds
        )
    ]
    return [tuple(s) for s in sums], times
