"""Finding requests: the dashboard's filtered requests table and its exports, in SQL.

A filter is a few exact values (model, rule, client key, protocol), a status class and a text
to find in kept prompts and answers. Every value is a parameter, never SQL text, and every read is
bounded (`MAX_ROWS`), so a filter from a URL costs at most one indexed range read. The statements
are the ledger's SQLite dialect, which `db.translate` gives PostgreSQL as it is.

Status classes, as the page names them: `ok` answered by the first model; `escalated` answered
after an escalation; `failed` no answer (exhausted, upstream, routing, internal, shutdown);
`cancelled` the client went away.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pirouter_py.ledger import read
from pirouter_py.ledger.db import Connection, has_table
from pirouter_py.ledger.read import read_requests
from pirouter_py.record import STATUS_CLIENT_CANCELLED, STATUS_OK

MAX_ROWS = 10_000  # the most rows one read returns (an export's cap)
MAX_TEXT = 200  # the longest text searched for
KINDS = ("ok", "escalated", "failed", "cancelled")
ESCALATED = (
    "EXISTS (SELECT 1 FROM attempts a WHERE a.request_id = requests.id AND a.outcome LIKE ?)"
)


@dataclass(frozen=True, slots=True)
class Filters:
    """What the requests table is narrowed to; an empty value narrows nothing."""

    model: str = ""
    rule: str = ""
    status: str = ""  # one of KINDS
    client: str = ""  # a client key's name; "(no key)" for requests made without one
    protocol: str = ""
    q: str = ""  # text in the kept prompt or answer (only with [ledger] store_prompts)

    @classmethod
    def of(cls, query: Any) -> Filters:
        """From a URL's query (a mapping); ValueError with the sentence to show when wrong."""
        values = {f.name: str(query.get(f.name, "")).strip() for f in fields(cls)}
        if values["status"] and values["status"] not in KINDS:
            raise ValueError(f"status={values['status']!r}: use one of {', '.join(KINDS)}")
        if len(values["q"]) > MAX_TEXT:
            raise ValueError(f"q is {len(values['q'])} characters; search at most {MAX_TEXT}")
        return cls(**values)

    def given(self) -> dict[str, str]:
        """The filters that narrow something, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def where(db: Connection, filters: Filters, whose: str | None) -> tuple[str, list[Any]]:
    """` AND ...` clauses and their parameters for `filters` (and one client's own rows, when
    `whose` is not None)."""
    sql: list[str] = []
    params: list[Any] = []
    for column, value in (
        # not `final_model = ?`: SQLite would read every row of the model by its index and sort
        # them; newest first along the ts index stops at the page's rows
        ("COALESCE(final_model, '')", filters.model),
        ("route_rule", filters.rule),
        ("protocol", filters.protocol),
    ):
        if value:
            sql.append(f"{column} = ?")
            params.append(value)
    if filters.client == "(no key)":
        sql.append("client IS NULL")
    elif filters.client:
        sql.append("client = ?")
        params.append(filters.client)
    if whose is not None:
        sql.append("client = ?")
        params.append(whose)
    attempts = has_table(db, "attempts")
    if filters.status in ("ok", "escalated"):
        sql.append("status = ?")
        params.append(STATUS_OK)
        if attempts:
            sql.append(ESCALATED if filters.status == "escalated" else f"NOT {ESCALATED}")
            params.append("escalated%")
    elif filters.status == "cancelled":
        sql.append("status = ?")
        params.append(STATUS_CLIENT_CANCELLED)
    elif filters.status == "failed":
        sql.append("status NOT IN (?, ?)")
        params += [STATUS_OK, STATUS_CLIENT_CANCELLED]
    if filters.q:
        if not has_table(db, "prompts"):
            sql.append("1 = 0")  # nothing kept, nothing found
        else:
            pattern = "%" + _escape(filters.q.lower()) + "%"
            sql.append(
                "id IN (SELECT request_id FROM prompts WHERE LOWER(messages) LIKE ? ESCAPE '!' "
                "OR LOWER(COALESCE(answer, '')) LIKE ? ESCAPE '!')"
            )
            params += [pattern, pattern]
    return "".join(" AND " + s for s in sql), params


def _escape(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def find(
    db: Connection,
    filters: Filters,
    *,
    since: float,
    until: float | None = None,
    limit: int = 50,
    whose: str | None = None,
) -> list[dict[str, Any]]:
    """The newest `limit` (at most MAX_ROWS) requests since `since` (and before `until`) that
    pass `filters`, with their attempts and their newest feedback score (`feedback`, or None)."""
    clauses, params = where(db, filters, whose)
    rows = read_requests(
        db,
        since,
        min(max(1, limit), MAX_ROWS),
        newest_first=True,
        until=until,
        where=(clauses, params),
    )
    scores = feedback(db, [r["id"] for r in rows])
    for row in rows:
        row["feedback"] = scores.get(row["id"])
    return rows


def feedback(db: Connection, ids: list[str]) -> dict[str, float]:
    """The newest feedback score given on each of the requests `ids`."""
    if not ids or not has_table(db, "feedback"):
        return {}
    query = "SELECT request_id, score FROM feedback WHERE request_id IN ({ids}) ORDER BY ts, rowid"
    return {rid: float(score) for rid, score in read.by_request(db, query, ids)}
