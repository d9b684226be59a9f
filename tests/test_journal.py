"""The ledger's journal on real files: rows on disk before the answer, rotation and deletion once
committed, import at the next start (duplicates skipped, torn lines skipped), live daemons' journals
left alone, a failing disk never failing a request; mapped generations (rows copied in, no system
call) where the file system allows, write(2) elsewhere, both surviving a SIGKILL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pirouter_py.ledger import journal
from pirouter_py.ledger import rows as ledger_rows
from pirouter_py.ledger.journal import Journal
from pirouter_py.ledger.rows import rows_from_line
from pirouter_py.ledger.schema import migrate
from pirouter_py.ledger.writer import Ledger
from tests.fakes import tmpfs
from tests.test_ledger import CHEAP, config_with, make_record, ok_attempt, rows, run


def lines(path: Path) -> list[str]:
    """The request ids of a journal's lines (rows as the ledger writes them, or whole records)."""
    return [str(rows_from_line(line, {})[0][0]) for line in journal.read(path)]


def test_rows_are_in_the_journal_before_sqlite_and_gone_once_committed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def go() -> None:
        book = Ledger(path, config_with(tmp_path))
        await book.open()
        book.record(make_record("a", attempts=(ok_attempt(),)))
        book.record(make_record("b", attempts=(ok_attempt(),)))
        # no await yet: the writer has not run, the rows are only in memory and in the journal
        assert lines(book.journal.path(0)) == ["a", "b"]
        await book.close()

    run(go())
    assert {r["id"] for r in rows(path)} == {"a", "b"}
    assert not list(tmp_path.glob("ledger.db.journal.*"))  # a clean close leaves none behind


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "write"])
def test_generations_rotate_and_are_deleted_when_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapped: bool
) -> None:
    monkeypatch.setattr(journal, "ROTATE_BYTES", 2_000)
    monkeypatch.setattr(journal, "MAP_BYTES", 2_000)
    path = tmp_path / "ledger.db"

    async def go() -> None:
        book = Ledger(path, config_with(tmp_path))
        book.journal.mappable = mapped
        await book.open()
        assert (book.journal.map is not None) == mapped  # tmp_path: ext4 or tmpfs here
        for i in range(30):
            book.record(make_record(f"r{i}", attempts=(ok_attempt(),)))
        files = sorted(tmp_path.glob("ledger.db.journal.*"))
        assert len(files) >= 3  # rotated past 2,000 bytes
        await book.queue.join()  # the writer committed all 30
        left = list(tmp_path.glob("ledger.db.journal.*"))
        reserve = book.journal.reserve_path  # set aside for a full disk, kept while open
        assert reserve in left and reserve.stat().st_blocks * 512 >= journal.RESERVE_BYTES
        left.remove(reserve)
        assert left == [book.journal.path(book.journal.gen)]  # only the open generation
        await book.close()

    run(go())
    assert len(rows(path)) == 30


def dead_pid() -> int:
    code = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True, check=True)
    return int(dead.stdout)  # a process that has exited


def test_a_dead_daemons_journal_is_imported_once_duplicates_and_torn_lines_skipped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    migrate(sqlite3.connect(path))
    pid = dead_pid()
    first = path.with_name(f"ledger.db.journal.{pid}.0")
    second = path.with_name(f"ledger.db.journal.{pid}.1")

    def row(rid: str) -> bytes:  # a whole record per line, as earlier builds wrote them
        return orjson.dumps(make_record(rid, attempts=(ok_attempt(),)))

    first.write_bytes(row("x") + b"\n" + row("y")[:40] + b"\n" + row("z") + b"\n")
    second.write_bytes(row("z") + b"\n")  # already in the first: written once

    async def start() -> None:
        book = Ledger(path, config_with(tmp_path))
        await book.open()
        await book.close()

    run(start())
    assert sorted(r["id"] for r in rows(path)) == ["x", "z"]  # type: ignore[type-var]
    assert not first.exists() and not second.exists()
    run(start())  # nothing to import twice
    assert len(rows(path)) == 2


