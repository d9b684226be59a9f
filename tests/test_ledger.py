"""The SQLite ledger on real files: pricing, migrations (blank, every earlier version, v0.1),
the batched writer, spill and import, failures, retention, prompts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pirouter_py.config import Config, ModelConfig, load_config, parse_config
from pirouter_py.ledger import read as ledger_read
from pirouter_py.ledger import rows as ledger_rows
from pirouter_py.ledger import schema as ledger_schema
from pirouter_py.ledger import writer
from pirouter_py.ledger.pricing import attempt_cost
from pirouter_py.ledger.read import read_requests
from pirouter_py.ledger.schema import migrate
from pirouter_py.ledger.writer import Ledger
from pirouter_py.record import Attempt, RequestRecord

CHEAP = ModelConfig(
    provider="openai",
    model_id="provider-model-request",
    input_per_m=1.0,
    output_per_m=2.0,
    quality="standard",
    context_window=128000,
    supports_tools=True,
)


def make_record(
    rid: str = "r1",
    *,
    ts: float | None = None,
    attempts: tuple[Attempt, ...] = (),
    status: str = "ok",
    final: str | None = "cheap",
    **kw: object,
) -> RequestRecord:
    return RequestRecord(
        request_id=rid,
        ts=time.time() if ts is None else ts,
        protocol="openai",
        requested_model="auto",
        rule="test",
        difficulty="easy",
        primary="cheap",
        final=final,
        status=status,
        http_status=200,
        streamed=False,
        latency_ms=10.0,
        overhead_ms=0.4,
        attempts=attempts,
        **kw,
    )  # type: ignore[arg-type]


def ok_attempt(
    alias: str = "cheap", tokens: tuple[int, int] = (1_000_000, 1_000_000), **kw: object
) -> Attempt:
    return Attempt(
        alias,
        "openai",
        "provider-returned-different-id",
        "ok",
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        latency_ms=10.0,
        returned=True,
        **kw,
    )  # type: ignore[arg-type]


# --- pricing -------------------------------------------------------------------------------------


def test_v01_ledger_prices_attempts_by_alias() -> None:
    # v0.1's tests/ledger_smoke.rs: 1M in at $1/M and 1M out at $2/M is $3, whatever id the
    # provider returned.
    assert attempt_cost(CHEAP, ok_attempt()) == pytest.approx(3.0, abs=1e-9)
    assert attempt_cost(None, ok_attempt()) == 0.0


def test_v01_escalation_cost_example(example_config: Config) -> None:
    # reference §6.3: haiku short (100 in, 3 out), then sonnet (100 in, 50 out) = $0.001142
    haiku = Attempt(
        "haiku", "anthropic", "h", "escalated_short_response", input_tokens=100, output_tokens=3
    )
    sonnet = Attempt("sonnet", "anthropic", "s", "ok", input_tokens=100, output_tokens=50)
    request, _ = ledger_rows.rows_for(make_record(attempts=(haiku, sonnet)), example_config.models)
    assert request[7:10] == (200, 53, pytest.approx(0.001142, abs=1e-9))


def test_cache_tokens_are_priced_separately(example_config: Config) -> None:
    sonnet = example_config.models["sonnet"]  # 3 in, 15 out, 0.30 cache read, 3.75 cache write
    attempt = Attempt(
        "sonnet",
        "anthropic",
        "s",
        "ok",
        input_tokens=10_000,
        output_tokens=1_000,
        cache_read_tokens=6_000,
        cache_write_tokens=2_000,
    )
    expected = (2_000 * 3 + 6_000 * 0.30 + 2_000 * 3.75 + 1_000 * 15) / 1e6
    assert attempt_cost(sonnet, attempt) == pytest.approx(expected, abs=1e-9)
    haiku = example_config.models["haiku"]  # no cache prices: cached input at input_per_m
    assert attempt_cost(haiku, attempt) == pytest.approx((10_000 * 0.8 + 1_000 * 4) / 1e6, abs=1e-9)


# --- migrations ---------------------------------------------------------------------------------


def schema(db: sqlite3.Connection) -> dict[str, list[tuple[str, str]]]:
    tables = [
        r[0]
        for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    ]
    return {t: sorted((r[1], r[2]) for r in db.execute(f"PRAGMA table_info({t})")) for t in tables}


def test_migrations_from_a_blank_file(tmp_path: Path) -> None:
    db = ledger_schema.connect(tmp_path / "ledger.db")
    assert migrate(db) == [name for name, _ in ledger_schema.MIGRATIONS]
    assert migrate(db) == []  # idempotent
    assert {"requests", "attempts", "prompts", "_migrations"} <= set(schema(db))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("done", range(len(ledger_schema.MIGRATIONS)))
def test_migrations_from_every_earlier_version(tmp_path: Path, done: int) -> None:
    reference = ledger_schema.connect(tmp_path / "reference.db")
    migrate(reference)
    db = ledger_schema.connect(tmp_path / "older.db")
    migrate(db, upto=done)
    assert migrate(db) == [name for name, _ in ledger_schema.MIGRATIONS[done:]]
    assert schema(db) == schema(reference)


V01_ROW = (
    "01JABCDEFGHJKMNPQRSTVWXYZ0",
    "openai-cheap",
    "default",
    "haiku",
    "sonnet",
    json.dumps(
        [
            {
                "alias": "haiku",
                "provider": "anthropic",
                "model_id": "claude-haiku",
                "latency_ms": 812,
                "outcome": {
                    "kind": "escalated_http_error",
                    "message": "anthropic 529 <unknown status code>",
                },
            },
            {
                "alias": "sonnet",
                "provider": "anthropic",
                "model_id": "claude-sonnet",
                "latency_ms": 900,
                "outcome": {"kind": "ok", "input_tokens": 100, "output_tokens": 50},
            },
        ]
    ),
    100,
    50,
    0.00105,
    1800,
    "ok",
)


@pytest.mark.parametrize("with_requested_model", [False, True])
def test_a_v01_ledger_is_upgraded_in_place(tmp_path: Path, with_requested_model: bool) -> None:
    path = tmp_path / "ledger.db"
    old = sqlite3.connect(path)
    old.executescript(ledger_schema.V01_REQUESTS)
    if with_requested_model:
        old.execute("ALTER TABLE requests ADD COLUMN requested_model TEXT NOT NULL DEFAULT ''")
    ts = int(time.time()) - 60
    old.execute(
        "INSERT INTO requests (id, ts, route_rule, primary_model, final_model, "
        "cascade_path, input_tokens, output_tokens, cost_usd, latency_ms, status) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (V01_ROW[0], ts, *V01_ROW[2:]),
    )
    old.commit()
    old.close()
    db = ledger_schema.connect(path)
    migrate(db)
    db.row_factory = sqlite3.Row
    (row,) = read_requests(db, ts - 1)
    assert (row["final_model"], row["cost_usd"], row["requested_model"]) == ("sonnet", 0.00105, "")
    assert [(a["alias"], a["outcome"]) for a in row["attempts"]] == [
        ("haiku", "escalated_http_error"),
        ("sonnet", "ok"),
    ]
    # v0.1's own stats query still works on the upgraded file
    summary = db.execute(
        "SELECT final_model, COUNT(*), SUM(cost_usd) FROM requests "
        "WHERE ts >= ? GROUP BY final_model",
        (ts - 1,),
    ).fetchall()
    assert [tuple(r) for r in summary] == [("sonnet", 1, 0.00105)]


# --- the writer ---------------------------------------------------------------------------------


def config_with(tmp_path: Path, extra: str = "") -> Config:
    text = (
        '[providers.openai]\n[models.cheap]\nprovider = "openai"\nmodel_id = "x"\n'
        "input_per_m = 1.0\noutput_per_m = 2.0\n" + extra
    )
    return parse_config(text, "c")[0]


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def rows(path: Path) -> list[dict[str, object]]:
    db = ledger_read.open_read_only(path)
    assert db is not None
    try:
        return read_requests(db, 0)
    finally:
        db.close()


def test_writer_batches_and_close_drains_everything(tmp_path: Path) -> None:
    path = tmp_path / "data" / "ledger.db"

    async def go() -> None:
        book = Ledger(path, config_with(tmp_path))
        await book.open()
        for i in range(1200):
            book.record(make_record(f"r{i}", attempts=(ok_attempt(tokens=(10, 20)),)))
        await book.close()
        assert book.written == 1200 and book.status().backlog == 0

    run(go())
    written = rows(path)
    assert len(written) == 1200
    assert written[0]["attempts"][0]["cost_usd"] == pytest.approx(50 / 1e6, abs=1e-12)  # type: ignore[index]
    assert written[0]["cost_usd"] == pytest.approx(50 / 1e6, abs=1e-12)


def test_the_writer_keeps_up_when_full_batches_are_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a partial batch waits for rows to gather. Gathering after every batch capped the
    writer at BATCH_MAX rows per GATHER_S, and under a heavier load the queue grew without end.
    With a one-minute gather, the three full batches are written at once; the last five wait."""
    monkeypatch.setattr(writer, "BATCH_MAX", 10)
    monkeypatch.setattr(writer, "GATHER_S", 60.0)
    path = tmp_path / "ledger.db"

    async def go() -> None:
        book = Ledger(path, config_with(tmp_path))
        await book.open()
        for i in range(35):  # no await in between: the writer finds all of them queued
            book.record(make_record(f"r{i}", attempts=(ok_attempt(),)))
        async with asyncio.timeout(10):
            while book.written < 30:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert (book.written, book.status().backlog) == (30, 5)
        await book.close(timeout=0.1)  # the gathering writer is cancelled; close writes the rest
        assert book.written == 35

    run(go())
    assert len(rows(path)) == 35


