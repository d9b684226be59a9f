"""`python bench/dashboard_reads.py [ROWS] [READS]`: the dashboard's requests page read both ways,
as JSON: today's (the standard library's sqlite3 on a read-only connection of its own, in
`asyncio.to_thread`: server/dashboard.py `_find`), the same code on one connection kept in a
thread of its own, and aiosqlite's (the same statements through `aiosqlite`, a connection per
read as today, and one kept open).

Over a generated ledger of ROWS requests (default 100,000, written here through the ledger's own
writer), each way reads the newest 50 requests with their attempts, feedback and kept prompts
READS times (default 200) one after another, then READS times again 8 at a time, unfiltered and
filtered (`status=escalated`, `model=strong`: the EXISTS over attempts). It reports per read
the median and p95 in ms, the wall time of the run 8 at a time, and the event loop's longest
stall meanwhile (a 1 ms ticker): both ways keep SQLite off the loop, so that stall is what each
costs the daemon (noisy on a busy machine).

aiosqlite is not a dependency: install it to compare (`pip install aiosqlite`); without it only
today's way is measured.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pirouter_py.config import load_config
from pirouter_py.ledger import schema, search
from pirouter_py.ledger.read import open_read_only as read_only
from pirouter_py.ledger.rows import write_batch
from pirouter_py.record import Attempt, RequestRecord
from pirouter_py.server import dashboard

LIMIT = 50
CONFIG = """
[providers.fake]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
[models.cheap]
provider = "fake"
model_id = "m-cheap"
quality = "basic"
input_per_m = 0.15
output_per_m = 0.6
[models.strong]
provider = "fake"
model_id = "m-strong"
quality = "strong"
input_per_m = 3.0
output_per_m = 15.0
"""
CONCURRENT = 8
FILTERED = search.Filters(status="escalated", model="strong")


def today(path: Path, filters: search.Filters) -> Callable[[], Awaitable[Any]]:
    async def read() -> Any:
        found = asyncio.to_thread(dashboard._find, (path, None), filters, 0.0, LIMIT, None)
        return (await found)[0]

    return read


def kept_sqlite3(path: Path, filters: search.Filters) -> Callable[[], Awaitable[Any]]:
    """Today's code on one connection kept in one thread of its own (what aiosqlite does)."""
    pool = ThreadPoolExecutor(1)
    db = pool.submit(read_only, path).result()
    assert db is not None

    async def read() -> Any:
        found = asyncio.get_running_loop().run_in_executor(
            pool, dashboard.find_on, db, filters, 0.0, LIMIT, None
        )
        return (await found)[0]

    return read


def with_aiosqlite(path: Path, filters: search.Filters, keep: Any = None) -> Any:
    """The same statements as `search.find` + `dashboard._find`, awaited through aiosqlite."""
    import aiosqlite  # type: ignore[import-not-found]

    db = read_only(path)
    assert db is not None
    clauses, params = search.where(db, filters, None)  # the same SQL as today's
    db.close()

    async def read() -> Any:
        db = keep or await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
        try:
            db.row_factory = aiosqlite.Row
            query = (
                f"SELECT * FROM requests WHERE ts >= ?{clauses} ORDER BY ts DESC, rowid DESC "
                f"LIMIT {LIMIT}"
            )
            rows = [dict(r) for r in await db.execute_fetchall(query, (0, *params))]
            ids = [r["id"] for r in rows]
            marks = ", ".join("?" * len(ids))
            attempts: dict[str, list[dict[str, Any]]] = {}
            for a in await db.execute_fetchall(
                f"SELECT * FROM attempts WHERE request_id IN ({marks}) ORDER BY request_id, idx",
                ids,
            ):
                attempts.setdefault(a["request_id"], []).append(dict(a))
            scores = dict(
                await db.execute_fetchall(
                    f"SELECT request_id, score FROM feedback WHERE request_id IN ({marks}) "
                    "ORDER BY ts, rowid",
                    ids,
                )
            )
            kept = {
                r[0]: (r[1], r[2])
                for r in await db.execute_fetchall(
                    "SELECT request_id, messages, answer FROM prompts "
                    f"WHERE request_id IN ({marks})",
                    ids,
                )
            }
            out = []
            for row in rows:
                row["attempts"] = attempts.get(row["id"], [])
                row["feedback"] = scores.get(row["id"])
                row["prompt"], row["answer"] = kept.get(row["id"], (None, None))
                out.append(dashboard.panels.live_row(row))
            return out
        finally:
            if keep is None:
                await db.close()

    return read