def test_a_journal_row_keeps_the_price_it_was_served_under(tmp_path: Path) -> None:
    """Journal lines are the SQL rows as priced when the answer went out: a daemon killed, then
    restarted on a catalog with new prices, imports the old price (rows of the earlier format,
    whole records, are priced at import; the test above imports those). A line whose columns
    do not fit is skipped, not imported as a wrong row."""
    path = tmp_path / "ledger.db"
    served = config_with(tmp_path)  # cheap: 1.0 in, 2.0 out per million
    record = make_record("served", attempts=(ok_attempt(tokens=(10, 20)),))
    width = orjson.loads(journal.line(ledger_rows.prepare(record, served.models)))
    # columns missing: one more than the columns added since the first journal format (no
    # version had this shape)
    added = len(width[0]) - ledger_rows.OLDEST_JOURNAL_COLUMNS
    short = [width[0][: -(added + 1)], width[1], None]
    leftover = path.with_name(f"ledger.db.journal.{dead_pid()}.0")
    leftover.write_bytes(
        journal.line(ledger_rows.prepare(record, served.models)) + orjson.dumps(short) + b"\n"
    )
    repriced = config_with(tmp_path).models | {
        "cheap": CHEAP.model_copy(update={"input_per_m": 100.0, "output_per_m": 200.0})
    }

    async def restart() -> None:
        book = Ledger(path, served)
        book.models = repriced
        await book.open()
        await book.close()

    run(restart())
    [row] = rows(path)
    assert row["id"] == "served" and row["cost_usd"] == pytest.approx(50 / 1e6)
    assert row["attempts"][0]["cost_usd"] == pytest.approx(50 / 1e6)  # type: ignore[index]
    with pytest.raises(ValueError, match="column is missing"):
        ledger_rows.rows_from_line(orjson.dumps(short), {})
    # lines of the versions before `client`, and before `features`: imported, with none
    older = ledger_rows.rows_from_line(orjson.dumps([width[0][:-1], width[1], None]), {})
    assert older[0][:-1] == tuple(width[0][:-1]) and older[0][-1] is None
    oldest = ledger_rows.rows_from_line(orjson.dumps([width[0][:-2], width[1], None]), {})
    assert oldest[0][:-2] == tuple(width[0][:-2]) and oldest[0][-2:] == (None, None)
    nested = [[*width[0][:-1], [1]], width[1], None]
    with pytest.raises(ValueError, match="holds a list"):
        ledger_rows.rows_from_line(orjson.dumps(nested), {})


def test_a_running_daemons_journal_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = path.with_name(f"ledger.db.journal.{other.pid}.0")
        live.write_bytes(orjson.dumps(make_record("theirs")) + b"\n")
        assert journal.leftovers(path) == []
    finally:
        other.kill()
        other.wait()
    assert journal.leftovers(path) == [live]


def test_a_torn_write_is_ended_before_the_next_line(tmp_path: Path) -> None:
    book = Journal(tmp_path / "ledger.db")
    book.mappable = False  # the write(2) path (a mapped generation cannot fail a store)
    book.open()
    assert book.fd is not None
    os.write(book.fd, b'{"cut short')  # what a write stopped by a full disk leaves
    book.torn = True
    book.append(make_record("after"))
    book.close(keep=True)
    torn, after = journal.read(book.path(0))
    assert torn == b'{"cut short' and orjson.loads(after)["request_id"] == "after"


def test_an_unwritable_journal_never_fails_the_request(tmp_path: Path) -> None:
    book = Journal(tmp_path / "ledger.db")
    book.mappable = False  # the write(2) path (a mapped generation cannot fail a store)
    book.open()
    assert book.fd is not None
    os.close(book.fd)
    book.fd = os.open(book.path(0), os.O_RDONLY)  # every write now fails, as on a lost disk
    assert book.append(make_record("a")) == 1 and book.append(make_record("b")) == 2
    assert book.failing is not None and "Bad file descriptor" in book.failing
    book.close(keep=False)
    assert not book.path(0).exists()


