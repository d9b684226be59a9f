"""A full disk, for real (#27.5, #27.6): a small tmpfs mounted for the test (root is available
in CI), filled with a file, emptied again. A ledger that could not be opened at start is opened
once there is room, with the rows answered meanwhile; rows answered while the disk is full
survive a SIGKILL in the journal's preallocated reserve; with `[ledger] require = true`,
nothing is answered unrecorded."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import Daemon, FakeUpstream, Reply, fill, make_room, tmpfs
from tests.test_reload import BASE

CHAT = {"model": "auto", "stream": False, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """16 MiB: room for the ledger and its journal's 4 MiB reserve."""
    with tmpfs(tmp_path / "disk", "16m") as disk:
        yield disk


def health(daemon: Daemon) -> dict[str, object]:
    with urllib.request.urlopen(daemon.url + "/health", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def rows(ledger: Path) -> list[str]:
    db = sqlite3.connect(ledger)
    try:
        return [r[0] for r in db.execute("SELECT id FROM requests ORDER BY ts, id")]
    finally:
        db.close()


def config(tmp_path: Path, fake: FakeUpstream, ledger: Path, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[ledger]\npath = "{ledger}"\n{extra}' + BASE.replace("{url}", fake.url))
    return path


def test_a_ledger_that_could_not_open_is_opened_once_there_is_room(
    small_disk: Path, fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.reset()
    fill(small_disk)
    ledger = small_disk / "ledger.db"
    daemon = Daemon(config(tmp_path, fake, ledger)).start()
    try:
        assert health(daemon)["ledger"]["failing"] is True  # type: ignore[index]
        answered = [daemon.post(CHAT)[1]["x-pirouter-request-id"] for _ in range(3)]
        make_room(small_disk)
        deadline = time.monotonic() + 15
        while health(daemon)["ledger"]["failing"] and time.monotonic() < deadline:  # type: ignore[index]
            time.sleep(0.2)
        assert health(daemon)["ledger"]["failing"] is False  # type: ignore[index]
        assert daemon.log_lines("ledger_available")
    finally:
        assert daemon.stop() == 0
    assert sorted(rows(ledger)) == sorted(answered)


def test_rows_answered_on_a_full_disk_survive_a_kill(
    small_disk: Path, fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.reset()
    ledger = small_disk / "ledger.db"
    path = config(tmp_path, fake, ledger)
    daemon = Daemon(path).start()
    try:
        first = daemon.post(CHAT)[1]["x-pirouter-request-id"]
        time.sleep(0.6)  # written
        fill(small_disk)
        answered = [daemon.post(CHAT)[1]["x-pirouter-request-id"] for _ in range(20)]
        time.sleep(0.6)  # the writer tried, and failed
        assert health(daemon)["ledger"]["failing"] is True  # type: ignore[index]
    finally:
        daemon.stop(signal.SIGKILL)
    assert rows(ledger) == [first]
    make_room(small_disk)
    again = Daemon(path).start()  # imports what the killed daemon left
    again.stop()
    assert sorted(rows(ledger)) == sorted([first, *answered])
    assert not list(small_disk.glob("ledger.db.journal.*"))  # imported, then deleted


def test_require_refuses_to_answer_unrecorded(
    small_disk: Path, fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.reset()
    fill(small_disk)
    ledger = small_disk / "ledger.db"
    daemon = Daemon(config(tmp_path, fake, ledger, "require = true\n")).start()
    try:
        status, _, body = daemon.post(CHAT)
        assert status == 503
        assert "[ledger] require = true refuses to answer unrecorded" in body["error"]["message"]
        assert fake.seen == []
        make_room(small_disk)
        deadline = time.monotonic() + 15
        while daemon.post(CHAT)[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.3)
    finally:
        daemon.stop()
    assert len(rows(ledger)) >= 1


# Rows of about 12 KB (a stored 6,000-character prompt and answer): the 4 MiB reserve holds ~350.
BIG = "x" * 6000
WAVE = 150  # requests in flight at once
STORED = '[ledger]\npath = "{ledger}"\nstore_prompts = true\n{extra}'


async def wave(url: str, count: int) -> list[tuple[int, str, str]]:
    """`count` concurrent big requests; (status, request id, body)."""
    import aiohttp

    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=60), connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def one() -> tuple[int, str, str]:
            body = {"model": "auto", "messages": [{"role": "user", "content": BIG}]}
            try:
                async with session.post(url + "/v1/chat/completions", json=body) as response:
                    text = await response.text()
                    return response.status, response.headers.get("x-pirouter-request-id", ""), text
            except aiohttp.ClientError:
                return 0, "", ""

        return await asyncio.gather(*(one() for _ in range(count)))


def loaded_daemon(tmp_path: Path, fake: FakeUpstream, ledger: Path, extra: str) -> Path:
    fake.reset()
    fake.default("m-cheap", Reply(text=BIG, delay=0.05))
    path = tmp_path / "config.toml"
    head = STORED.replace("{ledger}", str(ledger)).replace("{extra}", extra)
    path.write_text(head + BASE.replace("{url}", fake.url))
    return path


def test_require_keeps_every_answered_row_at_the_edge_of_a_full_disk(
    small_disk: Path, fake: FakeUpstream, tmp_path: Path
) -> None:
    """Waves of concurrent requests on a full disk until the reserve is spent: every one
    answered survives a SIGKILL; the rest are refused with 503, saying why, and /health says
    the ledger is refusing."""
    ledger = small_disk / "ledger.db"
    path = loaded_daemon(tmp_path, fake, ledger, "require = true\n")
    daemon = Daemon(path).start()
    answered: list[str] = []
    refused: list[str] = []
    try:
        assert asyncio.run(wave(daemon.url, 1))[0][0] == 200  # the ledger is open
        time.sleep(0.6)
        fill(small_disk)
        for _ in range(12):
            answers = asyncio.run(wave(daemon.url, WAVE))
            answered += [rid for status, rid, _ in answers if status == 200]
            refused += [body for status, _, body in answers if status == 503]
            if len(refused) > WAVE:
                break
        assert refused, "the reserve was never spent"
        assert "[ledger] require = true" in json.loads(refused[0])["error"]["message"]
        assert health(daemon)["ledger"]["refused"] == len(refused)  # type: ignore[index]
    finally:
        daemon.stop(signal.SIGKILL)
    make_room(small_disk)
    Daemon(path).start().stop()
    lost = set(answered) - set(rows(ledger))
    print(f"\nrequire, kill on a full disk: {len(answered)} answered, lost {len(lost)}")
    assert not lost


def test_without_require_rows_that_could_not_be_kept_are_counted_and_named(
    small_disk: Path, fake: FakeUpstream, tmp_path: Path
) -> None:
    """Past the reserve, with require off, answers go on and their rows wait in memory; stopped
    while the disk is still full, those cannot be kept: /health counts them while it runs, and
    the stop says how many and which."""
    ledger = small_disk / "ledger.db"
    path = loaded_daemon(tmp_path, fake, ledger, "")
    daemon = Daemon(path).start()
    answered: list[str] = []
    try:
        assert asyncio.run(wave(daemon.url, 1))[0][0] == 200
        time.sleep(0.6)
        fill(small_disk)
        for _ in range(6):
            answers = asyncio.run(wave(daemon.url, WAVE))
            assert {status for status, _, _ in answers} == {200}
            answered += [rid for _, rid, _ in answers]
        unsaved = health(daemon)["ledger"]["unsaved"]  # type: ignore[index]
        with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert f"pirouter_ledger_unsaved_rows {float(unsaved)}" in metrics
    finally:
        assert daemon.stop() == 0
    make_room(small_disk)
    Daemon(path).start().stop()
    lost = set(answered) - set(rows(ledger))
    print(f"\nno require, stop on a full disk: {len(answered)} answered, lost {len(lost)}")
    [line] = daemon.log_lines("ledger_rows_lost")
    assert line["rows"] == len(lost) == unsaved
    assert set(line["request_ids"]) == lost
