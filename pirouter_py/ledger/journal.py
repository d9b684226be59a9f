"""The ledger's journal: every request's row is on disk before its answer leaves the daemon.

The SQLite writer commits in batches behind the request path, so a SIGKILL would lose the rows
still queued in memory. The journal closes that window: `append()` puts the row, as one JSON line,
into the journal before the server sends the answer's last bytes. The line is then in the kernel's
page cache, which outlives the process (not a power cut: there is no fsync, which would cost
milliseconds per request). At the next start the ledger imports every journal a dead daemon left
behind (rows already in the database are skipped), then deletes it.

How a line gets there: on Linux, on a file system that overwrites blocks in place (ext2/3/4, XFS,
tmpfs: `MAPPABLE`), each generation is written full of zeros when it opens (so its blocks are the
file's, and a full disk shows then, as an error) and mapped shared; a line is copied into the
mapping, with no system call. Elsewhere (a copy-on-write file system such as btrfs, where a store
into a full disk's mapping would kill the daemon with SIGBUS; other systems), and for a generation
whose zeros could not be written, a line is one write(2) on an O_APPEND descriptor. A write(2) per
request was 40 µs of the daemon's CPU per request under load, not its own 2-5: it let the ledger's
writer thread take the GIL (same-run A/B, chat completions, `bench/run.py --paths`).

Invariants:
- Files are `<ledger>.journal.<pid>.<generation>`: a daemon only ever deletes its own, and only
  imports those of processes that no longer run (two daemons may share one ledger).
- A generation is deleted once every row in it is committed; the open one rotates past
  `ROTATE_BYTES` (a mapped one when the next line would not fit in its `MAP_BYTES`), so the
  journal stays small however long the daemon runs. A mapped generation's end is its first zero
  byte (a line never holds one).
- A journal that cannot be written (full or read-only disk) never fails a request: the row still
  goes to SQLite through the queue, as it did without a journal; the error is logged once.
- For a disk that fills while the daemon runs, `<ledger>.journal.<pid>.reserve` is allocated
  (RESERVE_BYTES, posix_fallocate) when the journal opens: rows the journal cannot write go
  there, into space already the file's, and are imported like a journal if the daemon stops
  before the disk has room again. A row that neither takes is `unsaved` (only in memory); if
  it cannot be written at shutdown either, the ledger says how many were lost, and which.
- The reserve grows while the disk has room, with the load: to hold the rows of every request
  in flight twice over, and RESERVE_S of the busiest second's rows, within MAX_RESERVE_BYTES and
  a quarter of the free space. `room(coming)` says whether the rows of `coming` requests would
  fit in it if the disk filled now: `[ledger] require = true` admits a request only then, so
  every answered row has a place on disk.
- The folder is made when missing (0700, as the files are 0600: rows hold prompts), also when
  the ledger itself is in PostgreSQL and the folder holds only the journal and the spill.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from pirouter_py.observe.log import get_logger

log = get_logger("pirouter.journal")

ROTATE_BYTES = 1 << 20  # start a new generation past 1 MiB, so committed ones can be deleted
MAP_BYTES = 256 << 10  # a mapped generation's size (larger for a larger line): its pages in RSS
# File systems (Linux names, /proc/self/mountinfo) that write a mapped file's pages back into the
# blocks it holds: a store into the mapping never needs a new block, so never fails
MAPPABLE = frozenset(("ext2", "ext3", "ext4", "xfs", "tmpfs"))
MARK = ".journal."
REOPEN_EVERY = 100  # after a failed open, try again once per this many rows
RESERVE = "reserve"
RESERVE_BYTES = 4 << 20  # at least: about 4,000 rows of 1 KB
MAX_RESERVE_BYTES = 256 << 20  # at most (and never past a quarter of the free space)
RESERVE_S = 10  # seconds of the busiest second's rows the reserve grows to hold
ROW_GUESS = 4096  # a row's size before any is seen (rows holding prompts are larger)
SLACK = 64 << 10  # kept free in the reserve: a row larger than any seen yet
GROW_EVERY_S = 1.0  # how often the reserve's size is reconsidered (and a missing one retried)
# Admission with [ledger] require: while the disk has this much free beyond the rows in flight,
# they fit on it whatever the reserve's size (read at most every FREE_EVERY_S)
FREE_MARGIN = 64 << 20
FREE_EVERY_S = 0.25


def make_folder(ledger_path: Path) -> None:
    """The folder of the journal and spill files, made (0700) if missing and shown writable by a
    file made and deleted there; OSError if it cannot be."""
    folder = ledger_path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    probe = folder / f".{ledger_path.name}.probe.{os.getpid()}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    probe.unlink()


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
        self._retried_at = 0.0  # when a journal or reserve that could not be made was retried
        self._free_at = -FREE_EVERY_S  # when the disk's free space was last read
        self._free_bytes = 0
        self.torn = False  # a write stopped mid-line
        self.reserve_fd: int | None = None
        self.reserve_size = 0  # bytes allocated to the reserve
        self.reserve_at = 0  # bytes of rows in the reserve
        self.row_max = ROW_GUESS  # the largest row seen
        self.second = (0, 0)  # (this second, rows in it)
        self.peak = 0  # the most rows seen in one second
        self._grown_at = 0.0
        self.reserve_last = 0  # seq of the last row put there
        self.unsaved: set[int] = set()  # seqs of rows on no disk (journal and reserve failed)
        self.mappable: bool | None = None  # the folder's file system takes mapped generations
        self.map: mmap.mmap | None = None  # the open generation, mapped (`open`)

    def path(self, gen: int) -> Path:
        return self.folder / f"{self.prefix}{gen}"

    def open(self, size: int = 0) -> int:
        """Open generation `self.gen`: mapped, `size` bytes at least, where the file system
        allows and its zeros can be written; else for write(2)."""
        path = self.path(self.gen)
        self._close_map()
        if self.fd is not None:  # opened again (the ledger reopened): the file keeps its rows
            os.close(self.fd)
        self.fd = None
        self.size = 0
        self.torn = False
        if self.mappable is None:
            self.mappable = mappable(self.folder)
        size = max(MAP_BYTES, size)
        # zeros are not to take the last of a disk's room: a nearly full one gets write(2)
        if self.mappable and self._free(time.monotonic()) >= FREE_MARGIN + size:
            self.fd = self._mapped(path, size)
        if self.fd is None:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if self.reserve_fd is None:
            self._open_reserve()
        return self.fd

    def _mapped(self, path: Path, size: int) -> int | None:
        """A new generation of `size` zero bytes, mapped; None (and no file made) when the file
        is there already, the disk had no room for it after all, or it cannot be mapped."""
        try:  # never another's file (two daemons that are both pid 1 in their containers)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # rows there already: appended after them by write(2)
            return None
        try:
            zeros = bytes(min(size, 64 << 10))
            at = 0
            while at < size:  # blocks written are blocks held: no store can want one later
                at += os.pwrite(fd, zeros[: size - at], at)
            self.map = mmap.mmap(fd, size)
        except (OSError, ValueError):  # a full disk: write(2), whose failures are handled
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return fd

    @property
    def reserve_path(self) -> Path:
        return self.folder / f"{self.prefix}{RESERVE}"

    def _open_reserve(self) -> None:
        try:
            fd = os.open(self.reserve_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("journal_reserve_unavailable", error=str(exc))
            return
        try:
            _allocate(fd, 0, RESERVE_BYTES)
        except OSError as exc:  # the disk is full already: no room to set aside
            os.close(fd)
            with contextlib.suppress(OSError):
                self.reserve_path.unlink()
            log.warning("journal_reserve_unavailable", error=str(exc))
            return
        self.reserve_fd = fd
        self.reserve_size = RESERVE_BYTES

    def grow(self, coming: int) -> None:
        """Size the reserve for the load (`coming`: requests in flight), at most once every
        GROW_EVERY_S, while the disk has room; open it if it could not be before."""
        now = time.monotonic()
        if now - self._grown_at < GROW_EVERY_S or self.fd is None or self.failing is not None:
            return
        self._grown_at = now
        if self.map is not None and self._free(now) < FREE_MARGIN:
            self.stop_mapping("the disk is nearly full")
        if self.reserve_fd is None:
            self._open_reserve()
            if self.reserve_fd is None:
                return
        size = self.reserve_size
        want = max(2 * self.need(coming), self.peak * RESERVE_S * self.row_max, RESERVE_BYTES)
        if want <= size:
            return
        try:
            stat = os.statvfs(self.folder)
            free = stat.f_bavail * stat.f_frsize
        except (OSError, AttributeError):  # no statvfs (Windows): grow within the cap only
            free = MAX_RESERVE_BYTES * 4
        target = min(want, MAX_RESERVE_BYTES, size + free // 4)
        if target <= size:
            return
        try:
            _allocate(self.reserve_fd, size, target - size)
        except OSError as exc:
            log.warning("journal_reserve_not_grown", size=size, wanted=target, error=str(exc))
            return
        self.reserve_size = target

    def need(self, coming: int) -> int:
        """Reserve bytes the rows of `coming` requests may take, and the slack."""
        return coming * self.row_max + SLACK

    def room(self, coming: int) -> bool:
        """Would the rows of `coming` requests (those in flight) all be kept if the disk filled
        now: in the disk's free space beyond a margin, else in the reserve? A journal or reserve
        that could not be made is tried again (GROW_EVERY_S)."""
        now = time.monotonic()
        if (self.fd is None or self.reserve_fd is None) and now - self._retried_at >= GROW_EVERY_S:
            self._retried_at = now
            if self.fd is None and self.failing is not None:  # it failed to open: try again
                try:
                    self.open()
                    self.failing = None
                except OSError as exc:
                    self.failing = str(exc)
            elif self.reserve_fd is None and self.fd is not None:
                self._open_reserve()
        if self.fd is None or self.reserve_fd is None:
            return False
        need = self.need(coming)
        if self.failing is None and self._free(now) >= FREE_MARGIN + need:
            return True  # a healthy disk with room: the journal itself takes them
        return self.reserve_at + need <= self.reserve_size

    def _free(self, now: float) -> int:
        """The disk's free bytes for the journal, read at most every FREE_EVERY_S."""
        if now - self._free_at >= FREE_EVERY_S:
            self._free_at = now
            try:
                stat = os.statvfs(self.folder)
                self._free_bytes = stat.f_bavail * stat.f_frsize
            except (OSError, AttributeError):  # no statvfs (Windows): the reserve decides
                self._free_bytes = 0
        return self._free_bytes

    def _to_reserve(self, data: bytes) -> bool:
        """Put a row's line the journal could not take in the reserve; False when it has no
        room."""
        fd = self.reserve_fd
        if fd is None or self.reserve_at + len(data) > self.reserve_size:
            return False
        try:
            os.pwrite(fd, data, self.reserve_at)
        except OSError:
            return False
        self.reserve_at += len(data)
        self.reserve_last = self.seq
        return True

    def append(self, row: Any) -> int:
        """Put the row (anything orjson encodes) in the journal; returns its seq. Never raises:
        a failed write is logged and skipped."""
        self.seq += 1
        second = int(time.monotonic())
        count = self.second[1] + 1 if self.second[0] == second else 1
        self.second = (second, count)
        self.peak = max(self.peak, count)
        if self.fd is None and self.failing is None:
            return self.seq  # not opened (by choice)
        data = line(row)
        self.row_max = max(self.row_max, len(data))
        mapped = self.map
        if mapped is not None:
            end = self.size + len(data)
            if end <= len(mapped):
                mapped[self.size : end] = data
                self.size = end
                return self.seq
            self._rotate(len(data))  # full: the next generation, as large as this line needs
        fd = self.fd
        if fd is None:  # it failed to open
            if self.seq % REOPEN_EVERY:  # it failed, and it is not time to try again yet
                if not self._to_reserve(data):
                    self.unsaved.add(self.seq)
                return self.seq
            try:  # a failed rotation: the disk may have room again
                fd = self.open(len(data))
            except OSError:
                if not self._to_reserve(data):
                    self.unsaved.add(self.seq)
                return self.seq
        if self.map is not None:  # a generation just opened, mapped, as large as this line
            self.map[: len(data)] = data
            self.size = len(data)
            self.failing = None
            return self.seq
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
            if not self._to_reserve(data.removeprefix(b"\n")):
                self.unsaved.add(self.seq)
            return self.seq
        self.torn = False
        self.failing = None
        self.size += len(data)
        if self.size > ROTATE_BYTES:
            self._rotate()
        return self.seq

    def stop_mapping(self, why: str) -> None:
        """Write(2) from now on: a store into a mapped page of a file system that has shut down
        (I/O errors) is a SIGBUS, where write(2) returns an error the journal handles. Called
        when the disk runs low (`grow`) or the ledger's database fails."""
        if self.mappable:
            log.warning("journal_unmapped", why=why)
        self.mappable = False
        if self.map is not None and self.fd is not None:
            self._rotate()

    def _close_map(self) -> None:
        if self.map is not None:
            self.map.close()  # its pages stay in the page cache, to be written back
            self.map = None

    def _rotate(self, size: int = 0) -> None:
        """Close the open generation (its last row `self.seq`, or the one before when a row did
        not fit a mapped one) and open the next."""
        assert self.fd is not None
        last = self.seq - 1 if size else self.seq  # `size`: the row `seq` did not fit
        self._close_map()
        os.close(self.fd)
        self.fd = None
        self.closed.append((self.gen, last))
        self.gen += 1
        try:
            self.open(size)
        except OSError as exc:
            log.warning("journal_write_failed", path=str(self.path(self.gen)), error=str(exc))
            self.failing = str(exc)

    def committed(self, seq: int) -> None:
        """Rows up to `seq` are in the database: delete the generations they fill, and empty
        the reserve once every row in it is."""
        while self.closed and self.closed[0][1] <= seq:
            gen, _ = self.closed.pop(0)
            with contextlib.suppress(OSError):
                self.path(gen).unlink()
        if self.unsaved:
            self.unsaved = {s for s in self.unsaved if s > seq}
        if self.reserve_at and self.reserve_last <= seq and self.reserve_fd is not None:
            with contextlib.suppress(OSError):  # zeros into space the file holds: no new blocks
                os.pwrite(self.reserve_fd, bytes(self.reserve_at), 0)
                self.reserve_at = 0

    def close(self, *, keep: bool) -> None:
        """Stop writing; delete every generation and the reserve unless some row may be only
        here (`keep`)."""
        self._close_map()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.reserve_fd is not None:
            os.close(self.reserve_fd)
            self.reserve_fd = None
        if keep:
            return
        for path in [*(self.path(g) for g, _ in self.closed), self.path(self.gen)]:
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            self.reserve_path.unlink()
        self.closed = []