def test_a_failed_rotation_is_retried_while_rows_keep_coming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "ROTATE_BYTES", 100)
    folder = tmp_path / "ledger"
    folder.mkdir()
    book = Journal(folder / "ledger.db")
    book.mappable = False  # rotates at ROTATE_BYTES (the mapped test is below)
    book.open()
    folder.chmod(0o500)  # no new files: the rotation's open fails (as root: replaced below)
    if os.access(folder, os.W_OK):  # root ignores modes: take the folder away instead
        folder.chmod(0o700)
        book.folder = tmp_path / "missing"
    book.append(make_record("fills-it"))  # over 100 bytes: rotates, and the open fails
    assert book.fd is None and book.failing is not None
    for i in range(150):
        book.append(make_record(f"r{i}"))
    assert book.fd is None  # not every row retries
    folder.chmod(0o700)
    book.folder = folder
    for i in range(150, 260):
        book.append(make_record(f"r{i}"))
    assert book.fd is not None and book.failing is None  # reopened within 100 rows
    book.close(keep=True)
    assert lines(book.path(book.gen - 1)) == ["r259"]  # each row rotates at 100 bytes


def test_large_rows_on_a_healthy_disk_are_admitted_and_a_small_reserve_governs_a_full_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[ledger] require`: a disk with room takes the rows in flight whatever the reserve's size
    (3 MB rows, 100 in flight: no 503s on a healthy disk); only a full one is judged by the
    reserve."""
    book = Journal(tmp_path / "ledger.db")
    book.open()
    book.row_max = 3 << 20  # rows of 3 MB have been seen (store_prompts)
    assert book.room(100)  # 300 MB in flight: the disk's free space holds them
    monkeypatch.setattr(journal, "FREE_MARGIN", 1 << 60)  # as if the disk had no room
    book._free_at = -1.0  # read the free space again
    assert not book.room(100) and not book.room(2)  # the 4 MiB reserve holds one such row
    book.row_max = 1_000
    assert book.room(100)
    book.close(keep=False)


def test_a_journal_that_could_not_open_at_start_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal that failed to open (its folder missing) makes `room` false until it opens,
    then true: `require` does not refuse forever once the disk is back."""
    folder = tmp_path / "later"
    book = Journal(folder / "ledger.db")
    try:
        book.open()
    except OSError as exc:
        book.failing = str(exc)  # as the ledger's writer records it
    assert book.fd is None and not book.room(1)
    folder.mkdir()
    book._retried_at = -10.0  # past GROW_EVERY_S
    assert book.room(1) and book.fd is not None and book.failing is None
    book.close(keep=False)


def test_mapped_generations_hold_every_line_however_large_and_survive_a_sigkill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mapped generation is written full of zeros and mapped; rows are copied in, a row that
    does not fit opens the next (as large as the row), and a daemon killed with SIGKILL leaves
    every row it journaled in its files, read back to the first zero byte."""
    monkeypatch.setattr(journal, "MAP_BYTES", 4_096)
    path = tmp_path / "ledger.db"
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from pathlib import Path
from pirouter_py.ledger import journal
from tests.test_ledger import make_record, ok_attempt
journal.MAP_BYTES = 4_096
book = journal.Journal(Path({str(path)!r}))
book.open()
assert book.map is not None and os.fstat(book.fd).st_size == 4_096
for i in range(20):
    book.append(make_record(f"r{{i}}", attempts=(ok_attempt(),)))
big = make_record("big", attempts=(ok_attempt(),), prompt="x" * 10_000)
book.append(big)  # larger than a generation: one of its own
book.append(make_record("after", attempts=(ok_attempt(),)))
print(book.gen, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    killed = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == -9, killed.stderr
    found = journal.leftovers(path)
    generations = [p for p in found if not p.name.endswith(journal.RESERVE)]
    assert len(generations) == int(killed.stdout) + 1  # every generation left behind
    ids = [rid for p in generations for rid in lines(p)]
    assert ids == [f"r{i}" for i in range(20)] + ["big", "after"]
    sizes = [p.stat().st_size for p in generations]
    assert all(size >= 4_096 for size in sizes) and max(sizes) >= 10_000

    async def restart() -> None:
        book = Ledger(path, config_with(tmp_path))
        await book.open()
        await book.close()

    run(restart())  # the next start imports them all, then deletes them
    assert sorted(r["id"] for r in rows(path)) == sorted(ids)  # type: ignore[type-var]
    assert not list(tmp_path.glob("ledger.db.journal.*"))


def test_a_generation_whose_zeros_do_not_fit_is_written_with_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk without room for a mapped generation's zeros (a real 12 MiB tmpfs; the generation
    16 MiB, and the free-space check told it had room): no file is left half made, and the row
    goes by write(2), whose failures the journal handles as before. Without room beyond the
    margin, the zeros are not even tried."""
    with tmpfs(tmp_path / "disk", "12m") as disk:
        book = Journal(disk / "ledger.db")
        monkeypatch.setattr(journal, "MAP_BYTES", 16 << 20)
        monkeypatch.setattr(journal, "FREE_MARGIN", -(1 << 40))  # as if it had room
        book.open()
        assert book.map is None and book.fd is not None
        assert book.path(0).stat().st_size == 0  # the zeros that fitted are gone
        book.append(make_record("a", attempts=(ok_attempt(),)))
        assert lines(book.path(0)) == ["a"]
        book.close(keep=False)
        monkeypatch.setattr(journal, "FREE_MARGIN", 64 << 20)  # the real margin: no zeros
        monkeypatch.setattr(journal, "MAP_BYTES", 4_096)
        small = Journal(disk / "ledger.db")
        small.open()
        assert small.map is None and small.fd is not None  # 8 MiB free is under the margin
        small.close(keep=False)


def test_which_file_systems_take_mapped_generations(tmp_path: Path) -> None:
    """Those that overwrite a file's blocks in place; never /proc (nor a copy-on-write file
    system, where a store into a full disk's mapping would be a SIGBUS)."""
    assert not journal.mappable(Path("/proc"))
    assert journal.mappable(Path("/dev/shm")) == sys.platform.startswith("linux")
    assert "btrfs" not in journal.MAPPABLE and "zfs" not in journal.MAPPABLE


def test_a_generation_already_there_is_appended_to_never_truncated(tmp_path: Path) -> None:
    """Two daemons that are both pid 1 in their containers name their generations alike: the
    one that comes second appends after the other's rows (write(2), as before the mapping),
    never truncates them; opening again in one process keeps its rows too. Zeros only separate
    lines when the journal is read back."""
    first = Journal(tmp_path / "ledger.db")
    first.open()
    assert first.map is not None
    first.append(make_record("theirs", attempts=(ok_attempt(),)))
    second = Journal(tmp_path / "ledger.db")  # the same pid, so the same file names
    second.open()
    assert second.map is None and second.fd is not None
    second.append(make_record("ours", attempts=(ok_attempt(),)))
    first.append(make_record("theirs-again", attempts=(ok_attempt(),)))
    first.open()  # opened again: the mapping is closed, the file kept
    first.append(make_record("after-reopen", attempts=(ok_attempt(),)))
    assert sorted(lines(first.path(0))) == ["after-reopen", "ours", "theirs", "theirs-again"]
    first.close(keep=True)
    second.close(keep=True)


def test_a_nearly_full_disk_or_a_failing_database_stops_the_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store into a mapped page of a file system that has shut down would be a SIGBUS: once
    the disk runs low, the journal goes on with write(2) (whose errors it handles)."""
    book = Journal(tmp_path / "ledger.db")
    book.open()
    book.append(make_record("mapped", attempts=(ok_attempt(),)))
    assert book.map is not None
    monkeypatch.setattr(journal, "FREE_MARGIN", 1 << 60)  # as if the disk had no room
    book._free_at = book._grown_at = -10.0  # read the free space again, now
    book.grow(1)
    assert book.map is None and book.fd is not None and book.mappable is False
    book.append(make_record("written", attempts=(ok_attempt(),)))
    assert [rid for g in range(book.gen + 1) for rid in lines(book.path(g))] == [
        "mapped",
        "written",
    ]
    book.close(keep=False)
