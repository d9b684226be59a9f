"""Feedback: what a person (or a script) said of an answer, kept beside its request's row; and
the labels of shadow checks, written the same way.

A score is a number in 0..1, or "good" (1) / "bad" (0). Feedback is rare, so it is written at
once through a connection of its own (WAL lets it beside the daemon's writer), not batched.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from pirouter_py.ledger.schema import connect, migrate

WORDS = {"good": 1.0, "bad": 0.0}


def parse_score(value: object) -> float:
    """A score from what a client sent; ValueError with the sentence to show otherwise."""
    if isinstance(value, str) and value.strip().lower() in WORDS:
        return WORDS[value.strip().lower()]
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"score must be a number from 0 to 1, or good or bad, not {value!r}")
    return float(value)


def record_shadow(
    path: Path,
    request_id: str,
    alias: str,
    score: float,
    outcome: str,
    tokens: tuple[int, int],
    latency_ms: float,
    url: str | None = None,
) -> None:
    """Write one shadow check's label (rare: sampled, one at a time) to the ledger at `path`
    (or `url`)."""
    db = connect(path, url=url)
    try:
        migrate(db)
        db.execute(
            "INSERT INTO shadow (request_id, ts, alias, score, outcome, input_tokens, "
            "output_tokens, latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (request_id, time.time(), alias, score, outcome, *tokens, latency_ms),
        )
    finally:
        db.close()


def owner(path: Path, request_id: str, url: str | None = None) -> tuple[bool, str | None]:
    """Is there a request with this id in the ledger, and the name of the client key it came
    with (None: no key)."""
    db = connect(path, url=url)
    try:
        migrate(db)
        row = db.execute("SELECT client FROM requests WHERE id = ?", (request_id,)).fetchone()
    finally:
        db.close()
    return (False, None) if row is None else (True, row[0])


def record(
    path: Path,
    request_id: str,
    score: float,
    comment: str | None,
    source: str,
    url: str | None = None,
) -> None:
    """Write one feedback row to the ledger at `path` or `url` (made and migrated when new)."""
    db = connect(path, url=url)
    try:
        migrate(db)
        db.execute(
            "INSERT INTO feedback (request_id, ts, score, comment, source) VALUES (?, ?, ?, ?, ?)",
            (request_id, time.time(), score, comment, source),
        )
    finally:
        db.close()