@pytest.mark.parametrize("count", [1, 2, 31, 32, 33, 63, 64, 77, 500])
def test_a_batch_of_any_size_writes_every_row_once(tmp_path: Path, count: int) -> None:
    """Rows go in as multi-row INSERTs of power-of-two chunks: every size, boundaries included."""
    db = ledger_schema.connect(tmp_path / "ledger.db")
    ledger_schema.migrate(db)
    models = config_with(tmp_path).models
    batch = [
        make_record(
            f"r{i}",
            attempts=(ok_attempt(tokens=(i, 1)),) * (1 + i % 3),
            prompt=f'["p{i}"]' if i % 2 else None,
            answer=f"a{i}" if i % 2 else None,
        )
        for i in range(count)
    ]
    assert ledger_rows.write_batch(db, batch, models) == count
    assert ledger_rows.write_batch(db, batch[: count // 2 + 1], models) == count // 2 + 1  # ignored
    requests = db.execute("SELECT id, input_tokens FROM requests ORDER BY ts_ms, id").fetchall()
    assert sorted(requests) == sorted((f"r{i}", i * (1 + i % 3)) for i in range(count))
    attempts = db.execute("SELECT request_id, idx FROM attempts").fetchall()
    assert sorted(attempts) == sorted((f"r{i}", k) for i in range(count) for k in range(1 + i % 3))
    prompts = db.execute("SELECT request_id, messages, answer FROM prompts").fetchall()
    assert sorted(prompts) == sorted((f"r{i}", f'["p{i}"]', f"a{i}") for i in range(1, count, 2))
    db.close()


def test_a_row_is_priced_by_the_catalog_it_was_served_under(tmp_path: Path) -> None:
    """A reload that changes prices while rows wait for the writer does not reprice them."""
    path = tmp_path / "ledger.db"

    async def go() -> None:
        book = Ledger(path, config_with(tmp_path))
        await book.open()
        book.record(make_record("before", attempts=(ok_attempt(tokens=(10, 20)),)))
        book.models = config_with(tmp_path).models | {
            "cheap": CHEAP.model_copy(update={"input_per_m": 100.0, "output_per_m": 200.0})
        }
        book.record(make_record("after", attempts=(ok_attempt(tokens=(10, 20)),)))
        await book.close()

    run(go())
    cost = {row["id"]: row["cost_usd"] for row in rows(path)}
    assert cost == {"before": pytest.approx(50 / 1e6), "after": pytest.approx(5000 / 1e6)}


def test_full_queue_spills_to_jsonl_and_the_next_start_imports_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def overflow() -> None:
        book = Ledger(path, config_with(tmp_path), queue_max=5)
        await book.open()
        for i in range(40):  # no await in between: the writer cannot drain, the queue fills
            book.record(make_record(f"r{i}", attempts=(ok_attempt(),)))
        assert book.spilled == 35
        await book.close()

    run(overflow())
    spill = path.with_name("ledger.db.spill.jsonl")
    assert len(spill.read_text().splitlines()) == 35 and len(rows(path)) == 5

    async def restart() -> None:
        book = Ledger(path, config_with(tmp_path))
        await book.open()
        await book.close()

    run(restart())
    assert not spill.exists()
    imported = rows(path)
    assert sorted(r["id"] for r in imported) == sorted(f"r{i}" for i in range(40))  # type: ignore[type-var]
    assert all(r["attempts"] for r in imported)


def test_a_locked_file_delays_rows_but_loses_none(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    migrate(ledger_schema.connect(path))
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    released = threading.Event()

    def release_later() -> None:
        time.sleep(1.0)
        locker.execute("COMMIT")
        released.set()

    async def go() -> None:
        book = Ledger(path, config_with(tmp_path), busy_timeout=0.05)
        await book.open()
        threading.Thread(target=release_later).start()
        for i in range(10):
            book.record(make_record(f"r{i}"))
        await asyncio.sleep(0.5)
        status = book.status()
        assert status.failing and status.backlog == 10 and "locked" in (status.last_error or "")
        while not released.is_set():
            await asyncio.sleep(0.05)
        await book.close()
        assert book.written == 10

    run(go())
    locker.close()
    assert len(rows(path)) == 10


def test_close_waits_for_a_retry_still_writing_in_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown while the writer's retry is still in its thread: close lets that write end
    before it uses the connection (it once began its own transaction beside it, failed with
    "cannot start a transaction within a transaction" and spilled rows that were fine)."""
    path = tmp_path / "ledger.db"
    real = writer.write_rows
    calls, overlaps, active = [], [], []
    retrying, proceed = threading.Event(), threading.Event()

    def write_rows(db: sqlite3.Connection, prepared: list[ledger_rows.Rows]) -> int:
        overlaps.extend(active)
        active.append(len(calls))
        calls.append(len(prepared))
        try:
            if len(calls) == 1:
                raise sqlite3.OperationalError("database is locked")
            if len(calls) == 2:  # the retry: still running when shutdown begins
                retrying.set()
                proceed.wait(5)
            return real(db, prepared)
        finally:
            active.pop()

    monkeypatch.setattr(writer, "write_rows", write_rows)
    monkeypatch.setattr(writer, "RETRY_S", (0.01,))

    async def go() -> None:
        book = Ledger(path, config_with(tmp_path))
        await book.open()
        for i in range(10):
            book.record(make_record(f"r{i}"))
        while not retrying.is_set():
            await asyncio.sleep(0.01)
        threading.Timer(0.2, proceed.set).start()
        await book.close()
        assert book.spilled == 0

    run(go())
    assert overlaps == [] and len(calls) >= 2
    assert len(rows(path)) == 10
    assert not path.with_name("ledger.db.spill.jsonl").exists()


def test_rows_that_cannot_be_written_at_shutdown_are_spilled(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    migrate(ledger_schema.connect(path))
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")

    async def go() -> None:
        book = Ledger(path, config_with(tmp_path), busy_timeout=0.05)
        await book.open()
        book.record(make_record("kept"))
        await asyncio.sleep(0.3)
        await book.close(timeout=0.5)

    run(go())
    spill = path.with_name("ledger.db.spill.jsonl")
    assert ledger_rows.rows_from_line(spill.read_text(), {})[0][0] == "kept"
    locker.execute("COMMIT")
    locker.close()


def test_retention_prunes_old_rows_at_start(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    cfg = config_with(tmp_path, "[ledger]\nretention_days = 7\n")

    async def write(records: list[RequestRecord], config: Config) -> None:
        book = Ledger(path, config)
        await book.open()
        for r in records:
            book.record(r)
        await book.close()

    now = time.time()
    run(
        write(
            [
                make_record("old", ts=now - 8 * 86400, attempts=(ok_attempt(),)),
                make_record("new", ts=now - 6 * 86400, attempts=(ok_attempt(),)),
            ],
            config_with(tmp_path),
        )
    )
    run(write([], cfg))
    assert [r["id"] for r in rows(path)] == ["new"]
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 1
    # the hourly rollups went with the rows: only the kept row's hour is left, rolled up
    assert db.execute("SELECT hour, requests FROM rollup").fetchall() == [
        (int(now - 6 * 86400) // 3600, 1)
    ]
    assert (
        db.execute(
            "SELECT COUNT(*) FROM rollup_dirty WHERE hour < ?", (int(now) // 3600,)
        ).fetchone()[0]
        == 0
    )
    db.close()


def test_the_writer_rolls_up_ended_hours_also_when_idle(tmp_path: Path) -> None:
    """Rows of ended hours are rolled up by the writer without a request to wake it (a ledger
    from before the rollups has every hour dirty); the current hour waits for its end."""
    from pirouter_py.ledger import rollups

    path = tmp_path / "ledger.db"
    now = time.time()
    db = ledger_schema.connect(path)
    migrate(db)
    made = [make_record(f"r{i}", ts=now - i * 1800, attempts=(ok_attempt(),)) for i in range(10)]
    ledger_rows.write_batch(db, made, config_with(tmp_path).models)
    dirty = db.execute("SELECT COUNT(*) FROM rollup_dirty").fetchone()[0]
    assert dirty >= 5
    db.close()

    async def idle() -> None:
        book = Ledger(path, config_with(tmp_path))
        await book.open()
        await asyncio.sleep(1.0)
        await book.close()

    run(idle())
    db = sqlite3.connect(path)
    current = int(now) // rollups.HOUR
    assert db.execute("SELECT hour FROM rollup_dirty").fetchall() in ([], [(current,)])
    assert db.execute("SELECT SUM(requests) FROM rollup").fetchone()[0] == sum(
        int(r.ts) // rollups.HOUR < current for r in made
    )
    db.close()


def test_prompts_go_to_their_own_table(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def go() -> None:
        book = Ledger(path, config_with(tmp_path))
        await book.open()
        book.record(make_record("p", prompt='{"messages": []}', answer="hi"))
        book.record(make_record("q"))
        await book.close()

    run(go())
    db = sqlite3.connect(path)
    assert db.execute("SELECT request_id, messages, answer FROM prompts").fetchall() == [
        ("p", '{"messages": []}', "hi")
    ]
    db.close()


def test_stats_reads_a_ledger_while_it_is_being_written(
    tmp_path: Path, write_config: Callable[[str], Path]
) -> None:
    path = tmp_path / "ledger.db"
    db = ledger_schema.connect(path)
    migrate(db)
    ledger_rows.write_batch(
        db, [make_record("a", attempts=(ok_attempt(),))], config_with(tmp_path).models
    )
    db.execute("BEGIN")  # a writer holding an open transaction (WAL lets readers in)
    db.execute(
        "INSERT INTO requests (id, ts, primary_model, final_model, cascade_path, status) "
        "VALUES ('b', 0, '', '', '[]', 'ok')"
    )
    assert [r["id"] for r in rows(path)] == ["a"]
    db.execute("ROLLBACK")
    cfg = load_config(
        write_config(
            f'[ledger]\npath = "{path}"\n[providers.openai]\n'
            '[models.cheap]\nprovider = "openai"\nmodel_id = "x"\n'
        )
    )
    assert cfg.config.ledger.path == str(path)
