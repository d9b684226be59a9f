"""The dashboard's reads on PostgreSQL: the requests table's filters (ledger/search.py) and the
time series from hourly rollups (ledger/timeline.py, reports/timeline.py) find the same rows and
draw the same lines from a PostgreSQL ledger as from a SQLite one holding the same rows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pirouter_py.config import load_config
from pirouter_py.ledger import rollups, search, timeline
from pirouter_py.ledger import rows as ledger_rows
from pirouter_py.reports import timeline as charts
from pirouter_py.reports.stats import choose_baseline
from tests.conftest import need
from tests.pgserver import PostgresServer, binaries
from tests.test_dashboard import records
from tests.test_postgres import both, write_config

pytestmark = need("PostgreSQL", binaries(), "apt-get install postgresql (only its binaries run)")

FILTERS = (
    search.Filters(),
    search.Filters(status="escalated"),
    search.Filters(status="ok", model="cheap"),
    search.Filters(status="failed", protocol="anthropic"),
    search.Filters(rule="coding", client="alice"),
    search.Filters(client="(no key)"),
    search.Filters(q="100%_!"),  # wildcards searched as text; no prompts kept: nothing
)


def test_filters_and_series_read_the_same_from_postgresql_and_sqlite(tmp_path: Path) -> None:
    server = PostgresServer().start()
    try:
        lite, post = both(tmp_path, server)
        config = load_config(write_config(tmp_path / "c", "http://127.0.0.1:9", None)).config
        now = time.time()
        made = records(300, now - 3 * 86_400, 3 * 86_400 / 300)
        for db in (lite, post):
            ledger_rows.write_batch(db, made, config.models)
            db.execute(
                "INSERT INTO feedback (request_id, ts, score, comment, source) "
                "VALUES (?, ?, ?, ?, ?)",
                ("gen-010", now, 0.0, None, "http"),
            )
            assert rollups.catch_up(db, now, budget_s=600) == 0
        for filters in FILTERS:
            found = {
                name: [
                    (r["id"], r["feedback"]) for r in search.find(db, filters, since=0, limit=40)
                ]
                for name, db in (("lite", lite), ("post", post))
            }
            assert found["post"] == found["lite"], filters
            assert filters.q or found["lite"], filters
        assert ("gen-010", 0.0) in [
            (r["id"], r["feedback"]) for r in search.find(post, FILTERS[0], since=0, limit=300)
        ]
        first, last = int(now - 3 * 86_400) // rollups.HOUR, int(now) // rollups.HOUR
        lines = {}
        for name, db in (("lite", lite), ("post", post)):
            hours, times = timeline.hourly(db, first, last)
            assert hours and times
            lines[name] = charts.series(
                hours,
                times,
                [],
                since=now - 3 * 86_400,
                until=now,
                minutes=False,
                baseline=choose_baseline(config),
            )
        assert lines["post"]["lines"][0]["requests"] == lines["lite"]["lines"][0]["requests"]
        for mine, theirs in zip(lines["post"]["lines"], lines["lite"]["lines"], strict=True):
            assert mine["model"] == theirs["model"]
            for key in ("requests", "errors", "escalated", "p95_ms", "ttft_p50_ms"):
                assert mine[key] == theirs[key], (mine["model"], key)
            assert mine["cost_usd"] == pytest.approx(theirs["cost_usd"])
        for db in (lite, post):
            db.close()
    finally:
        server.stop()
