"""The ledger's journal: every request's row is on disk before its answer leaves the daemon.

The SQLite writer commits in batches behind the request path, so a SIGKILL would lose the rows
still queued in memory. The journal closes that window: `append()` writes the row as one JSON line
with a single write(2) on an O_APPEND descriptor, before the server sends the answer's last bytes.
The line is then in the kernel's page cache, which outlives the process (not a power cut: there is
no fsync, which would cost milliseconds per request). At the next start the ledger imports every
journal a dead daemon left behind (rows already in the database are skipped), then deletes it.

Invariants:
- Files are `<ledger>.journal.<pid>.<generation>`: a daemon only ever deletes its own, and only
  imports those of processes that no longer run (two daemons may share one ledger).
- A generation is deleted once every row in it is committed; the open one rotates past
  `ROTATE_BYTES`, so the journal stays small however long the daemon runs.
- A journal that cannot be written (full or read-only disk) never fails a request: the row still
  goes to SQLite through the queue, as it did without a journal; the error is logged once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from pirouter_py.observe.log import get_logger

log = get_logger("pirouter.journal")

ROTATE_BYTES = 1 << 20  # start a new generation past 1 MiB, so committed ones can be deleted
MARK = ".journal."
REOPEN_EVERY = 100  # after a failed open, try again once per this many rows


def line(row: Any) -> bytes:
    """A row as one JSON line, as the journal and the spill file hold it."""
    return orjson.dumps(row) + b"\n"


class Journal:
    """Append-only JSON lines beside the ledger, one generation file at a time."""

    def __init__(self, ledger_path: Path) -> None:
        self.folder = ledger_path.parent
        self.prefix = f"{ledger_path.name}{MARK}{os.getpid()}."
        self.gen = 0
        self.seq = 0  # rows appended so far; a row's seq is its position
        self.size = 0
        self.fd: int | None = None
        self.closed: list[tuple[int, int]] = []  # (generation, last seq in it), oldest first
        self.failing: str | None = None
        self.torn = False  # a write stopped mid-line

    def path(self, gen: int) -> Path:
        return self.folder / f"{self.prefix}{gen}"

    def open(self) -> int:
        self.fd = os.open(self.path(self.gen), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = 0
        self.torn = False
        return self.fd

    def append(self, row: Any) -> int:
        """Write the row (anything orjson encodes); returns its seq. Never raises: a failed
        write is logged and skipped."""
        self.seq += 1
        fd = self.fd
        if fd is None:
            if self.failing is None or self.seq % REOPEN_EVERY:
                return self.seq  # not opened (by choice), or it failed and it is not time yet
            try:  # a failed rotation: the disk may have room again
                fd = self.open()
            except OSError:
                return self.seq
        data = line(row)
        if self.torn:  # the last line was cut short: end it, so this one parses on its own
            data = b"\n" + data
        done = 0
        try:
            while done < len(data):  # a short write happens on a nearly full disk
                done += os.write(fd, data[done:])
        except OSError as exc:
            self.torn = self.torn or done > 0
            if self.failing is None:
                log.warning("journal_write_failed", path=str(self.path(self.gen)), error=str(exc))
            self.failing = str(exc)
            return self.seq
        self.torn = False
        self.failing = None
        self.size += len(data)
        if self.size > ROTATE_BYTES:
            self._rotate()
        return self.seq

    def _rotate(self) -> None:
        assert self.fd is not None
        os.close(self.fd)
        self.fd = None
        self.closed.append((self.gen, self.seq))
        self.gen += 1
        try:
            self.open()
        except OSError as exc:
            log.warning("journal_write_failed", path=str(self.path(self.gen)), error=str(exc))
            self.failing = str(exc)

    def committed(self, seq: int) -> None:
        """Rows up to `seq` are in the database: delete the generations they fill."""
        while self.closed and self.closed[0][1] <= seq:
            gen, _ = self.closed.pop(0)
            with contextlib.suppress(OSError):
                self.path(gen).unlink()

    def close(self, *, keep: bool) -> None:
        """Stop writing; delete every generation unless some row may be only here (`keep`)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if keep:
            return
        for gen in [g for g, _ in self.closed] + [self.gen]:
            with contextlib.suppress(OSError):
                self.path(gen).unlink()
        self.closed = []


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a journal with our pid is from an earlier process that had it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(ledger_path: Path) -> list[Path]:
    """Journals of daemons that no longer run, oldest generation first."""
    found: list[tuple[int, int, Path]] = []
    for path in ledger_path.parent.glob(f"{ledger_path.name}{MARK}*"):
        pid, _, gen = path.name.removeprefix(ledger_path.name + MARK).partition(".")
        if pid.isdigit() and gen.isdigit() and not _alive(int(pid)):
            found.append((int(pid), int(gen), path))
    return [path for _, _, path in sorted(found)]


def read(path: Path) -> Iterator[bytes]:
    """The complete lines of one journal (a line cut short by a full disk is left out)."""
    for line in path.read_bytes().split(b"\n"):
        if line.strip():
            yield line
