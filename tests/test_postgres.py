"""The ledger on PostgreSQL (#28): a real server the tests start (the distribution's binaries,
installed by `.ci/run`) on a loopback port, one database per test. The same rows read the same
from PostgreSQL as from SQLite (requests, attempts, labels, seeds, rollups); a daemon records
there, and `stats`, `ledger`, `learn`'s labels and the dashboard read it; two instances behind a
round-robin client share it, and one killed mid-run loses no answered row; the database down,
answers go on and their rows are written when it is back; `pirouter ledger migrate --to` copies a
SQLite ledger across, and again without copying twice."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.config import load_config
from pirouter_py.ledger import feedback, labels, read, rollups, schema
from pirouter_py.ledger import rows as ledger_rows
from pirouter_py.ledger.db import Connection, Postgres, translate
from tests.conftest import ROOT, need
from tests.fakes import Daemon, FakeUpstream
from tests.pgserver import PostgresServer, binaries
from tests.test_dashboard import CLIENT_KEY, CONFIG, KEY, records

pytestmark = need("PostgreSQL", binaries(), "apt-get install postgresql (only its binaries run)")

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


def write_config(folder: Path, upstream: str, url: str | None) -> Path:
    """The dashboard tests' config (two models, a UI key), its ledger in `folder` or at `url`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    ledger = f'{folder / "ledger.db"}"' + (f'\nurl = "{url}"' if url else "")
    path.write_text(CONFIG.replace("{url}", upstream).replace('{ledger}"', ledger))
    return path


def started(fake: FakeUpstream, pg: PostgresServer, tmp_path: Path) -> tuple[Daemon, str, Path]:
    """A daemon recording in a fresh database: (it, the database's URL, its config)."""
    fake.reset()
    url = pg.fresh()
    config = write_config(tmp_path, fake.url, url)
    return Daemon(config, env=ENV).start(), url, config


def both(tmp_path: Path, pg: PostgresServer) -> tuple[Connection, Connection]:
    lite = schema.connect(tmp_path / "ledger.db")
    lite.row_factory = sqlite3.Row  # type: ignore[attr-defined]  # as read.open_read_only has it
    post = schema.connect(tmp_path / "unused.db", url=pg.fresh())
    for db in (lite, post):
        schema.migrate(db)
    return lite, post


def test_statements_are_rewritten_for_postgresql() -> None:
    assert translate("INSERT OR IGNORE INTO t VALUES (?, ?)") == (
        "INSERT INTO t VALUES (%s, %s) ON CONFLICT DO NOTHING"
    )
    assert translate("SELECT x FROM t WHERE a LIKE 'e!_%' AND h = :hour ORDER BY rowid") == (
        "SELECT x FROM t WHERE a LIKE 'e!_%%' AND h = %(hour)s ORDER BY ctid"
    )
    assert translate("CREATE TABLE t (ts INTEGER, c REAL) WITHOUT ROWID") == (
        "CREATE TABLE t (ts BIGINT, c DOUBLE PRECISION)"
    )
    assert translate("SELECT CAST(x AS INTEGER)::text") == "SELECT CAST(x AS INTEGER)::text"


