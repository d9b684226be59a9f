"""`python bench/ledger_size.py [EXISTING]`: what writing a request's rows costs as the ledger
grows, with request ids as the daemon makes them (the second, then random digits: new rows at the
end of the indexes on the id) and with ids random throughout (as before 2026-12-08).

For each kind of id: a fresh SQLite ledger (`ledger.schema.migrate`, WAL, as the daemon opens it),
filled to EXISTING requests (default 300,000; each with one attempt), then 3 batches of 20,000
rows written as the writer thread writes them (`ledger.rows.write_rows`, 500 a transaction).
Prints JSON: CPU and wall microseconds per request row (its attempt row included), per kind."""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pirouter_py.ledger.rows import Rows, prepare, write_rows
from pirouter_py.ledger.schema import connect, migrate
from pirouter_py.record import Attempt, RequestRecord
from pirouter_py.server.middleware import new_request_id

BATCH = 500
MEASURED = 20_000
ROUNDS = 3


def random_id() -> str:
    return os.urandom(12).hex()


def rows(make_id: Callable[[], str], n: int) -> list[Rows]:
    attempt = Attempt("bench", "bench", "bench-model", "ok", input_tokens=10, output_tokens=20)
    return [
        prepare(
            RequestRecord(
                request_id=make_id(),
                ts=time.time(),
                protocol="openai",
                requested_model="auto",
                rule="policy:balanced:easy",
                difficulty="easy",
                primary="bench",
                final="bench",
                status="ok",
                http_status=200,
                streamed=False,
                latency_ms=1.2,
                overhead_ms=0.3,
                user_agent="bench/1",
                attempts=(attempt,),
            ),
            {},
        )
        for _ in range(n)
    ]


def measure(make_id: Callable[[], str], existing: int, folder: Path) -> dict[str, float]:
    db = connect(folder / f"{make_id.__name__}.db")
    migrate(db)
    for start in range(0, existing, BATCH):
        write_rows(db, rows(make_id, min(BATCH, existing - start)))
    cpu, wall = [], []
    for _ in range(ROUNDS):
        batch = rows(make_id, MEASURED)
        c0, w0 = time.process_time(), time.perf_counter()
        for start in range(0, MEASURED, BATCH):
            write_rows(db, batch[start : start + BATCH])
        cpu.append((time.process_time() - c0) / MEASURED * 1e6)
        wall.append((time.perf_counter() - w0) / MEASURED * 1e6)
    db.close()
    return {
        "cpu_us": round(statistics.median(cpu), 1),
        "wall_us": round(statistics.median(wall), 1),
    }


def main() -> None:
    existing = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    with tempfile.TemporaryDirectory(prefix="pirouter-ledger-size-") as tmp:
        result = {
            "existing": existing,
            "time_ordered": measure(new_request_id, existing, Path(tmp)),
            "random": measure(random_id, existing, Path(tmp)),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
