"""Hourly rollups of the ledger: what the dashboard reads for a long window instead of its rows.

A 30-day window of a busy ledger is a million rows; read and summed in Python that is a minute
and gigabytes. The rollups hold, per hour, the sums the page shows: requests, escalations,
errors, tokens and spend per (model, rule, client, protocol, status); the answers' tokens (what
the baseline model would have cost); latency, time-to-first-token and overhead histograms per
model; and escalation moves (from model, to model, why). Read for 30 days they are a few
thousand rows.

How they stay true to the rows, without a cost on the request path:
- `write_rows` marks the hours of the rows it wrote dirty (`rollup_dirty`, in the same
  transaction, whatever the way in: the writer, a journal or a spill import);
- the writer, between batches, recomputes dirty hours that have ended, each in one SQL pass over
  that hour's rows (`catch_up`), in the transaction that clears the mark (first: with several
  instances writing one PostgreSQL ledger, a mark set meanwhile survives it);
- a reader uses rollups only for hours that are computed and not dirty (`read`), in one read
  transaction with the rows, and reads the other hours' rows itself;
- `prune` cuts rollups with the rows (`prune`).

Histograms count into fine buckets (`EDGES`: about 5% apart, plus the 1-2-5 edges the page
draws), so percentiles read from them are the upper edge of the bucket holding the exact value:
at most 5% above it. Requests, tokens, spend, escalations and errors are exact.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pirouter_py.ledger.db import Connection, has_table

HOUR = 3_600
# the edges the page draws (1, 2, 5, 10 ... 100 s) and ~5% steps from 0.1 ms to ~3 hours
COARSE = tuple(float(m * 10**e) for e in range(0, 6) for m in (1, 2, 5))
EDGES: tuple[float, ...] = tuple(
    sorted({round(0.1 * 10 ** (k / 48), 4) for k in range(8 * 48 + 1)} | set(COARSE))
)
OVER = len(EDGES)  # the bucket of values above the last edge
CATCH_UP_S = 0.2  # the longest a catch-up step keeps the writer (it goes on after the next batch)

TABLES = """
CREATE TABLE IF NOT EXISTS rollup (
    hour            INTEGER NOT NULL,
    model           TEXT NOT NULL,
    rule            TEXT NOT NULL,
    client          TEXT NOT NULL,
    key_name        TEXT NOT NULL,
    protocol        TEXT NOT NULL,
    status          TEXT NOT NULL,
    requests        INTEGER NOT NULL,
    escalated       INTEGER NOT NULL,
    input_tokens    INTEGER NOT NULL,
    output_tokens   INTEGER NOT NULL,
    cost_usd        REAL NOT NULL,
    answer_uncached INTEGER NOT NULL,
    answer_read     INTEGER NOT NULL,
    answer_write    INTEGER NOT NULL,
    answer_output   INTEGER NOT NULL,
    PRIMARY KEY (hour, model, rule, client, key_name, protocol, status)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_times (
    hour    INTEGER NOT NULL,
    model   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    counts  TEXT NOT NULL,
    PRIMARY KEY (hour, model, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_flow (
    hour      INTEGER NOT NULL,
    src       TEXT NOT NULL,
    dst       TEXT NOT NULL,
    why       TEXT NOT NULL,
    requests  INTEGER NOT NULL,
    PRIMARY KEY (hour, src, dst, why)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_edges (i INTEGER PRIMARY KEY, ms REAL NOT NULL);
CREATE INDEX IF NOT EXISTS idx_rollup_edges_ms ON rollup_edges(ms);
CREATE TABLE IF NOT EXISTS rollup_dirty (hour INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS rollup_done (hour INTEGER PRIMARY KEY)
"""


def create(db: Connection) -> None:
    """The tables (migration 012), and every hour already in the ledger marked dirty."""
    for statement in filter(str.strip, TABLES.split(";")):
        db.execute(statement)
    db.execute("DELETE FROM rollup_edges")
    db.executemany("INSERT INTO rollup_edges VALUES (?, ?)", enumerate(EDGES))
    db.execute(
        f"INSERT OR IGNORE INTO rollup_dirty SELECT DISTINCT CAST(ts AS INTEGER) / {HOUR} "
        "FROM requests"
    )


def recreate(db: Connection) -> None:
    """The rollup tables dropped and made anew (a new dimension), every hour marked dirty."""
    for table in ("rollup", "rollup_times", "rollup_flow", "rollup_done", "rollup_dirty"):
        db.execute(f"DROP TABLE IF EXISTS {table}")
    create(db)


def bucket(ms: float) -> int:
    """The histogram bucket of a time in ms: the first edge at or above it."""
    return bisect.bisect_left(EDGES, ms)


def percentile(counts: Mapping[int, int], q: float) -> float | None:
    """Nearest-rank percentile from bucket counts: the upper edge of its bucket."""
    n = sum(counts.values())
    if not n:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for b in sorted(counts):
        seen += counts[b]
        if seen >= rank:
            return EDGES[min(b, OVER - 1)]
    return EDGES[-1]


# A user agent's product name, as reports.dashboard.client_name has it, in SQL.
_FIRST = "COALESCE(user_agent, '')"
_PRODUCT = f"CASE WHEN instr({_FIRST}, '/') > 0 THEN substr({_FIRST}, 1, instr({_FIRST}, '/') - 1) ELSE {_FIRST} END"  # noqa: E501
_NAME = f"CASE WHEN instr({_PRODUCT}, ' ') > 0 THEN substr({_PRODUCT}, 1, instr({_PRODUCT}, ' ') - 1) ELSE {_PRODUCT} END"  # noqa: E501
CLIENT = f"COALESCE(NULLIF({_NAME}, ''), '(none)')"

_RECOMPUTE = f"""
WITH r AS (  -- "r CROSS JOIN attempts": the hour's rows first, never a scan of every attempt
    SELECT id, final_model AS model, COALESCE(route_rule, '') AS rule, {CLIENT} AS agent,
           COALESCE(requests.client, '') AS key_name, COALESCE(protocol, '') AS protocol, status,
           input_tokens, output_tokens, cost_usd
    FROM requests WHERE ts >= :lo AND ts < :hi
),
esc AS (
    SELECT DISTINCT a.request_id FROM r CROSS JOIN attempts a ON a.request_id = r.id
    WHERE a.outcome LIKE 'escalated!_%' ESCAPE '!'
),
ans AS (
    SELECT a.request_id, a.input_tokens, a.output_tokens, a.cache_read_tokens,
           a.cache_write_tokens,
           ROW_NUMBER() OVER (PARTITION BY a.request_id ORDER BY a.returned DESC, a.idx DESC) AS n
    FROM r CROSS JOIN attempts a ON a.request_id = r.id
    WHERE r.status = 'ok' AND (a.returned = 1 OR a.outcome = 'ok')
)
INSERT INTO rollup
SELECT :hour, model, rule, agent, key_name, protocol, status, COUNT(*), COUNT(esc.request_id),
       SUM(r.input_tokens), SUM(r.output_tokens), SUM(r.cost_usd),
       COALESCE(SUM(MAX(0, ans.input_tokens - ans.cache_read_tokens - ans.cache_write_tokens)), 0),
       COALESCE(SUM(ans.cache_read_tokens), 0), COALESCE(SUM(ans.cache_write_tokens), 0),
       COALESCE(SUM(ans.output_tokens), 0)
FROM r LEFT JOIN esc ON esc.request_id = r.id
       LEFT JOIN ans ON ans.request_id = r.id AND ans.n = 1
GROUP BY model, rule, agent, key_name, protocol, status
"""


def _times(column: str, kind: str) -> str:
    found = f"(SELECT i FROM rollup_edges WHERE ms >= {column} ORDER BY ms LIMIT 1)"
    return f"""
INSERT INTO rollup_times
SELECT :hour, model, '{kind}', json_group_object(b, n) FROM (
    SELECT model, b, COUNT(*) AS n FROM (
        SELECT final_model AS model, COALESCE({found}, {OVER}) AS b FROM requests
        WHERE ts >= :lo AND ts < :hi AND {column} IS NOT NULL
    ) AS timed GROUP BY model, b
) AS counted GROUP BY model
"""


TIMES = {"latency": "latency_ms", "ttft": "ttft_ms", "overhead": "overhead_ms"}
_RECOMPUTE_TIMES = tuple(_times(column, kind) for kind, column in TIMES.items())
_RECOMPUTE_FLOW = """
INSERT INTO rollup_flow
SELECT :hour, p.alias, a.alias, p.outcome, COUNT(*)
FROM requests r JOIN attempts a ON a.request_id = r.id
     JOIN attempts p ON p.request_id = a.request_id AND p.idx = a.idx - 1
WHERE r.ts >= :lo AND r.ts < :hi
GROUP BY p.alias, a.alias, p.outcome
"""


def recompute(db: Connection, hour: int) -> None:
    """One hour's rollups from its rows (the caller holds a transaction, and has taken the
    hour's dirty mark)."""
    for table in ("rollup", "rollup_times", "rollup_flow"):
        db.execute(f"DELETE FROM {table} WHERE hour = ?", (hour,))
    bounds = {"hour": hour, "lo": hour * HOUR, "hi": (hour + 1) * HOUR}
    for statement in (_RECOMPUTE, *_RECOMPUTE_TIMES, _RECOMPUTE_FLOW):
        db.execute(statement, bounds)
    db.execute("INSERT OR IGNORE INTO rollup_done VALUES (?)", (hour,))


def mark(db: Connection, times: Iterable[float]) -> None:
    """Mark the hours of rows just written dirty (in the writer's transaction). A mark already
    there is written again, not left: on PostgreSQL that holds it until this transaction ends,
    so a roll-up taking it meanwhile waits, and then reads these rows."""
    hours = {int(ts) // HOUR for ts in times}
    db.executemany(
        "INSERT INTO rollup_dirty VALUES (?) ON CONFLICT (hour) DO UPDATE SET hour = excluded.hour",
        [(h,) for h in hours],
    )


def catch_up(db: Connection, now: float, budget_s: float = CATCH_UP_S) -> int:
    """Recompute dirty hours that have ended, newest first, for about `budget_s`; returns how
    many are left. Each hour is its own transaction."""
    current = int(now) // HOUR
    query = "SELECT hour FROM rollup_dirty WHERE hour < ? ORDER BY hour DESC"
    waiting = [h for (h,) in db.execute(query, (current,))]
    deadline = time.monotonic() + budget_s
    for done, hour in enumerate(waiting):
        if time.monotonic() > deadline:
            return len(waiting) - done
        db.execute("BEGIN")
        try:
            # The mark is taken first: on PostgreSQL, another instance's writer marking the
            # hour now waits for this transaction and marks it again after it (its rows may be
            # newer than what this reads); another instance rolling the same hour up waits, and
            # finds no mark left to take.
            if db.execute("DELETE FROM rollup_dirty WHERE hour = ?", (hour,)).rowcount:
                recompute(db, hour)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return 0


def prune(db: Connection, cutoff: int) -> None:
    """Drop the rollups of hours before `cutoff`'s and mark its hour dirty (the caller has
    deleted the rows before `cutoff` in its transaction)."""
    hour = cutoff // HOUR
    for table in ("rollup", "rollup_times", "rollup_flow", "rollup_done", "rollup_dirty"):
        db.execute(f"DELETE FROM {table} WHERE hour < ?", (hour,))
    db.execute("INSERT OR IGNORE INTO rollup_dirty VALUES (?)", (hour,))


def has(db: Connection) -> bool:
    return has_table(db, "rollup_done")


READY = (
    "hour >= :first AND hour <= :last AND hour IN (SELECT hour FROM rollup_done) "
    "AND hour NOT IN (SELECT hour FROM rollup_dirty)"
)


def ready_hours(db: Connection, first: int, last: int) -> list[int]:
    """Hours in first..last whose rollups are computed and not dirty, in order."""
    query = f"SELECT hour FROM rollup_done WHERE {READY} ORDER BY hour"
    return [h for (h,) in db.execute(query, {"first": first, "last": last})]


def read(db: Connection, first: int, last: int) -> dict[str, Any]:
    """The rollups of the ready hours in first..last (`ready_hours`), summed for the page:
    `groups` per (model, rule, client, key name, protocol, status), `series` per (hour, status),
    `times`
    per (model, kind) as bucket counts, `flow` per (from, to, why). The caller holds a read
    transaction, so the rows it reads for the other hours are of the same moment."""
    bounds = {"first": first, "last": last}
    sums = (
        "SUM(requests), SUM(escalated), SUM(input_tokens), SUM(output_tokens), SUM(cost_usd), "
        "SUM(answer_uncached), SUM(answer_read), SUM(answer_write), SUM(answer_output)"
    )
    groups = db.execute(
        f"SELECT model, rule, client, key_name, protocol, status, {sums} FROM rollup "
        f"WHERE {READY} GROUP BY model, rule, client, key_name, protocol, status",
        bounds,
    ).fetchall()
    series = db.execute(
        f"SELECT hour, status, {sums} FROM rollup WHERE {READY} GROUP BY hour, status", bounds
    ).fetchall()
    times: dict[tuple[str, str], dict[int, int]] = {}
    query = f"SELECT model, kind, counts FROM rollup_times WHERE {READY}"
    for model, kind, counts in db.execute(query, bounds):
        into = times.setdefault((model, kind), {})
        for b, n in orjson.loads(counts).items():
            into[int(b)] = into.get(int(b), 0) + n
    flow = db.execute(
        f"SELECT src, dst, why, SUM(requests) FROM rollup_flow WHERE {READY} "
        "GROUP BY src, dst, why",
        bounds,
    ).fetchall()
    return {
        "groups": [tuple(g) for g in groups],
        "series": [tuple(s) for s in series],
        "times": times,
        "flow": [tuple(f) for f in flow],
    }
