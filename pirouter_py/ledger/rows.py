"""A request's SQL rows: made on the request path, written in batches, read back from journals.

Costs are priced by alias from the catalog the request was served under (a reload does not
reprice rows waiting for the writer, nor a killed daemon's rows imported at the next start).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pirouter_py.config import ModelConfig
from pirouter_py.ledger import journal, rollups
from pirouter_py.ledger.db import Connection, is_postgres
from pirouter_py.ledger.pricing import attempt_cost
from pirouter_py.ledger.schema import (
    AFFINITY_COLUMNS,
    CLIENT_COLUMNS,
    FEATURE_COLUMNS,
    INSTRUCTION_COLUMNS,
    REQUEST_DETAILS,
    ROUTE_COLUMNS,
)
from pirouter_py.observe.log import get_logger
from pirouter_py.record import Attempt, RequestRecord

log = get_logger("pirouter.ledger")

REQUEST_COLUMNS = (
    "id",
    "ts",
    "requested_model",
    "route_rule",
    "primary_model",
    "final_model",
    "cascade_path",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "status",
    *tuple(name for name, _ in REQUEST_DETAILS),
    *tuple(name for name, _ in AFFINITY_COLUMNS),
    *tuple(name for name, _ in FEATURE_COLUMNS),
    *tuple(name for name, _ in CLIENT_COLUMNS),
    *tuple(name for name, _ in ROUTE_COLUMNS),
    *tuple(name for name, _ in INSTRUCTION_COLUMNS),
)
# the journal's first line format ended before the columns added since (features, client,
# route_headers, instruction_key): a line that short or longer imports, its missing ones None
OLDEST_JOURNAL_COLUMNS = len(REQUEST_COLUMNS) - len(
    (*FEATURE_COLUMNS, *CLIENT_COLUMNS, *ROUTE_COLUMNS, *INSTRUCTION_COLUMNS)
)
ATTEMPT_COLUMNS = (
    "request_id",
    "idx",
    "alias",
    "provider",
    "model_id",
    "outcome",
    "http_status",
    "error",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "returned",
    "note",
)
# Rows go in as multi-row INSERTs: sqlite3's executemany releases and retakes the GIL around
# every row's step, and each handover makes the event loop wait for the writer thread (measured:
# 6% of the daemon's CPU per request). One statement of up to 32 rows hands over once. Chunks are
# powers of two, so a handful of statements serve every batch size from sqlite3's cache; 32 rows of
# 24 columns stay under the 999 parameters of SQLite builds older than 3.32.
CHUNK_ROWS = 32


@dataclass(frozen=True, slots=True)
class Insert:
    """How rows go into one table: `chunks`, SQLite's `INSERT OR IGNORE` statements of 1, 2,
    4 ... CHUNK_ROWS rows (keyed by row count); `from_json`, PostgreSQL's one statement for
    every row, given as one JSON parameter. Adapting each value through the driver cost the
    daemon 278 µs of CPU per row on PostgreSQL; orjson and the server's JSON reader, 15."""

    columns: tuple[str, ...]
    chunks: dict[int, str]
    from_json: str

    def json(self, rows: list[tuple[Any, ...]]) -> str:
        """`rows` as `from_json` takes them: one JSON array of objects by column name."""
        return orjson.dumps([dict(zip(self.columns, row, strict=True)) for row in rows]).decode()


def inserts(table: str, columns: tuple[str, ...]) -> Insert:
    row = f"({', '.join('?' * len(columns))})"
    names = ", ".join(columns)
    head = f"INSERT OR IGNORE INTO {table} ({names}) VALUES "
    sizes = [1 << i for i in range(CHUNK_ROWS.bit_length())]
    chunks = {n: head + ", ".join([row] * n) for n in sizes}
    from_json = (
        f"INSERT OR IGNORE INTO {table} ({names}) SELECT {names} "
        f"FROM json_populate_recordset(NULL::{table}, ?::json)"
    )
    return Insert(columns, chunks, from_json)