def test_the_same_rows_read_the_same_from_postgresql_and_sqlite(
    tmp_path: Path, pg: PostgresServer
) -> None:
    lite, post = both(tmp_path, pg)
    models = load_config(write_config(tmp_path / "c", "http://127.0.0.1:9", None)).config.models
    now = time.time()
    made = records(400, now - 3 * 86_400, 3 * 86_400 / 400)
    for db in (lite, post):
        assert ledger_rows.write_batch(db, made[:300], models) == 300
        assert ledger_rows.write_batch(db, made[250:], models) == 150  # 50 again: ignored
    for i, rid in enumerate(("gen-001", "gen-003", "gen-006")):
        for where, db in (("lite", lite), ("post", post)):
            db.execute(
                "INSERT INTO feedback (request_id, ts, score, comment, source) "
                "VALUES (?, ?, ?, ?, ?)",
                (rid, now - 100 + i, 0.25 * i, where, "cli"),
            )
            db.execute(
                "INSERT INTO shadow (request_id, ts, alias, score, outcome) VALUES (?, ?, ?, ?, ?)",
                (rid, now - 100 + i, "local", 1.0, "ok"),
            )

    got = {name: read.read_requests(db, 0) for name, db in (("lite", lite), ("post", post))}
    assert len(got["lite"]) == 400
    assert got["post"] == got["lite"]
    assert read.read_requests(post, now - 86_400, 7, newest_first=True, until=now) == (
        read.read_requests(lite, now - 86_400, 7, newest_first=True, until=now)
    )
    assert labels.read_labels(post, 0) == labels.read_labels(lite, 0)
    day, month = now - 86_400, now - 2 * 86_400
    for mine, theirs in zip(
        read.spend_since(post, day, month), read.spend_since(lite, day, month), strict=True
    ):
        assert mine == pytest.approx(theirs)
    assert read.client_spend_since(post, month) == read.client_spend_since(lite, month)
    assert read.traffic_seed(post, day, month, 0) == read.traffic_seed(lite, day, month, 0)
    assert read.count_since(post, day, 50) == read.count_since(lite, day, 50) == 50
    ids = [r["id"] for r in got["lite"][:20]]
    assert read.stored_prompts(post, ids) == read.stored_prompts(lite, ids)
    # the hourly rollups: computed by the same SQL on both, and read the same
    first, last = int(now - 3 * 86_400) // rollups.HOUR, int(now) // rollups.HOUR
    for db in (lite, post):
        assert rollups.catch_up(db, now, budget_s=600) == 0
        assert rollups.has(db)
    assert rollups.ready_hours(post, first, last) == rollups.ready_hours(lite, first, last)
    mine, theirs = rollups.read(post, first, last), rollups.read(lite, first, last)
    assert mine["times"] == theirs["times"] and sorted(mine["flow"]) == sorted(theirs["flow"])
    for key in ("groups", "series"):
        assert sorted(map(rounded, mine[key])) == sorted(map(rounded, theirs[key])), key
    this_hour = read.count_since(lite, last * rollups.HOUR, 400)  # not rolled up until it ends
    assert sum(g[6] for g in mine["groups"]) == 400 - this_hour
    # retention: the same rows go
    assert ledger_rows.prune(post, 2, now) == ledger_rows.prune(lite, 2, now) > 0
    assert read.read_requests(post, 0) == read.read_requests(lite, 0)
    for db in (lite, post):
        db.close()


def test_a_roll_up_on_one_instance_waits_for_rows_another_is_writing(
    tmp_path: Path, pg: PostgresServer
) -> None:
    """Two instances' writers on one database: rows of an ended hour are being committed by
    one (the hour already marked dirty) while the other rolls that hour up. The roll-up waits
    for them and counts them; nothing is left out of the hour's rollup."""
    url = pg.fresh()
    writer, roller = Postgres(url), Postgres(url)
    schema.migrate(writer)
    models = load_config(write_config(tmp_path, "http://127.0.0.1:9", None)).config.models
    hour_start = (int(time.time()) // rollups.HOUR - 2) * rollups.HOUR
    made = records(4, hour_start + 60, 60)
    ledger_rows.write_batch(writer, made[:2], models)  # the hour is marked dirty
    prepared = [ledger_rows.prepare(r, models) for r in made[2:]]
    writer.execute("BEGIN")
    ledger_rows._insert(writer, ledger_rows.INSERT_REQUEST, [p[0] for p in prepared])
    rollups.mark(writer, [hour_start])
    rolling = threading.Thread(target=rollups.catch_up, args=(roller, time.time(), 600))
    rolling.start()
    rolling.join(1.0)
    assert rolling.is_alive()  # waiting for the writer's transaction
    writer.execute("COMMIT")
    rolling.join(10)
    assert not rolling.is_alive()
    first = hour_start // rollups.HOUR
    assert sum(g[6] for g in rollups.read(roller, first, first)["groups"]) == 4
    for db in (writer, roller):
        db.close()


def rounded(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(round(v, 9) if isinstance(v, float) else v for v in row)


def test_schema_migrations_are_recorded_once_and_concurrent_starts_wait(
    tmp_path: Path, pg: PostgresServer
) -> None:
    url = pg.fresh()
    first, second = Postgres(url), Postgres(url)
    assert len(schema.migrate(first)) == len(schema.MIGRATIONS)
    assert schema.migrate(second) == []
    names = [r[0] for r in first.execute("SELECT name FROM _migrations ORDER BY name")]
    assert names == [name for name, _ in schema.MIGRATIONS]
    kinds = dict(
        first.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'requests'"
        ).fetchall()
    )
    assert kinds["ts_ms"] == "bigint" and kinds["cost_usd"] == "double precision"
    first.close()
    second.close()


AUTH = {"Authorization": f"Bearer {KEY}"}
ENV = {"PIROUTER_UI_KEY": KEY, "PIROUTER_UI_CLIENT_KEY": CLIENT_KEY}


def chat(daemon: Daemon) -> str:
    """One answered request's id."""
    status, headers, body = daemon.post(CHAT, **AUTH)
    assert status == 200, body
    return headers["x-pirouter-request-id"]


def get(daemon: Daemon, path: str) -> Any:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=AUTH)
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        conn.close()


