"""The ledger's database connection: a SQLite file by default, PostgreSQL with `[ledger] url`.

The ledger's SQL is written once, in the dialect both engines share where they can (window
functions, CTEs, `COALESCE`, aliased subqueries); the few SQLite spellings left are rewritten for
PostgreSQL by `translate`, once per statement (cached): `?` and `:name` parameters, `INSERT OR
IGNORE`, `json_group_object`, two-argument `MAX`, `instr`, `CROSS JOIN ... ON`, `WITHOUT ROWID`,
the column types (INTEGER is BIGINT there: `ts_ms` does not fit in 32 bits; REAL is DOUBLE
PRECISION: costs keep their digits), and `rowid`, read as `ctid` (the order rows were inserted in,
for these insert-only tables, until a prune's space is reused).

Invariants:
- A PostgreSQL connection behaves like the sqlite3 one its callers were written for: autocommit
  with explicit BEGIN/COMMIT, rows that are tuples and also mappings by column name, integer sums
  as ints, and errors raised as `sqlite3.Error` (`DatabaseError`), which every caller handles.
- A connection that broke (the server restarted) reconnects at its next statement; the writer's
  batch that was cut is written again whole (rows are inserted or ignored by their keys).
- psycopg is imported only when a URL is configured (`.venv/bin/pip install -e '.[team]'`).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from pirouter_py.errors import install_hint

CONNECT_TIMEOUT_S = 5
MIGRATION_LOCK = 0x70697275  # pg_advisory_lock key: one instance migrates at a time


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ...) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the ledger's code uses of a connection: sqlite3's, or `Postgres`."""

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...

    def close(self) -> None: ...


class DatabaseError(sqlite3.OperationalError):
    """A PostgreSQL error, raised as the sqlite3 error type the ledger's callers handle."""


def is_postgres(db: Connection) -> bool:
    return isinstance(db, Postgres)


def redact(url: str) -> str:
    """A URL fit for a message or a log line: its password replaced."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION"}


@functools.cache
def translate(sql: str) -> str:
    """A statement in the ledger's SQLite dialect, as PostgreSQL takes it (psycopg's `%s`)."""
    out = sql.replace("%", "%%").replace("?", "%s")
    out = _NAMED.sub(r"%(\1)s", out)
    if re.search(r"\bINSERT OR IGNORE INTO\b", out):
        out = out.replace("INSERT OR IGNORE INTO", "INSERT INTO").rstrip()
        out += " ON CONFLICT DO NOTHING"
    out = out.replace("json_group_object(", "json_object_agg(").replace(
        "json_object_agg(b, n)", "json_object_agg(b, n)::text"
    )
    out = re.sub(r"\bMAX\(0, ", "GREATEST(0, ", out)
    out = re.sub(r"\binstr\(", "strpos(", out)
    out = out.replace("CROSS JOIN", "JOIN").replace(") WITHOUT ROWID", ")")
    out = re.sub(r"\browid\b", "ctid", out)
    if re.match(r"\s*(CREATE TABLE|ALTER TABLE)", out):
        out = re.sub(r"\b(INTEGER|REAL)\b", lambda m: _TYPES[m.group(1)], out)
    return out


class Row(tuple[Any, ...]):
    """A row as a tuple that also reads as a mapping by column name (as sqlite3.Row does)."""

    names: tuple[str, ...] = ()

    def keys(self) -> tuple[str, ...]:
        return self.names

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)


@functools.lru_cache(maxsize=256)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"names": names, "__slots__": ()})


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    return _row_class(tuple(column.name for column in cursor.description or ()))


class Postgres:
    """A psycopg 3 connection in autocommit mode, speaking the ledger's SQL (`translate`)."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        self._pg: Any = None
        self._connect()

    def _connect(self) -> None:
        try:
            import psycopg
            from psycopg.adapt import Loader
        except ImportError:
            raise DatabaseError(
                f"[ledger] url needs the PostgreSQL driver: {install_hint('team')}"
            ) from None

        class Number(Loader):  # numeric (what SUM of a bigint is) as int or float, not Decimal
            def load(self, data: Any) -> int | float:
                text = bytes(data)
                return int(text) if text.lstrip(b"-").isdigit() else float(text)

        # a reader sees one moment of the ledger per transaction (as SQLite's WAL reader does)
        options = "-c default_transaction_isolation=repeatable\\ read" if self.read_only else ""
        try:
            self._pg = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                options=options,
                application_name="pirouter",
            )
        except psycopg.Error as exc:
            reason = _first_line(exc)
            raise DatabaseError(f"cannot connect to {redact(self.url)}: {reason}") from exc
        self._pg.adapters.register_loader("numeric", Number)
        self._pg.row_factory = _row_factory

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        import psycopg

        if self._pg is None or self._pg.closed or self._pg.broken:
            self._connect()
        try:
            return self._pg.execute(translate(sql), parameters or None)
        except psycopg.Error as exc:
            raise DatabaseError(_first_line(exc)) from exc

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> None:
        import psycopg

        rows = list(parameters)
        if not rows:
            return
        try:
            with self._pg.cursor() as cursor:
                cursor.executemany(translate(sql), rows)
        except psycopg.Error as exc:
            raise DatabaseError(_first_line(exc)) from exc

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def columns(db: Connection, table: str) -> tuple[str, ...]:
    """A table's columns, in their order."""
    if is_postgres(db):
        query = (
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position"
        )
        return tuple(row[0] for row in db.execute(query, (table,)))
    return tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})"))


def has_table(db: Connection, table: str) -> bool:
    if is_postgres(db):
        query = (
            "SELECT 1 FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name = ?"
        )
    else:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return db.execute(query, (table,)).fetchone() is not None