INSERT_REQUEST = inserts("requests", REQUEST_COLUMNS)
INSERT_ATTEMPT = inserts("attempts", ATTEMPT_COLUMNS)
INSERT_PROMPT = inserts("prompts", ("request_id", "messages", "answer"))
INSERT_RESPONSE = inserts("responses", ("id", "request_id", "ts", "owner", "items"))


def _insert(db: Connection, insert: Insert, rows: list[tuple[Any, ...]]) -> None:
    """All rows: on SQLite in as few statements as the chunk sizes allow (largest first); on
    PostgreSQL in one."""
    if not rows:
        return
    if is_postgres(db):
        db.execute(insert.from_json, (insert.json(rows),))
        return
    done = 0
    while done < len(rows):
        n = min(CHUNK_ROWS, 1 << ((len(rows) - done).bit_length() - 1))
        db.execute(insert.chunks[n], [value for row in rows[done : done + n] for value in row])
        done += n


def rows_for(
    record: RequestRecord, models: Mapping[str, ModelConfig]
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The requests row and attempts rows of one record (one pass over the attempts: this runs
    on the request path)."""
    rid = record.request_id
    attempts = []
    cost = 0.0
    tokens_in = tokens_out = cache_read = cache_write = 0
    for i, a in enumerate(record.attempts):
        priced = attempt_cost(models.get(a.alias), a)
        cost += priced
        tokens_in += a.input_tokens
        tokens_out += a.output_tokens
        cache_read += a.cache_read_tokens
        cache_write += a.cache_write_tokens
        attempts.append(
            (
                rid,
                i,
                a.alias,
                a.provider,
                a.model_id,
                a.outcome,
                a.status,
                a.error,
                a.input_tokens,
                a.output_tokens,
                a.cache_read_tokens,
                a.cache_write_tokens,
                priced,
                round(a.latency_ms, 3),
                a.ttft_ms,
                int(a.returned),
                a.note,
            )
        )
    path = orjson.dumps([a.to_json() for a in record.attempts]).decode()
    request = (
        rid,
        int(record.ts),
        record.requested_model,
        record.rule,
        record.primary or "",
        record.final or "",
        path,
        tokens_in,
        tokens_out,
        cost,
        round(record.latency_ms),
        record.status,
        int(record.ts * 1000),
        record.protocol,
        record.difficulty,
        record.http_status,
        int(record.streamed),
        cache_read,
        cache_write,
        record.ttft_ms,
        round(record.overhead_ms, 3),
        record.user_agent,
        record.session,
        record.pin,
        record.features,
        record.client,
        record.route_headers,
        record.instruction_key,
    )
    return request, attempts


Rows = tuple[
    tuple[Any, ...],  # the requests row
    list[tuple[Any, ...]],  # its attempts rows
    tuple[str, str, str | None] | None,  # its prompts row, with [ledger] store_prompts
    tuple[str, str, int, str, str] | None,  # its responses row, for a Responses `store: true`
]


def prepare(record: RequestRecord, models: Mapping[str, ModelConfig]) -> Rows:
    """A record's requests row, attempts rows, prompts row and responses row (None unless
    stored)."""
    request, attempts = rows_for(record, models)
    prompt = None if record.prompt is None else (record.request_id, record.prompt, record.answer)
    kept = record.stored_response
    response = (
        None if kept is None else (kept[0], record.request_id, int(record.ts), kept[1], kept[2])
    )
    return request, attempts, prompt, response


def rows_from_line(line: str | bytes, models: Mapping[str, ModelConfig]) -> Rows:
    """The rows of one journal or spill line: `[request, [attempt, ...], prompt, response]` as
    `prepare` made them (priced when served; lines of earlier versions have no `response`), or a
    whole record as still earlier versions wrote it (priced now). Raises ValueError or TypeError
    for a line of neither shape."""
    data = orjson.loads(line)
    if isinstance(data, dict):
        data["attempts"] = tuple(Attempt(**a) for a in data["attempts"])
        return prepare(RequestRecord(**data), models)
    request, attempts, prompt, *more = data
    response = more[0] if more else None
    width = len(ATTEMPT_COLUMNS)
    # lines of earlier versions end before the columns added since (OLDEST_JOURNAL_COLUMNS)
    if isinstance(request, list) and OLDEST_JOURNAL_COLUMNS <= len(request) < len(REQUEST_COLUMNS):
        request = [*request, *[None] * (len(REQUEST_COLUMNS) - len(request))]
    rows: Rows = (
        tuple(request),
        # an attempt of an earlier version has no note: None
        [(*a, None) if len(a) == width - 1 else tuple(a) for a in attempts],
        None if prompt is None else tuple(prompt),
        None if response is None else tuple(response),
    )
    fits = len(rows[0]) == len(REQUEST_COLUMNS) and (rows[2] is None or len(rows[2]) == 3)
    fits = fits and len(more) <= 1 and (rows[3] is None or len(rows[3]) == 5)
    if not fits or any(len(a) != len(ATTEMPT_COLUMNS) for a in rows[1]):
        raise ValueError("not a ledger row: a column is missing or extra")
    values = [*rows[0], *(v for a in rows[1] for v in a), *(rows[2] or ()), *(rows[3] or ())]
    if not all(v is None or isinstance(v, str | int | float) for v in values):
        raise ValueError("not a ledger row: a column holds a list or an object")
    return rows


def read_rows(paths: Iterable[Path], models: Mapping[str, ModelConfig]) -> list[Rows]:
    """The rows of spill and journal files; a line that does not parse is skipped and logged."""
    found = []
    for path in paths:
        for line in journal.read(path):
            try:
                found.append(rows_from_line(line, models))
            except (ValueError, TypeError) as exc:
                log.warning("ledger_import_skipped_line", path=str(path), error=str(exc))
    return found


def write_rows(db: Connection, prepared: Iterable[Rows]) -> int:
    """Write prepared rows in one transaction; returns how many requests."""
    requests, attempts, prompts, responses = [], [], [], []
    for request, rows, prompt, response in prepared:
        requests.append(request)
        attempts += rows
        if prompt is not None:
            prompts.append(prompt)
        if response is not None:
            responses.append(response)
    db.execute("BEGIN")
    try:
        _insert(db, INSERT_REQUEST, requests)
        _insert(db, INSERT_ATTEMPT, attempts)
        _insert(db, INSERT_PROMPT, prompts)
        _insert(db, INSERT_RESPONSE, responses)
        rollups.mark(db, (request[1] for request in requests))
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    return len(requests)


def write_batch(
    db: Connection, records: Iterable[RequestRecord], models: Mapping[str, ModelConfig]
) -> int:
    """Write records in one transaction; returns how many."""
    return write_rows(db, [prepare(record, models) for record in records])


def prune(db: Connection, days: int, now: float) -> int:
    """Delete requests (and their attempts, prompts, kept responses and rollups) older than
    `days`; returns how many requests."""
    cutoff = int(now - days * 86_400)
    ids = "SELECT id FROM requests WHERE ts < ?"
    db.execute("BEGIN")
    try:
        db.execute(f"DELETE FROM attempts WHERE request_id IN ({ids})", (cutoff,))
        db.execute(f"DELETE FROM prompts WHERE request_id IN ({ids})", (cutoff,))
        db.execute("DELETE FROM responses WHERE ts < ?", (cutoff,))
        db.execute("DELETE FROM feedback WHERE ts < ?", (cutoff,))
        db.execute("DELETE FROM shadow WHERE ts < ?", (cutoff,))
        deleted = db.execute("DELETE FROM requests WHERE ts < ?", (cutoff,)).rowcount
        rollups.prune(db, cutoff)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    return int(deleted)
