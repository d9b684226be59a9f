"""The SQLite ledger: one row per request and one per attempt, written without slowing a reply.

Invariants:
- The request path appends the row to the journal (one write(2), see `journal.py`) and enqueues
  it; one writer task drains the queue in batched transactions (WAL). Shutdown drains the queue
  before the file is closed. A killed daemon's journal is imported at the next start, so no row
  whose answer was sent is lost to SIGKILL.
- No accepted row is dropped silently: when writes fail (disk full, file locked, read-only), rows
  wait and are retried, and the backlog is reported; when the bounded queue is full, or rows
  still cannot be written at shutdown, they go to `<ledger>.spill.jsonl`, imported on next start.
- The schema is versioned: `_migrations` names each applied step, each one transaction. A v0.1
  `ledger.db` (reference §6) is upgraded in place; v0.1's columns keep their names and meaning
  (`ts` in unix seconds, token sums over attempts, cost priced by alias), so old queries still work.
- Costs are priced by alias from the catalog the request was served under (a reload does not
  reprice rows waiting for the writer): uncached input at `input_per_m`, cached reads and
  writes at `cache_read_per_m`/`cache_write_per_m` (else `input_per_m`), output at `output_per_m`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pirouter_py import journal
from pirouter_py.config import Config, ModelConfig
from pirouter_py.log import get_logger
from pirouter_py.record import Attempt, RequestRecord

log = get_logger("pirouter.ledger")

QUEUE_MAX = 50_000  # rows waiting in memory before they spill to the JSONL file
BATCH_MAX = 500  # rows written per transaction
GATHER_S = 0.25  # how long the writer lets rows gather before a commit (see `_writer`)
RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)  # waits between write attempts after a failure
PRUNE_EVERY_S = 86_400.0
SPILL_SUFFIX = ".spill.jsonl"
BUSY_TIMEOUT_S = 5.0  # how long a write waits for a lock held by another process

# --- schema ----------------------------------------------------------------------------------

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


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _m001_requests(db: sqlite3.Connection) -> None:
    # statement by statement: executescript() would commit the migration's transaction
    for statement in filter(str.strip, V01_REQUESTS.split(";")):
        db.execute(statement)


def _m002_requested_model(db: sqlite3.Connection) -> None:
    if "requested_model" not in _columns(db, "requests"):  # v0.1 added it the same way
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


def _m003_request_details(db: sqlite3.Connection) -> None:
    have = _columns(db, "requests")
    for name, kind in REQUEST_DETAILS:
        if name not in have:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")


def _m004_attempts(db: sqlite3.Connection) -> None:
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


def _m005_prompts(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE IF NOT EXISTS prompts (
            request_id  TEXT PRIMARY KEY,
            messages    TEXT NOT NULL,
            answer      TEXT
        )""")


AFFINITY_COLUMNS = (("session", "TEXT"), ("pin", "TEXT"))


def _m006_affinity(db: sqlite3.Connection) -> None:
    have = _columns(db, "requests")
    for name, kind in AFFINITY_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")


MIGRATIONS: tuple[tuple[str, Callable[[sqlite3.Connection], None]], ...] = (
    ("001_requests", _m001_requests),
    ("002_requested_model", _m002_requested_model),
    ("003_request_details", _m003_request_details),
    ("004_attempts", _m004_attempts),
    ("005_prompts", _m005_prompts),
    ("006_affinity", _m006_affinity),
)


