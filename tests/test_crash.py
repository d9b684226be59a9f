"""SIGKILL under load: the ledger stays consistent (whole transactions, no orphan attempts) and
opens again; the answered requests it lost are counted (rows still queued in memory)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from pirouter_py import ledger
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
        requests = asyncio.ensure_future(fire(daemon.url, 400))
        deadline = time.monotonic() + 10
        while len(fake.seen) < 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        return await requests

    answers = asyncio.run(load_then_kill())
    assert daemon.stop() == -signal.SIGKILL
    answered = {rid for status, rid, _ in answers if status == 200}
    db = ledger.connect(book)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert ledger.migrate(db) == []  # the schema is whole; opening it again changes nothing
    rows = {r[0] for r in db.execute("SELECT id FROM requests")}
    orphans = db.execute(
        "SELECT COUNT(*) FROM attempts WHERE request_id NOT IN (SELECT id FROM requests)"
    ).fetchone()[0]
    without = db.execute(
        "SELECT COUNT(*) FROM requests WHERE id NOT IN (SELECT request_id FROM attempts)"
    ).fetchone()[0]
    db.close()
    assert orphans == 0 and without == 0  # a request and its attempts commit together
    assert rows <= answered  # nothing recorded that was not answered
    lost = len(answered - rows)
    print(f"\nSIGKILL: {len(answered)} answered, {len(rows)} recorded, {lost} lost")
    assert len(answered) >= 100
    restarted = Daemon(config).start()  # and the daemon starts again on that file
    assert restarted.stop() == 0
