"""The ledger's schema: tables, and the ordered registry of migrations that makes them.

`_migrations` names each applied step; each runs in one transaction. A v0.1 `ledger.db`
(reference §6) is upgraded in place; v0.1's columns keep their names and meaning (`ts` in unix
seconds, token sums over attempts, cost priced by alias), so old queries still work.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from pirouter_py.ledger import rollups
from pirouter_py.ledger.db import MIGRATION_LOCK, Connection, Postgres, columns, is_postgres

BUSY_TIMEOUT_S = 5.0  # how long a write waits for a lock held by another process

V01_REQUESTS = """
CREATE TABLE IF NOT EXISTS requests (
    id              TEXT PRIMARY KEY,
    ts              INTEGER NOT NULL,
    route_rule      TEXT,
    primary_model   TEXT NOT NULL,
    final_model     TEXT NOT NULL,
    cascade_path    TEXT NOT NULL,
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    cost_usd        REAL NOT NULL DEFAULT 0.0,
    latency_ms      INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_requests_ts ON requests(ts);
CREATE INDEX IF NOT EXISTS idx_requests_final_model ON requests(final_model);
"""


def _m001_requests(db: Connection) -> None:
    # statement by statement: executescript() would commit the migration's transaction
    for statement in filter(str.strip, V01_REQUESTS.split(";")):
        db.execute(statement)


def _m002_requested_model(db: Connection) -> None:
    if "requested_model" not in columns(db, "requests"):  # v0.1 added it the same way
        db.execute("ALTER TABLE requests ADD COLUMN requested_model TEXT NOT NULL DEFAULT ''")


REQUEST_DETAILS = (
    ("ts_ms", "INTEGER"),
    ("protocol", "TEXT"),
    ("difficulty", "TEXT"),
    ("http_status", "INTEGER"),
    ("streamed", "INTEGER NOT NULL DEFAULT 0"),
    ("cache_read_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("cache_write_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("ttft_ms", "REAL"),
    ("overhead_ms", "REAL"),
    ("user_agent", "TEXT"),
)


def _m003_request_details(db: Connection) -> None:
    have = columns(db, "requests")
    for name, kind in REQUEST_DETAILS:
        if name not in have:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")


def _m004_attempts(db: Connection) -> None:
    db.execute("""
        CREATE TABLE IF NOT EXISTS attempts (
            request_id          TEXT NOT NULL,
            idx                 INTEGER NOT NULL,
            alias               TEXT NOT NULL,
            provider            TEXT NOT NULL,
            model_id            TEXT NOT NULL,
            outcome             TEXT NOT NULL,
            http_status         INTEGER,
            error               TEXT,
            input_tokens        INTEGER NOT NULL DEFAULT 0,
            output_tokens       INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens   INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
            cost_usd            REAL NOT NULL DEFAULT 0.0,
            latency_ms          REAL NOT NULL DEFAULT 0.0,
            ttft_ms             REAL,
            returned            INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (request_id, idx)
        )""")


def _m005_prompts(db: Connection) -> None:
    db.execute("""
        CREATE TABLE IF NOT EXISTS prompts (
            request_id  TEXT PRIMARY KEY,
            messages    TEXT NOT NULL,
            answer      TEXT
        )""")


AFFINITY_COLUMNS = (("session", "TEXT"), ("pin", "TEXT"))


def _m006_affinity(db: Connection) -> None:
    have = columns(db, "requests")
    for name, kind in AFFINITY_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")


def _m007_responses(db: Connection) -> None:
    """Responses API answers a client asked to keep (`store: true`), for `previous_response_id`:
    the whole conversation as input items, this answer's output items included; `owner` is a
    hash of the client key that asked (only that key may continue from it)."""
    db.execute("""
        CREATE TABLE IF NOT EXISTS responses (
            id          TEXT PRIMARY KEY,
            request_id  TEXT NOT NULL,
            ts          INTEGER NOT NULL,
            owner       TEXT NOT NULL,
            items       TEXT NOT NULL
        )""")


def _m008_attempt_notes(db: Connection) -> None:
    """What an attempt had to leave out of the request for its provider (thinking blocks)."""
    if "note" not in columns(db, "attempts"):
        db.execute("ALTER TABLE attempts ADD COLUMN note TEXT")


def _m009_feedback(db: Connection) -> None:
    """What people said of an answer (`POST /v1/feedback`, `pirouter feedback`): a score in
    0..1 per request, the labels learning starts from."""
    db.execute("""
        CREATE TABLE IF NOT EXISTS feedback (
            request_id  TEXT NOT NULL,
            ts          REAL NOT NULL,
            score       REAL NOT NULL,
            comment     TEXT,
            source      TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX IF NOT EXISTS idx_feedback_request ON feedback(request_id)")


FEATURE_COLUMNS = (("features", "TEXT"),)


def _m010_features(db: Connection) -> None:
    """Each request's hashed feature ids (routing/learned.py; never its text), so `pirouter
    learn` can train on requests whose prompts were not kept."""
    have = columns(db, "requests")
    for name, kind in FEATURE_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")


def _m011_shadow(db: Connection) -> None:
    """Shadow checks ([learning] shadow_rate): a cheaper local model asked the same request
    after it was answered, its answer judged; each a label for `pirouter learn`."""
    db.execute("""
        CREATE TABLE IF NOT EXISTS shadow (
            request_id     TEXT NOT NULL,
            ts             REAL NOT NULL,
            alias          TEXT NOT NULL,
            score          REAL NOT NULL,
            outcome        TEXT NOT NULL,
            input_tokens   INTEGER NOT NULL DEFAULT 0,
            output_tokens  INTEGER NOT NULL DEFAULT 0,
            latency_ms     REAL
        )""")
    db.execute("CREATE INDEX IF NOT EXISTS idx_shadow_request ON shadow(request_id)")


def _m012_rollups(db: Connection) -> None:
    """Hourly rollups for the dashboard's long windows (ledger/rollups.py); the hours already
    in the ledger are marked dirty, and the daemon's writer rolls them up between batches."""
    rollups.create(db)


CLIENT_COLUMNS = (("client", "TEXT"),)


def _m013_clients(db: Connection) -> None:
    """The name of the client key each request came with ([server] api_keys_*), and the
    dashboard's rollups made anew with it as a dimension (they are derived: every hour is
    marked to be rolled up again)."""
    have = columns(db, "requests")
    for name, kind in CLIENT_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")
    rollups.recreate(db)


ROUTE_COLUMNS = (("route_headers", "TEXT"),)


def _m014_route_headers(db: Connection) -> None:
    """The request headers routing read (User-Agent, x-pirouter-*, those rules name; never a
    secret) as a JSON object, so `replay` re-decides header-routed requests as they were."""
    have = columns(db, "requests")
    for name, kind in ROUTE_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")


INSTRUCTION_COLUMNS = (("instruction_key", "TEXT"),)


def _m015_instruction_key(db: Connection) -> None:
    """A hash of each request's latest user instruction in its conversation (never the text;
    ledger/labels.instruction_key), so `ledger labels` can tell a regenerate: the same
    instruction asked again soon after its answer."""
    have = columns(db, "requests")
    for name, kind in INSTRUCTION_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")


MIGRATIONS: tuple[tuple[str, Callable[[Connection], None]], ...] = (
    ("001_requests", _m001_requests),
    ("002_requested_model", _m002_requested_model),
    ("003_request_details", _m003_request_details),
    ("004_attempts", _m004_attempts),
    ("005_prompts", _m005_prompts),
    ("006_affinity", _m006_affinity),
    ("007_responses", _m007_responses),
    ("008_attempt_notes", _m008_attempt_notes),
    ("009_feedback", _m009_feedback),
    ("010_features", _m010_features),
    ("011_shadow", _m011_shadow),
    ("012_rollups", _m012_rollups),
    ("013_clients", _m013_clients),
    ("014_route_headers", _m014_route_headers),
    ("015_instruction_key", _m015_instruction_key),
)


def migrate(db: Connection, upto: int | None = None) -> list[str]:
    """Apply the migrations not yet applied (only the first `upto`, for tests); return them."""
    if is_postgres(db):  # instances starting together: one migrates, the others wait
        db.execute("SELECT pg_advisory_lock(?)", (MIGRATION_LOCK,))
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)"
        )
        done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
        applied = []
        for name, step in MIGRATIONS[:upto]:
            if name in done:
                continue
            db.execute("BEGIN")
            try:
                step(db)
                db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            applied.append(name)
        return applied
    finally:
        if is_postgres(db):
            db.execute("SELECT pg_advisory_unlock(?)", (MIGRATION_LOCK,))


def connect(path: Path, busy_timeout: float = BUSY_TIMEOUT_S, url: str | None = None) -> Connection:
    """Open for writing, in autocommit mode: the PostgreSQL database at `url` when given;
    otherwise the SQLite file at `path` (creating parents and the file), with WAL."""
    if url is not None:
        return Postgres(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():  # it may hold prompts and answers: only its owner reads it (SQLite
        # gives the -wal and -shm files the database file's mode)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db