def migrate(db: sqlite3.Connection, upto: int | None = None) -> list[str]:
    """Apply the migrations not yet applied (only the first `upto`, for tests); return them."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
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


def connect(path: Path, busy_timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open (creating parents and the file) for writing, in autocommit mode with WAL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


# --- pricing ---------------------------------------------------------------------------------


def attempt_cost(model: ModelConfig | None, a: Attempt) -> float:
    """USD for one attempt, priced by its alias; an unknown alias costs 0 (as in v0.1)."""
    if model is None:
        return 0.0
    cached = a.cache_read_tokens + a.cache_write_tokens
    read = model.cache_read_per_m if model.cache_read_per_m is not None else model.input_per_m
    write = model.cache_write_per_m if model.cache_write_per_m is not None else model.input_per_m
    return (
        max(0, a.input_tokens - cached) * model.input_per_m
        + a.cache_read_tokens * read
        + a.cache_write_tokens * write
        + a.output_tokens * model.output_per_m
    ) / 1e6


# --- rows --------------------------------------------------------------------------------------

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
)
# Rows go in as multi-row INSERTs: sqlite3's executemany releases and retakes the GIL around
# every row's step, and each handover makes the event loop wait for the writer thread (measured:
# 6% of the daemon's CPU per request). One statement of up to 32 rows hands over once. Chunks are
# powers of two, so a handful of statements serve every batch size from sqlite3's cache; 32 rows of
# 24 columns stay under the 999 parameters of SQLite builds older than 3.32.
CHUNK_ROWS = 32


def _inserts(table: str, columns: tuple[str, ...]) -> dict[int, str]:
    """`INSERT OR IGNORE` statements of 1, 2, 4 ... CHUNK_ROWS rows, keyed by row count."""
    row = f"({', '.join('?' * len(columns))})"
    head = f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES "
    sizes = [1 << i for i in range(CHUNK_ROWS.bit_length())]
    return {n: head + ", ".join([row] * n) for n in sizes}


INSERT_REQUEST = _inserts("requests", REQUEST_COLUMNS)
INSERT_ATTEMPT = _inserts("attempts", ATTEMPT_COLUMNS)
INSERT_PROMPT = _inserts("prompts", ("request_id", "messages", "answer"))


def _insert(
    db: sqlite3.Connection, statements: dict[int, str], rows: list[tuple[Any, ...]]
) -> None:
    """All rows, in as few statements as the chunk sizes allow (largest first)."""
    done = 0
    while done < len(rows):
        n = min(CHUNK_ROWS, 1 << ((len(rows) - done).bit_length() - 1))
        db.execute(statements[n], [value for row in rows[done : done + n] for value in row])
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
    )
    return request, attempts


Rows = tuple[tuple[Any, ...], list[tuple[Any, ...]], tuple[str, str, str | None] | None]


def prepare(record: RequestRecord, models: Mapping[str, ModelConfig]) -> Rows:
    """A record's requests row, attempts rows and prompts row (None unless stored)."""
    request, attempts = rows_for(record, models)
    prompt = None if record.prompt is None else (record.request_id, record.prompt, record.answer)
    return request, attempts, prompt


def rows_from_line(line: str | bytes, models: Mapping[str, ModelConfig]) -> Rows:
    """The rows of one journal or spill line: `[request, [attempt, ...], prompt]` as `prepare`
    made them (priced when served), or a whole record as earlier versions wrote it (priced now).
    Raises ValueError or TypeError for a line of neither shape."""
    data = orjson.loads(line)
    if isinstance(data, dict):
        data["attempts"] = tuple(Attempt(**a) for a in data["attempts"])
        return prepare(RequestRecord(**data), models)
    request, attempts, prompt = data
    rows = tuple(request), [tuple(a) for a in attempts], None if prompt is None else tuple(prompt)
    fits = len(rows[0]) == len(REQUEST_COLUMNS) and (rows[2] is None or len(rows[2]) == 3)
    if not fits or any(len(a) != len(ATTEMPT_COLUMNS) for a in rows[1]):
        raise ValueError("not a ledger row: a column is missing or extra")
    values = [*rows[0], *(v for a in rows[1] for v in a), *(rows[2] or ())]
    if not all(v is None or isinstance(v, str | int | float) for v in values):
        raise ValueError("not a ledger row: a column holds a list or an object")
    return rows


def _read_rows(paths: Iterable[Path], models: Mapping[str, ModelConfig]) -> list[Rows]:
    """The rows of spill and journal files; a line that does not parse is skipped and logged."""
    found = []
    for path in paths:
        for line in journal.read(path):
            try:
                found.append(rows_from_line(line, models))
            except (ValueError, TypeError) as exc:
                log.warning("ledger_import_skipped_line", path=str(path), error=str(exc))
    return found


def write_rows(db: sqlite3.Connection, prepared: Iterable[Rows]) -> int:
    """Write prepared rows in one transaction; returns how many requests."""
    requests, attempts, prompts = [], [], []
    for request, rows, prompt in prepared:
        requests.append(request)
        attempts += rows
        if prompt is not None:
            prompts.append(prompt)
    db.execute("BEGIN")
    try:
        _insert(db, INSERT_REQUEST, requests)
        _insert(db, INSERT_ATTEMPT, attempts)
        _insert(db, INSERT_PROMPT, prompts)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    return len(requests)


def write_batch(
    db: sqlite3.Connection, records: Iterable[RequestRecord], models: Mapping[str, ModelConfig]
) -> int:
    """Write records in one transaction; returns how many."""
    return write_rows(db, [prepare(record, models) for record in records])


def prune(db: sqlite3.Connection, days: int, now: float) -> int:
    """Delete requests (and their attempts and prompts) older than `days`; returns how many."""
    cutoff = int(now - days * 86_400)
    ids = "SELECT id FROM requests WHERE ts < ?"
    db.execute("BEGIN")
    db.execute(f"DELETE FROM attempts WHERE request_id IN ({ids})", (cutoff,))
    db.execute(f"DELETE FROM prompts WHERE request_id IN ({ids})", (cutoff,))
    deleted = db.execute("DELETE FROM requests WHERE ts < ?", (cutoff,)).rowcount
    db.execute("COMMIT")
    return int(deleted)