def generate(path: Path, n: int, now: float) -> None:
    """`n` requests over the last 30 days: cheap answers, one in eight escalated to strong (and
    answered), one in forty failed, from three apps and two client keys; one in ten with
    feedback."""
    config = path.with_name("config.toml")
    config.write_text(CONFIG)
    models = load_config(config).config.models
    db = schema.connect(path)
    schema.migrate(db)
    step = 30 * 86_400 / n
    batch: list[RequestRecord] = []
    for i in range(n):
        escalated, failed = i % 8 == 3, i % 40 == 7
        cheap = Attempt("cheap", "fake", "m-cheap", "ok", None, None, 800, 120, returned=True)
        attempts: tuple[Attempt, ...] = (cheap,)
        if escalated:
            attempts = (
                Attempt("cheap", "fake", "m-cheap", "escalated_short_response", None, None, 800, 2),
                Attempt("strong", "fake", "m-strong", "ok", None, None, 800, 300, returned=True),
            )
        if failed:
            attempts = (Attempt("cheap", "fake", "m-cheap", "fatal_error", 400, "bad request"),)
        batch.append(
            RequestRecord(
                request_id=f"r{i:08d}",
                ts=now - 30 * 86_400 + i * step,
                protocol=("openai", "anthropic")[i % 2],
                requested_model="auto",
                rule="policy:balanced:easy",
                difficulty="easy",
                primary="cheap",
                final=None if failed else attempts[-1].alias,
                status="exhausted" if failed else "ok",
                http_status=502 if failed else 200,
                streamed=bool(i % 3),
                latency_ms=100 + i % 900,
                overhead_ms=0.5,
                ttft_ms=50 + i % 400,
                user_agent=("claude-cli/2.1.3", "codex_cli_rs/0.17", "python-httpx/0.28")[i % 3],
                client=("alice", "bob", None)[i % 3],
                attempts=attempts,
            )
        )
        if len(batch) == 5_000:
            write_batch(db, batch, models)
            batch = []
    write_batch(db, batch, models)
    rows = [(f"r{i:08d}", now, float(i % 2), None, "bench") for i in range(0, n, 10)]
    db.executemany(
        "INSERT INTO feedback (request_id, ts, score, comment, source) VALUES (?, ?, ?, ?, ?)",
        rows,
    )
    db.commit() if hasattr(db, "commit") else None
    db.close()


async def measure(read: Callable[[], Awaitable[Any]], reads: int) -> dict[str, Any]:
    first = await read()
    times = []
    for _ in range(reads):
        t = time.perf_counter()
        await read()
        times.append((time.perf_counter() - t) * 1000)
    stall = 0.0
    running = True

    async def ticker() -> None:
        nonlocal stall
        while running:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            stall = max(stall, (time.perf_counter() - t) * 1000 - 1)

    tick = asyncio.create_task(ticker())
    t = time.perf_counter()
    gate = asyncio.Semaphore(CONCURRENT)  # as 8 pages would: each waits for its answer

    async def one() -> None:
        async with gate:
            await read()

    await asyncio.gather(*(one() for _ in range(reads)))
    wall = (time.perf_counter() - t) * 1000
    running = False
    await tick
    times.sort()
    return {
        "rows": len(first),
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * len(times)) - 1], 2),
        f"wall_ms_{CONCURRENT}_at_a_time": round(wall, 1),
        "loop_stall_max_ms": round(stall, 2),
    }


async def main(rows: int, reads: int) -> dict[str, Any]:
    out: dict[str, Any] = {"ledger_rows": rows, "reads": reads, "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        generate(path, rows, time.time())
        for name, filters in (("newest", search.Filters()), ("filtered", FILTERED)):
            out[f"{name}: sqlite3 in to_thread"] = await measure(today(path, filters), reads)
            out[f"{name}: sqlite3, one connection kept in a thread"] = await measure(
                kept_sqlite3(path, filters), reads
            )
            try:
                import aiosqlite
            except ImportError:
                out["aiosqlite"] = "not installed: pip install aiosqlite to compare"
                continue
            out[f"{name}: aiosqlite, a connection per read"] = await measure(
                with_aiosqlite(path, filters), reads
            )
            async with aiosqlite.connect(f"file:{path}?mode=ro", uri=True) as kept:
                out[f"{name}: aiosqlite, one connection kept"] = await measure(
                    with_aiosqlite(path, filters, kept), reads
                )
            out["aiosqlite"] = aiosqlite.__version__
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    reads = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    print(json.dumps(asyncio.run(main(rows, reads)), indent=2))
