"""Reading the ledger: read-only queries for the CLI's reports and the daemon's start.

They work while a daemon writes (WAL; PostgreSQL). A v0.1 file (no attempts table) reads too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pirouter_py.ledger.db import Connection, Postgres, columns, has_table


def open_read_only(path: Path, url: str | None = None) -> Connection | None:
    """A read-only connection (to the PostgreSQL database at `url` when given, else to the
    SQLite file at `path`), or None when there is no ledger yet."""
    if url is not None:
        pg = Postgres(url, read_only=True)
        if not has_table(pg, "requests"):
            pg.close()
            return None
        return pg
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    db.row_factory = sqlite3.Row
    return db


@dataclass(frozen=True, slots=True)
class Seed:
    """What the daemon's live state starts from."""

    today: dict[str, float]  # USD per model since the day began
    month: dict[str, float]  # likewise since the month began
    sessions: dict[str, tuple[str, float]]  # session -> (the model that last served it, when)
    ttft: list[tuple[str, float]]  # recent (alias, time to first token in ms), oldest first


def _totals_since(db: Connection, query: str, starts: tuple[float, ...]) -> list[dict[str, float]]:
    """`query` (name, USD; one `?` for a unix time) summed since each of `starts`."""
    out: list[dict[str, float]] = []
    for start in starts:
        out.append({name: float(usd or 0.0) for name, usd in db.execute(query, (int(start),))})
    return out


def spend_since(db: Connection, *starts: float) -> list[dict[str, float]]:
    """USD spent per model since each of `starts` (unix times), as priced when served."""
    if not has_table(db, "attempts"):
        return [{} for _ in starts]
    query = (
        "SELECT a.alias, SUM(a.cost_usd) FROM attempts a JOIN requests r "
        "ON r.id = a.request_id WHERE r.ts >= ? GROUP BY a.alias"
    )
    return _totals_since(db, query, starts)


def client_spend_since(db: Connection, *starts: float) -> list[dict[str, float]]:
    """USD spent per client key (its name) since each of `starts` (unix times)."""
    if "client" not in columns(db, "requests"):
        return [{} for _ in starts]
    query = (
        "SELECT client, SUM(cost_usd) FROM requests WHERE client IS NOT NULL AND ts >= ? "
        "GROUP BY client"
    )
    return _totals_since(db, query, starts)


def traffic_seed(db: Connection, day: float, month: float, sessions_since: float) -> Seed:
    """Spend per model since `day` and since `month` (unix times), the model that last served
    each session active since `sessions_since`, and the most recent times to first token."""
    today, this_month = spend_since(db, day, month)
    sessions: dict[str, tuple[str, float]] = {}
    if "session" in columns(db, "requests"):
        query = (  # each session's newest answered request
            "SELECT session, final_model, t FROM (SELECT session, final_model, "
            "COALESCE(ts_ms, ts * 1000) AS t, ROW_NUMBER() OVER (PARTITION BY session "
            "ORDER BY COALESCE(ts_ms, ts * 1000) DESC) AS n FROM requests "
            "WHERE session IS NOT NULL AND final_model != '' AND status = 'ok' AND ts >= ?) "
            "AS newest WHERE n = 1"
        )
        for session, alias, ts_ms in db.execute(query, (int(sessions_since),)):
            sessions[session] = (alias, ts_ms / 1000.0)
    ttft: list[tuple[str, float]] = []
    if has_table(db, "attempts"):
        query = (
            "SELECT alias, ttft_ms FROM attempts WHERE ttft_ms IS NOT NULL "
            "ORDER BY rowid DESC LIMIT 2000"
        )
        ttft = [(alias, float(ms)) for alias, ms in db.execute(query)][::-1]
    return Seed(today, this_month, sessions, ttft)


def count_since(db: Connection, since: float, most: int) -> int:
    """How many requests since a unix time, counting no further than `most`."""
    query = "SELECT COUNT(*) FROM (SELECT 1 FROM requests WHERE ts >= ? LIMIT ?) AS found"
    return int(db.execute(query, (int(since), most)).fetchone()[0])