def cli(config: Path, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "-c", str(config)])
    assert result.exit_code == 0, result.output
    return result.stdout


def rows_in(url: str, table: str = "requests") -> list[str]:
    """The request ids of a table's rows."""
    column = "id" if table == "requests" else "request_id"
    db = Postgres(url)
    try:
        return [r[0] for r in db.execute(f"SELECT {column} FROM {table}")]
    finally:
        db.close()


def wait_for(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_daemon_records_in_postgresql_and_every_reader_reads_it(
    fake: FakeUpstream, pg: PostgresServer, tmp_path: Path
) -> None:
    daemon, url, config = started(fake, pg, tmp_path)
    try:
        ids = [chat(daemon) for _ in range(6)]
        wait_for(lambda: sorted(rows_in(url)) == sorted(ids))
        status, _, body = daemon.post(
            {"request_id": ids[0], "score": "bad"}, "/v1/feedback", **AUTH
        )
        assert status == 200, body
        assert rows_in(url, "feedback") == [ids[0]]
        health = get(daemon, "/health")["ledger"]
        assert health["path"] == url and health["failing"] is False and health["written"] == 6
        board = get(daemon, "/ui/api/summary?window=24h")
        assert board["stats"]["requests"] == 6
    finally:
        daemon.stop()
    assert not (tmp_path / "ledger.db").exists()  # the file only places the journal
    assert json.loads(cli(config, "stats", "--json", "--hours", "1"))["requests"] == 6
    exported = [json.loads(line) for line in cli(config, "ledger", "export").splitlines()]
    assert sorted(r["id"] for r in exported) == sorted(ids)
    assert all(r["attempts"][0]["alias"] == "cheap" for r in exported)
    assert cli(config, "ledger", "path").strip() == url
    tail = cli(config, "ledger", "tail", "--json", "-n", "2").splitlines()
    assert [json.loads(line)["id"] for line in tail] == ids[-2:]
    scored = [json.loads(line) for line in cli(config, "ledger", "labels").splitlines()]
    assert {line["request_id"]: line["labels"]["cheap"] for line in scored}[ids[0]] == 0.0
    assert len(scored) == 6


def test_two_instances_share_one_ledger_and_a_killed_one_loses_no_answered_row(
    fake: FakeUpstream, pg: PostgresServer, tmp_path: Path
) -> None:
    """Round-robin across two instances; one is killed (SIGKILL) right after an answer, before
    its writer's next batch; started again, it writes what its journal held."""
    fake.reset()
    url = pg.fresh()
    configs = [write_config(tmp_path / name, fake.url, url) for name in ("a", "b")]
    a, b = (Daemon(c, env=ENV).start() for c in configs)
    answered = []
    try:
        for i in range(20):
            answered.append(chat((a, b)[i % 2]))
        answered.append(chat(a))
        a.stop(signal.SIGKILL)
        assert set(rows_in(url)) < set(answered)  # a's last rows were only in its journal
        answered += [chat(b) for _ in range(3)]
        a = Daemon(configs[0], env=ENV).start()  # imports its journal
        answered.append(chat(a))
        wait_for(lambda: sorted(rows_in(url)) == sorted(answered))
        stats = json.loads(cli(configs[1], "stats", "--json", "--hours", "1"))
        assert stats["requests"] == len(answered) == 25
    finally:
        a.stop()
        b.stop()


def fresh_machine(tmp_path: Path, upstream: str, url: str) -> Path:
    """A config recording at `url` with no [ledger] path: the journal and spill go to the
    platform data dir, which (XDG_DATA_HOME, see Daemon) does not exist yet."""
    path = tmp_path / "config.toml"
    path.write_text(
        CONFIG.replace("{url}", upstream).replace('path = "{ledger}"', f'url = "{url}"')
    )
    assert not (tmp_path / "data").exists()
    return path


def test_on_a_fresh_machine_a_killed_gateway_loses_no_answered_row(
    fake: FakeUpstream, pg: PostgresServer, tmp_path: Path
) -> None:
    """The data dir is made at start (0700), so the journal is written from the first request:
    SIGKILL right after N answers, and the restart writes every one."""
    fake.reset()
    url = pg.fresh()
    config = fresh_machine(tmp_path, fake.url, url)
    daemon = Daemon(config, env=ENV).start()
    try:
        answered = [chat(daemon) for _ in range(12)]
    finally:
        daemon.stop(signal.SIGKILL)
    assert not daemon.log_lines("journal_unavailable")
    data = tmp_path / "data" / "pirouter"
    assert data.stat().st_mode & 0o777 == 0o700
    journals = list(data.glob("ledger.db.journal.*"))
    assert journals and all(j.stat().st_mode & 0o777 == 0o600 for j in journals)
    lost_at_kill = len(set(answered) - set(rows_in(url)))
    again = Daemon(config, env=ENV).start()  # imports the journal
    try:
        wait_for(lambda: sorted(rows_in(url)) == sorted(answered))
    finally:
        again.stop()
    print(f"\nfresh machine: {lost_at_kill} of 12 rows only in the journal at the kill; lost 0")


def test_a_data_dir_that_cannot_be_made_stops_the_start(
    fake: FakeUpstream, pg: PostgresServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("")  # a file where the data dir would be (root writes anywhere else)
    path = tmp_path / "config.toml"
    path.write_text(
        CONFIG.replace("{url}", fake.url).replace('path = "{ledger}"', f'url = "{pg.fresh()}"')
    )
    daemon = Daemon(path, env=ENV)
    with pytest.raises(RuntimeError) as failed:
        daemon.start(timeout=15)
    assert daemon.proc is not None and daemon.proc.returncode == 1
    err = str(failed.value)
    assert "Traceback" not in err
    assert f"cannot write the ledger's journal in {blocker / 'pirouter'}" in err, err


def test_with_the_database_down_answers_go_on_and_rows_follow(
    fake: FakeUpstream, pg: PostgresServer, tmp_path: Path
) -> None:
    daemon, url, _ = started(fake, pg, tmp_path)
    try:
        before = chat(daemon)
        wait_for(lambda: rows_in(url) == [before])
        pg.kill()
        try:
            during = [chat(daemon) for _ in range(3)]
            wait_for(lambda: get(daemon, "/health")["ledger"]["failing"])
        finally:
            pg.start()
        wait_for(lambda: sorted(rows_in(url)) == sorted([before, *during]), timeout=30)
        assert get(daemon, "/health")["ledger"]["failing"] is False
    finally:
        daemon.stop()


def test_ledger_migrate_copies_a_sqlite_ledger_once(
    fake: FakeUpstream, pg: PostgresServer, tmp_path: Path
) -> None:
    url = pg.fresh()
    local = write_config(tmp_path / "local", fake.url, None)
    shared = write_config(tmp_path / "shared", fake.url, url)
    book = tmp_path / "local" / "ledger.db"
    db = schema.connect(book)
    schema.migrate(db)
    models = load_config(local).config.models
    ledger_rows.write_batch(db, records(120, time.time() - 7200, 60), models)
    db.close()
    feedback.record(book, "gen-002", 0.0, "wrong", "cli")
    out = cli(local, "ledger", "migrate", "--to", url)
    assert "copied 120 requests" in out and "1 feedback" in out
    want = json.loads(cli(local, "stats", "--json", "--hours", "3"))
    got = json.loads(cli(shared, "stats", "--json", "--hours", "3"))
    for key in ("requests", "successes", "escalated"):
        assert got[key] == want[key] == (120 if key == "requests" else got[key])
    assert got["cost_usd"] == pytest.approx(want["cost_usd"])
    assert cli(shared, "ledger", "labels") == cli(local, "ledger", "labels")
    again = cli(local, "ledger", "migrate", "--to", url)  # nothing twice
    assert "copied 0 requests" in again and "0 feedback" in again
    assert len(rows_in(url)) == 120 and len(rows_in(url, "feedback")) == 1


def test_a_bad_url_is_a_clear_error(fake: FakeUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake.url, "postgresql://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(app, ["stats", "-c", str(config)])
    assert result.exit_code == 1
    assert "cannot read the ledger at postgresql://nobody@127.0.0.1:1/none" in result.output
    assert "Traceback" not in result.output
    bad = write_config(tmp_path / "bad", fake.url, "mysql://x")
    result = CliRunner().invoke(app, ["stats", "-c", str(bad)])
    assert result.exit_code != 0 and "use a postgresql:// URL" in result.output
    result = CliRunner().invoke(
        app, ["ledger", "migrate", "--to", "sqlite:///x", "-c", str(config)]
    )
    assert result.exit_code == 2 and "use a postgresql:// URL" in result.output


def test_without_urls_neither_driver_is_imported(tmp_path: Path) -> None:
    """A single-machine daemon (no [ledger] url, no [state] url) records a request in its
    SQLite file, reads it back, and has imported neither psycopg nor redis."""
    config = write_config(tmp_path, "http://127.0.0.1:9", None)
    code = f"""
import asyncio, sys
from pathlib import Path
from pirouter_py.config import load_config
from pirouter_py.ledger import read
from pirouter_py.ledger.writer import Ledger
from pirouter_py.server import app
from tests.test_ledger import make_record

async def main():
    config = load_config(Path({str(config)!r})).config
    ledger = Ledger(Path({str(tmp_path / "ledger.db")!r}), config)
    await ledger.open()
    ledger.record(make_record())
    await ledger.close()

asyncio.run(main())
db = read.open_read_only(Path({str(tmp_path / "ledger.db")!r}))
assert len(read.read_requests(db, 0)) == 1
print(sorted(m for m in ("psycopg", "redis") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_missing_driver_is_named_with_the_fix(fake: FakeUpstream, tmp_path: Path) -> None:
    """Without psycopg installed (a stand-in that fails to import), `run` refuses to start and
    `stats` says what to install; neither shows a traceback."""
    stand_in = tmp_path / "site" / "psycopg"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("raise ImportError('No module named psycopg')\n")
    config = write_config(tmp_path, fake.url, "postgresql://x@127.0.0.1:1/db")
    env = {**os.environ, **ENV, "PYTHONPATH": str(tmp_path / "site")}
    for command in (["run", "--port", "0"], ["stats"]):
        out = subprocess.run(
            [sys.executable, "-m", "pirouter_py", "-c", str(config), *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        assert out.returncode in (1, 3), out
        # the hint works from this checkout: its own pip, the checkout's path and the extra
        assert f"install -e '{ROOT}[team]'" in out.stderr
        assert "Traceback" not in out.stderr + out.stdout
