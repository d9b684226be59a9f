"""The SQLite ledger: one row per request and one per attempt, written without slowing a reply.

Invariants:
- The request path appends the row to the journal (one write(2), see `journal.py`) and enqueues
  it; one writer task drains the queue in batched transactions (WAL). Shutdown drains the queue
  before the file is closed. A killed daemon's journal is imported at the next start, so no row
  whose answer was sent is lost to SIGKILL.
- No accepted row is dropped silently: when writes fail (disk full, file locked, read-only), rows
  wait and are retried, and the backlog is reported; when the bounded queue is full, or rows
  still cannot be written at shutdown, they go to `<ledger>.spill.jsonl`, imported on next start.
- With `[ledger] require = true`, `durable()` admits a request only while the rows of every
  request in flight would fit in the journal's reserve if the disk filled now (`journal.py`).
  Without it, rows past the reserve wait in memory: `unsaved` counts them (/health, metrics),
  and a stop that cannot keep them names them in its `ledger_rows_lost` line.
- Rows are priced on the request path with the catalog of the config the request was served
  under (`rows.prepare`), so neither a reload nor an import after a crash reprices them.

The schema and its migrations are in `schema.py`, the rows in `rows.py`, prices in `pricing.py`,
the read side in `read.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pirouter_py.config import Config, ModelConfig
from pirouter_py.ledger import journal, rollups
from pirouter_py.ledger.db import Connection, redact
from pirouter_py.ledger.rows import Rows, prepare, prune, read_rows, write_rows
from pirouter_py.ledger.schema import BUSY_TIMEOUT_S, connect, migrate
from pirouter_py.observe.log import get_logger
from pirouter_py.record import RequestRecord

log = get_logger("pirouter.ledger")

QUEUE_MAX = 50_000  # rows waiting in memory before they spill to the JSONL file
BATCH_MAX = 500  # rows written per transaction
GATHER_S = 0.25  # how long the writer lets rows gather before a commit (see `_writer`)
RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)  # waits between write attempts after a failure
LOST_IDS_MAX = 1000  # request ids named in the log line of rows lost at a stop
PRUNE_EVERY_S = 86_400.0
SPILL_SUFFIX = ".spill.jsonl"


class Recorder(Protocol):
    """Takes finished requests; must not block (the ledger enqueues and writes in batches).
    `models` is the catalog the request was served under, which prices it."""

    def record(
        self, record: RequestRecord, models: Mapping[str, ModelConfig] | None = None
    ) -> None: ...


@dataclass(slots=True)
class LedgerStatus:
    path: str
    backlog: int
    written: int
    spilled: int
    failing: bool
    last_error: str | None
    unsaved: int = 0  # answered rows on no disk now (the journal and its reserve were full)
    refused: int = 0  # requests `[ledger] require = true` refused for want of room on disk


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
        in_flight: Callable[[], int] = lambda: 0,
    ) -> None:
        self.path = path  # the SQLite file; with a URL, where the journal and spill files are
        self.url = config.ledger.url
        self.busy_timeout = busy_timeout
        self.spill_path = path.with_name(path.name + SPILL_SUFFIX)
        self.models = config.models  # prices a record given without its catalog, and imports
        self.retention_days = config.ledger.retention_days
        self.queue: asyncio.Queue[_Queued] = asyncio.Queue(queue_max)
        self.journal = journal.Journal(path)
        self.in_flight = in_flight  # requests whose rows may still come (the reserve's load)
        self.db: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy: asyncio.Future[Any] | None = None  # the writer's call in a worker thread
        self._pending: list[_Queued] = []
        self._rollups_left = True  # dirty hours may wait from before this start
        self._rolled_hour = 0
        self.written = 0
        self.spilled = 0
        self.not_spilled = 0  # rows neither the database nor the spill file took (logged)
        self.refused = 0  # requests refused for want of room (`durable`)
        self.last_error: str | None = None

    # the request path

    def record(
        self, record: RequestRecord, models: Mapping[str, ModelConfig] | None = None
    ) -> None:
        """Journal and enqueue; never blocks. A full queue spills the row to the JSONL file.

        The SQL rows are made here, on the event loop, not by the writer thread: a thread that
        runs Python holds the GIL for up to the switch interval (5 ms) while the loop waits for
        it. Made there, each batch held the loop up for about a millisecond: p99 of latency at
        concurrency 1 was 2.1-2.3 ms, against 1.2-1.4 ms made here (same-run A/B). The journal
        line is those rows as JSON: 0.6 µs to encode, where the record's dataclasses took 3.5."""
        rows = prepare(record, self.models if models is None else models)
        self.journal.grow(self.in_flight())
        seq = self.journal.append(rows)
        if self.db is None:  # not opened yet (a failed start): the row is only in memory
            self.journal.unsaved.add(seq)
        try:
            self.queue.put_nowait((seq, rows))
        except asyncio.QueueFull:
            self._spill([rows])

    def durable(self) -> bool:
        """Admit a request (`[ledger] require = true`)? Only while `room()`; a refusal is
        counted (/health)."""
        if self.room():
            return True
        self.refused += 1
        return False

    def room(self, more: int = 0) -> bool:
        """Would the rows of every request in flight (and `more`) survive a crash, even if the
        disk filled now: the ledger is open and the journal's reserve can hold them all."""
        coming = self.in_flight() + more
        self.journal.grow(coming)
        return self.db is not None and self.journal.room(coming)

    def status(self) -> LedgerStatus:
        return LedgerStatus(
            str(self.path) if self.url is None else redact(self.url),
            self.queue.qsize() + len(self._pending),
            self.written,
            self.spilled,
            self.last_error is not None,
            self.last_error,
            len(self.journal.unsaved),
            self.refused,
        )

    # life

    async def open(self) -> None:
        with contextlib.suppress(OSError):  # the folder the journal needs; SQLite's says why
            journal.make_folder(self.path)
        self.db = await asyncio.to_thread(self._open_sync)
        try:
            self.journal.open()
        except OSError as exc:  # rows still reach SQLite; only the SIGKILL window reopens
            self.journal.failing = str(exc)  # tried again as rows come (and by `room`)
            log.warning("journal_unavailable", error=str(exc))
        self._task = asyncio.create_task(self._writer(), name="ledger-writer")

    def _open_sync(self) -> Connection:
        db = connect(self.path, self.busy_timeout, self.url)
        mode = self.path.stat().st_mode & 0o777 if self.url is None else 0
        if mode & 0o077:
            log.warning(
                "ledger_readable_by_others",
                path=str(self.path),
                mode=f"{mode:o}",
                fix=f"chmod 600 {self.path}*",
            )
        migrate(db)
        found = journal.leftovers(self.path)
        if self.spill_path.exists():
            found.append(self.spill_path)
        if found:
            imported = read_rows(found, self.models)
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
                if lost:  # rows on no disk at all (the journal and its reserve were full)
                    gone = [str(rows[0][0]) for seq, rows in queued if seq in self.journal.unsaved]
                    log.error(
                        "ledger_rows_lost",
                        rows=len(gone),
                        kept_in_journal=len(leftover) - len(gone),
                        request_ids=gone[:LOST_IDS_MAX],
                        why="the disk was full: the journal, its reserve and the spill file "
                        "could not take them",
                    )
        self.journal.close(keep=lost)  # rows the spill could not take are still in the journal
        if self.db is not None and usable:
            self.db.close()
            self.db = None

    def _spill(self, leftover: list[Rows]) -> bool:
        try:
            fd = os.open(self.spill_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "ab") as out:
                out.writelines(journal.line(rows) for rows in leftover)
        except OSError as exc:
            self.not_spilled += len(leftover)
            if self.not_spilled == len(leftover) or self.not_spilled % 1000 < len(leftover):
                log.error("ledger_rows_not_spilled", rows=self.not_spilled, error=str(exc))
            return False
        self.spilled += len(leftover)
        return True

    async def _writer(self) -> None:
        assert self.db is not None
        last_prune = time.monotonic()
        failures = 0
        while True:
            if not self._pending:
                if self._rollups_left and self.queue.empty():  # idle: roll up hours meanwhile
                    await self._roll_up()
                    await asyncio.sleep(GATHER_S)
                    continue
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
                self.journal.stop_mapping(f"the ledger's database failed: {exc}")
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
            hour = int(time.time()) // rollups.HOUR
            late = any(int(rows[0][1]) // rollups.HOUR < hour for _, rows in self._pending)
            self.journal.committed(self._pending[-1][0])
            for _ in self._pending:
                self.queue.task_done()
            self._pending = []
            failures = 0
            self.last_error = None
            if late or self._rollups_left or hour != self._rolled_hour:
                self._rolled_hour = hour
                await self._roll_up()
            if self.retention_days and time.monotonic() - last_prune > PRUNE_EVERY_S:
                last_prune = time.monotonic()
                try:  # a locked file must not end the writer: the next day tries again
                    await self._in_thread(prune, self.db, self.retention_days, time.time())
                except sqlite3.Error as exc:
                    log.warning("ledger_prune_failed", error=str(exc))

    async def _roll_up(self) -> None:
        """Roll up dirty hours that have ended, for the dashboard (ledger/rollups.py), for at
        most rollups.CATCH_UP_S; what is left waits for the next batch or an idle moment."""
        try:
            left = await self._in_thread(rollups.catch_up, self.db, time.time())
            self._rollups_left = left > 0
        except sqlite3.Error as exc:  # a locked file: the next batch tries again
            self._rollups_left = False
            log.warning("ledger_rollup_failed", error=str(exc))

    async def _in_thread(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run a database call in a worker thread, shielded: cancelling the writer leaves it
        running to its end, and `close` waits for that before it uses the connection."""
        self._busy = asyncio.ensure_future(asyncio.to_thread(call, *args))
        return await asyncio.shield(self._busy)