def read_requests(
    db: Connection,
    since: float,
    limit: int | None = None,
    newest_first: bool = False,
    until: float | None = None,
    client: str | None = None,
    where: tuple[str, list[Any]] = ("", []),
) -> list[dict[str, Any]]:
    """Request rows since a unix time (and before `until`; of one client key's only, by its
    name, with `client`; passing `where`, more ` AND ...` clauses and their parameters), with
    their attempts; v0.1 files (no attempts) work too."""
    order = "DESC" if newest_first else "ASC"
    before = "" if until is None else f" AND ts < {int(until)}"
    whose = "" if client is None else " AND client = ?"
    query = (
        f"SELECT * FROM requests WHERE ts >= ?{before}{whose}{where[0]} "
        f"ORDER BY ts {order}, rowid {order}"
    )
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    given: tuple[Any, ...] = (int(since),) if client is None else (int(since), client)
    given += tuple(where[1])
    rows = [dict(r) for r in db.execute(query, given)]
    attempts: dict[str, list[dict[str, Any]]] = {}
    if rows and has_table(db, "attempts"):
        query = "SELECT * FROM attempts WHERE request_id IN ({ids}) ORDER BY request_id, idx"
        for a in by_request(db, query, [r["id"] for r in rows]):
            attempts.setdefault(a["request_id"], []).append(dict(a))
    for row in rows:
        row["attempts"] = attempts.get(row["id"]) or _from_path(row.get("cascade_path"))
    return rows


def _from_path(path: Any) -> list[dict[str, Any]]:
    """Attempts from a row's `cascade_path` JSON (all a v0.1 row has)."""
    try:
        records = json.loads(path) if path else []
    except ValueError:
        return []
    out = []
    for r in records if isinstance(records, list) else []:
        outcome = r.get("outcome") or {}
        out.append(
            {
                "alias": r.get("alias"),
                "provider": r.get("provider"),
                "model_id": r.get("model_id"),
                "outcome": outcome.get("kind"),
                "input_tokens": outcome.get("input_tokens", 0),
                "output_tokens": outcome.get("output_tokens", 0),
                "latency_ms": r.get("latency_ms", 0),
                "returned": r.get("returned", False),
            }
        )
    return out


def stored_response(db: Connection, response_id: str) -> tuple[str, str] | None:
    """(owner, items as JSON) of a response kept with `store: true`, or None."""
    if not has_table(db, "responses"):
        return None
    query = "SELECT owner, items FROM responses WHERE id = ?"
    row = db.execute(query, (response_id,)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


IN_CHUNK = 500  # ids bound in one `IN (...)`: well under every driver's limit on parameters


def by_request(db: Connection, query: str, ids: list[str]) -> Iterator[Any]:
    """The rows of `query` for the requests `ids`, asked in chunks of IN_CHUNK: `{ids}` in the
    query stands for a chunk's placeholders."""
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        yield from db.execute(query.format(ids=", ".join("?" * len(chunk))), chunk)


def stored_prompts(db: Connection, ids: list[str]) -> dict[str, str]:
    """The kept request bodies (JSON text, `[ledger] store_prompts`) of the requests `ids`."""
    return {rid: body for rid, body, _ in stored_texts(db, ids, answers=False)}


def stored_texts(
    db: Connection, ids: list[str], answers: bool = True
) -> list[tuple[str, str, str | None]]:
    """(request id, kept body, kept answer) of the requests `ids` that `[ledger] store_prompts`
    kept (the answer None without `answers`), in one read."""
    if not ids or not has_table(db, "prompts"):
        return []
    answer = "answer" if answers else "NULL"
    query = f"SELECT request_id, messages, {answer} FROM prompts WHERE request_id IN ({{ids}})"
    return [(row[0], row[1], row[2]) for row in by_request(db, query, ids)]
