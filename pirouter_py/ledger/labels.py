"""Labels from use: what the ledger says of each model's answer to each request, in the
labelled-prompt format (`{"messages", "labels": {alias: score}, "tokens": {alias: {in, out}}}`).

An attempt whose answer was returned scores 1; one escalated by an answer check (short, truncated,
empty, marker, a failed check) scores 0; errors, cancellations and v0.1's http escalations say
nothing of quality and give no label. Feedback (`POST /v1/feedback`, `pirouter feedback`) on a
request replaces the returned model's score with the newest score given. A shadow check
([learning] shadow_rate) labels the cheaper model it asked, unless that model was tried for
real. The prompt's text is present only where `[ledger] store_prompts` kept it; otherwise a line
carries the request's hashed features (`[learning] keep_features`), which train a learned router
but cannot re-route.
"""

from __future__ import annotations

from typing import Any

import orjson

from pirouter_py.ledger.db import Connection, has_table
from pirouter_py.ledger.read import read_requests, stored_prompts
from pirouter_py.record import ANSWER_OUTCOMES, OK


def attempt_labels(attempts: list[dict[str, Any]], final: str | None) -> dict[str, float]:
    """Score per alias from one request's attempts and the alias that answered (the last
    attempt of an alias wins)."""
    out: dict[str, float] = {}
    for a in attempts:
        outcome, alias = a.get("outcome"), a.get("alias")
        if not alias or outcome not in ANSWER_OUTCOMES:
            continue
        if outcome == OK:
            if a.get("returned") or alias == final:  # v0.1 rows keep no `returned`
                out[alias] = 1.0
        else:
            out[alias] = 0.0
    return out


def _feedback(db: Connection, since: float) -> dict[str, float]:
    if not has_table(db, "feedback"):
        return {}
    query = "SELECT request_id, score FROM feedback WHERE ts >= ? ORDER BY ts, rowid"
    return dict(db.execute(query, (since,)))


def _shadow(db: Connection, since: float) -> dict[str, list[tuple[str, float, int, int]]]:
    """Shadow checks' labels per request: (alias, score, input tokens, output tokens)."""
    if not has_table(db, "shadow"):
        return {}
    out: dict[str, list[tuple[str, float, int, int]]] = {}
    query = (
        "SELECT request_id, alias, score, input_tokens, output_tokens FROM shadow "
        "WHERE ts >= ? ORDER BY ts, rowid"
    )
    for rid, alias, score, tin, tout in db.execute(query, (since,)):
        out.setdefault(rid, []).append((alias, float(score), tin, tout))
    return out


def _text(db: Connection, ids: list[str]) -> dict[str, Any]:
    texts: dict[str, Any] = {}
    for rid, body in stored_prompts(db, ids).items():
        try:
            messages = orjson.loads(body).get("messages")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(messages, list):
            texts[rid] = messages
    return texts


def read_labels(db: Connection, since: float) -> list[dict[str, Any]]:
    """One labelled line per request since `since` that has a label, oldest first."""
    rows = read_requests(db, since)
    feedback = _feedback(db, since)
    shadows = _shadow(db, since)
    texts = _text(db, [r["id"] for r in rows])
    lines = []
    for row in rows:
        final = row.get("final_model") or None
        labels = attempt_labels(row["attempts"], final)
        if row["id"] in feedback and final:
            labels[final] = float(feedback[row["id"]])
        tokens = {
            a["alias"]: {"in": a.get("input_tokens") or 0, "out": a.get("output_tokens") or 0}
            for a in row["attempts"]
            if a.get("alias") in labels
        }
        for alias, score, tin, tout in shadows.get(row["id"], ()):
            if alias not in labels:  # what the model did for real comes first
                labels[alias] = score
                tokens[alias] = {"in": tin, "out": tout}
        if not labels:
            continue
        line: dict[str, Any] = {"request_id": row["id"], "ts": row["ts"]}
        if row["id"] in texts:
            line["messages"] = texts[row["id"]]
        elif row.get("features"):  # hashed ids, enough to learn from (routing/learned.py)
            line["features"] = row["features"]
        line["labels"] = labels
        line["tokens"] = tokens
        lines.append(line)
    return lines
