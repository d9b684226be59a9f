"""Copying a SQLite ledger into PostgreSQL: `pirouter ledger migrate --to URL`.

Invariants:
- The source is only read; the target is migrated to the current schema first, and takes every
  table's rows in chunks, one transaction each, so a copy cut short is simply run again.
- Running it again copies nothing twice: rows with keys are inserted or ignored; feedback and
  shadow labels (no key) are skipped when the target has one of the same request and time.
- Columns the source lacks (an older file) take the target's defaults; the rollups are not
  copied but every hour is marked dirty, and the daemon's writer recomputes them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pirouter_py.ledger import rollups
from pirouter_py.ledger.db import Connection, Postgres, columns, has_table
from pirouter_py.ledger.read import open_read_only
from pirouter_py.ledger.rows import inserts
from pirouter_py.ledger.schema import migrate

CHUNK = 5_000
# (table, the columns that tell a copied row again where the table has no key)
TABLES: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("requests", None),
    ("attempts", None),
    ("prompts", None),
    ("responses", None),
    ("feedback", ("request_id", "ts")),
    ("shadow", ("request_id", "ts")),
)


class NothingToCopy(ValueError):
    """The source has no ledger."""


def copy(
    source: Path, url: str, report: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Copy the SQLite ledger at `source` into the database at `url`; rows copied per table."""
    src = open_read_only(source)
    if src is None:
        raise NothingToCopy(f"no ledger at {source}")
    dst = Postgres(url)
    try:
        migrate(dst)
        copied = {}
        for table, identity in TABLES:
            if has_table(src, table):
                copied[table] = _table(src, dst, table, identity, report)
        dst.execute(
            "INSERT OR IGNORE INTO rollup_dirty SELECT DISTINCT CAST(ts AS INTEGER) / "
            f"{rollups.HOUR} FROM requests"
        )
        return copied
    finally:
        src.close()
        dst.close()


def _table(
    src: Connection,
    dst: Postgres,
    table: str,
    identity: tuple[str, ...] | None,
    report: Callable[[str, int], None] | None,
) -> int:
    theirs = columns(dst, table)
    names = tuple(c for c in columns(src, table) if c in theirs)
    seen: set[tuple[Any, ...]] = set()
    if identity is not None:
        seen = {tuple(r) for r in dst.execute(f"SELECT {', '.join(identity)} FROM {table}")}
    where = [names.index(c) for c in identity or ()]
    insert = inserts(table, names)  # its `from_json`: one JSON parameter a chunk
    cursor = src.execute(f"SELECT {', '.join(names)} FROM {table} ORDER BY rowid")
    done = 0
    while True:
        chunk = cursor.fetchmany(CHUNK)
        if not chunk:
            return done
        rows = [tuple(r) for r in chunk]
        if identity is not None:
            rows = [r for r in rows if tuple(r[i] for i in where) not in seen]
        dst.execute("BEGIN")
        try:  # rowcount: the rows not there already
            done += dst.execute(insert.from_json, (insert.json(rows),)).rowcount
            dst.execute("COMMIT")
        except BaseException:
            dst.execute("ROLLBACK")
            raise
        if report is not None:
            report(table, done)