def _allocate(fd: int, offset: int, length: int) -> None:
    """Blocks for `length` bytes at `offset`, held by the file (raises OSError on a full disk)."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, offset, length)
    else:  # macOS: blocks written are blocks held
        os.pwrite(fd, bytes(length), offset)


def mappable(folder: Path) -> bool:
    """Does `folder`'s file system take mapped generations (`MAPPABLE`)? Linux only: the file
    system is the one mounted at the longest mount point holding the folder
    (/proc/self/mountinfo)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        where = os.path.realpath(folder)
        with Path("/proc/self/mountinfo").open(encoding="utf-8", errors="replace") as info:
            mounts = [entry.split() for entry in info]
    except OSError:
        return False
    best, kind, device = "", "", ""
    for fields in mounts:
        if "-" not in fields or len(fields) < 5:
            continue
        point = _unescape(fields[4])
        inside = where == point or where.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the last of equals: mounted over the others
            best, kind, device = point, fields[fields.index("-") + 1], fields[2]
    try:  # the mount found must be the folder's own device, or nothing is known
        st_dev = Path(where).stat().st_dev
    except OSError:
        return False
    return kind in MAPPABLE and device == f"{os.major(st_dev)}:{os.minor(st_dev)}"


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are written as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


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
        number = 1 << 62 if gen == RESERVE else int(gen) if gen.isdigit() else None
        if pid.isdigit() and number is not None and not _alive(int(pid)):
            found.append((int(pid), number, path))
    return [path for _, _, path in sorted(found)]


def read(path: Path) -> Iterator[bytes]:
    """The lines of one journal, reserve or mapped generation: a line never holds a zero byte,
    so zeros (a reserve's or a mapped generation's unused end, with rows appended after it by
    write(2) when the file was opened again) only separate lines. A line cut short is yielded
    as it is (it does not parse: the import skips it)."""
    for part in path.read_bytes().split(b"\x00"):
        for line in part.split(b"\n"):
            if line.strip():
                yield line
