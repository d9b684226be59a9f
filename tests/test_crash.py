"""SIGKILL under load: the ledger stays consistent (whole transactions, no orphan attempts), and
after a restart has imported the killed daemon's journal, every answered request has its row."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

from pirouter_py.ledger import schema
from tests.fakes import Daemon, FakeUpstream, Reply
from tests.test_daemon_ledger import CONFIG, fire


def test_sigkill_under_load_leaves_a_consistent_ledger(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reset()
    fake.default("m-cheap", Reply(text="an answer", delay=0.05))
    book = tmp_path / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("{url}", fake.url).replace("{ledger}", str(book)))
    daemon = Daemon(config).start()

    async def load_then_kill() -> list[tuple[int, str, str]]:
        first = await fire(daemon.url, 150)  # written through to SQLite
        # Then hold the database's write lock, as another process might: answered rows pile up
        # in the writer's queue (and the journal), which is what a SIGKILL can take with it.
        locker.execute("BEGIN EXCLUSIVE")
        fake.default("m-cheap", Reply(text="an answer", delay=0.2))
        # 250 more, one every 2 ms: at the kill some are answered, some in flight, some unsent
        requests = asyncio.ensure_future(fire(daemon.url, 250, stagger=0.002))
        await asyncio.sleep(0.4)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        accepted.append(len(fake.seen))
        return first + await requests

    accepted: list[int] = []  # requests that had reached the upstream at the kill
    locker = sqlite3.connect(book, isolation_level=None)
    answers = asyncio.run(load_then_kill())
    assert daemon.stop() == -signal.SIGKILL
    locker.execute("ROLLBACK")
    locker.close()
    answered = {rid for status, rid, _ in answers if status == 200}
    db = schema.connect(book)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert schema.migrate(db) == []  # the schema is whole; opening it again changes nothing
    rows = {r[0] for r in db.execute("SELECT id FROM requests")}
    orphans = db.execute(
        "SELECT COUNT(*) FROM attempts WHERE request_id NOT IN (SELECT id FROM requests)"
    ).fetchone()[0]
    without = db.execute(
        "SELECT COUNT(*) FROM requests WHERE id NOT IN (SELECT request_id FROM attempts)"
    ).fetchone()[0]
    db.close()
    assert orphans == 0 and without == 0  # a request and its attempts commit together
    assert rows <= answered and len(answered - rows) >= 50  # answered, not yet in SQLite
    journals = list(tmp_path.glob("ledger.db.journal.*"))
    assert journals  # the rows still queued in memory when the daemon died
    restarted = Daemon(config).start()  # imports the journal, then runs on as usual
    assert restarted.stop() == 0
    assert not list(tmp_path.glob("ledger.db.journal.*"))
    db = schema.connect(book)
    after = {r[0] for r in db.execute("SELECT id FROM requests")}
    statuses = {r[0] for r in db.execute("SELECT status FROM requests")}
    db.close()
    in_flight = len(after - answered)  # journaled, killed before its last bytes were sent
    print(
        f"\nSIGKILL: {accepted[0]} accepted, {len(answered)} answered; "
        f"{len(rows)} rows in SQLite at the kill, "
        f"{len(after)} after the journal import; lost {len(answered - after)}; "
        f"recorded but not delivered {in_flight}"
    )
    assert answered <= after  # no answered request is lost
    assert rows <= after and statuses == {"ok"}
    assert in_flight <= 400 - len(answered)