# --- the writer --------------------------------------------------------------------------------


@dataclass(slots=True)
class LedgerStatus:
    path: str
    backlog: int
    written: int
    spilled: int
    failing: bool
    last_error: str | None


_Queued = tuple[int, Rows]  # (journal seq, the record's SQL rows)


class Ledger:
    """The daemon's ledger: `record()` from the request path, one writer task behind it."""

    def __init__(
        self,
        path: Path,
        config: Config,
        *,
        queue_max: int = QUEUE_MAX,
        busy_timeout: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.spill_path = path.with_name(path.name + SPILL_SUFFIX)
        self.models = config.models
        self.retention_days = config.ledger.retention_days
        self.queue: asyncio.Queue[_Queued] = asyncio.Queue(queue_max)
        self.journal = journal.Journal(path)
        self.db: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy: asyncio.Future[Any] | None = None  # the writer's call in a worker thread
        self._pending: list[_Queued] = []
        self.written = 0
        self.spilled = 0
        self.last_error: str | None = None

    # the request path

    def record(self, record: RequestRecord) -> None:
        """Journal and enqueue; never blocks. A full queue spills the row to the JSONL file.

        The SQL rows are made here, on the event loop, not by the writer thread: a thread that
        runs Python holds the GIL for up to the switch interval (5 ms) while the loop waits for
        it. Made there, each batch held the loop up for about a millisecond: p99 of latency at
        concurrency 1 was 2.1-2.3 ms, against 1.2-1.4 ms made here (same-run A/B). The journal
        line is those rows as JSON: 0.6 µs to encode, where the record's dataclasses took 3.5."""
        rows = prepare(record, self.models)
        seq = self.journal.append(rows)
        try:
            self.queue.put_nowait((seq, rows))
        except asyncio.QueueFull:
            self._spill([rows])

    def status(self) -> LedgerStatus:
        return LedgerStatus(
            str(self.path),
            self.queue.qsize() + len(self._pending),
            self.written,
            self.spilled,
            self.last_error is not None,
            self.last_error,
        )

    # life

    async def open(self) -> None:
        self.db = await asyncio.to_thread(self._open_sync)
        try:
            self.journal.open()
        except OSError as exc:  # rows still reach SQLite; only the SIGKILL window reopens
            log.warning("journal_unavailable", error=str(exc))
        self._task = asyncio.create_task(self._writer(), name="ledger-writer")

    def _open_sync(self) -> sqlite3.Connection:
        db = connect(self.path, self.busy_timeout)
        migrate(db)
        found = journal.leftovers(self.path)
        if self.spill_path.exists():
            found.append(self.spill_path)
        if found:
            imported = _read_rows(found, self.models)
            write_rows(db, imported)  # rows already written are skipped
            for path in found:
                path.unlink()
            log.info("ledger_rows_imported", rows=len(imported), files=[p.name for p in found])
        if self.retention_days:
            prune(db, self.retention_days, time.time())
        return db

    async def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then close; what cannot be written is spilled, not lost."""
        if self._task is not None:
            if self.last_error is None:  # a healthy writer finishes the queue itself
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.queue.join(), timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # A write the writer had in a thread goes on after the task is cancelled; the
        # connection is not ours again until it ends (then rewriting its rows is harmless).
        busy = self._busy
        if busy is not None and not busy.done():
            await asyncio.wait([busy], timeout=timeout)
        usable = busy is None or busy.done()
        queued = self._pending + [self.queue.get_nowait() for _ in range(self.queue.qsize())]
        leftover = [rows for _, rows in queued]
        self._pending = []
        lost = False
        if leftover:
            try:
                if not usable:
                    raise sqlite3.OperationalError("a write still holds the connection")
                assert self.db is not None
                await asyncio.wait_for(asyncio.to_thread(write_rows, self.db, leftover), timeout)
                self.written += len(leftover)
            except Exception as exc:  # the disk still refuses: keep the rows beside it
                log.warning("ledger_unwritable_at_shutdown", rows=len(leftover), error=str(exc))
                lost = not self._spill(leftover)
        self.journal.close(keep=lost)  # rows the spill could not take are still in the journal
        if self.db is not None and usable:
            self.db.close()
            self.db = None

    def _spill(self, leftover: list[Rows]) -> bool:
        try:
            with self.spill_path.open("ab") as out:
                out.writelines(journal.line(rows) for rows in leftover)
        except OSError as exc:
            log.error("ledger_rows_not_spilled", rows=len(leftover), error=str(exc))
            return False
        self.spilled += len(leftover)
        return True

    async def _writer(self) -> None:
        assert self.db is not None
        last_prune = time.monotonic()
        failures = 0
        while True:
            if not self._pending:
                self._pending.append(await self.queue.get())
                # Let a batch gather: a commit rewrites the same few pages (table, indexes) in
                # the WAL whether it holds 1 row or 500, so small commits cost CPU per row, and
                # each commit slows the requests in flight while it runs (at 20 commits a second
                # they were the p99 of latency at concurrency 1; at 4, p99 fell by a third).
                # The journal already holds these rows; only their visibility waits.
                # A full batch already waiting is written at once: gathering after every batch
                # capped the writer at BATCH_MAX rows per GATHER_S (~1,600 rows/s here), and
                # under a heavier load the queue grew without end (22,700 rows and 100 MiB of
                # RSS after 15 s at 3,100 req/s) until rows spilled.
                if self.queue.qsize() < BATCH_MAX - 1:
                    await asyncio.sleep(GATHER_S)
                while len(self._pending) < BATCH_MAX and not self.queue.empty():
                    self._pending.append(self.queue.get_nowait())
            try:
                rows = [rows for _, rows in self._pending]
                await self._in_thread(write_rows, self.db, rows)
            except sqlite3.Error as exc:
                self.last_error = str(exc)
                log.warning(
                    "ledger_write_failed",
                    rows=len(self._pending),
                    error=str(exc),
                    backlog=self.status().backlog,
                )
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1
                continue
            self.written += len(self._pending)
            self.journal.committed(self._pending[-1][0])
            for _ in self._pending:
                self.queue.task_done()
            self._pending = []
            failures = 0
            self.last_error = None
            if self.retention_days and time.monotonic() - last_prune > PRUNE_EVERY_S:
                last_prune = time.monotonic()
                await self._in_thread(prune, self.db, self.retention_days, time.time())

    async def _in_thread(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run a database call in a worker thread, shielded: cancelling the writer leaves it
        running to its end, and `close` waits for that before it uses the connection."""
        self._busy = asyncio.ensure_future(asyncio.to_thread(call, *args))
        return await asyncio.shield(self._busy)


# --- reading (the CLI; read-only, works while the daemon writes) -------------------------------


def open_read_only(path: Path) -> sqlite3.Connection | None:
    """A read-only connection, or None when there is no ledger yet."""
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    db.row_factory = sqlite3.Row
    return db


def traffic_seed(db: sqlite3.Connection, now: float, soft_secs: float) -> dict[str, Any]:
    """What the daemon's traffic state starts from: spend per model today and this month (local
    time), the model that last served each session still inside the affinity window, and the
    most recent times to first token, oldest first."""
    from pirouter_py.traffic import day_start, month_start

    spend: dict[str, dict[str, float]] = {"today": {}, "month": {}}
    attempts = has_table(db, "attempts")
    if attempts:
        query = (
            "SELECT a.alias, SUM(a.cost_usd) FROM attempts a JOIN requests r "
            "ON r.id = a.request_id WHERE r.ts >= ? GROUP BY a.alias"
        )
        for period, start in (("today", day_start(now)), ("month", month_start(now))):
            for alias, usd in db.execute(query, (int(start.timestamp()),)):
                spend[period][alias] = float(usd or 0.0)
    sessions: dict[str, tuple[str, float]] = {}
    if "session" in _columns(db, "requests"):
        query = (
            "SELECT session, final_model, MAX(COALESCE(ts_ms, ts * 1000)) FROM requests "
            "WHERE session IS NOT NULL AND final_model != '' AND status = 'ok' AND ts >= ? "
            "GROUP BY session"
        )
        for session, alias, ts_ms in db.execute(query, (int(now - soft_secs),)):
            sessions[session] = (alias, ts_ms / 1000.0)
    ttft: list[tuple[str, float]] = []
    if attempts:
        query = (
            "SELECT alias, ttft_ms FROM attempts WHERE ttft_ms IS NOT NULL "
            "ORDER BY rowid DESC LIMIT 2000"
        )
        ttft = [(alias, float(ms)) for alias, ms in db.execute(query)][::-1]
    return {"spend": spend, "sessions": sessions, "ttft": ttft}


def has_table(db: sqlite3.Connection, table: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return db.execute(query, (table,)).fetchone() is not None


def read_requests(
    db: sqlite3.Connection, since: float, limit: int | None = None, newest_first: bool = False
) -> list[dict[str, Any]]:
    """Request rows since a unix time, with their attempts; v0.1 files (no attempts) work too."""
    order = "DESC" if newest_first else "ASC"
    query = f"SELECT * FROM requests WHERE ts >= ? ORDER BY ts {order}, rowid {order}"
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    rows = [dict(r) for r in db.execute(query, (int(since),))]
    attempts: dict[str, list[dict[str, Any]]] = {}
    if rows and has_table(db, "attempts"):
        ids = [r["id"] for r in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for a in db.execute(
                f"SELECT * FROM attempts WHERE request_id IN ({marks}) ORDER BY request_id, idx",
                chunk,
            ):
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
