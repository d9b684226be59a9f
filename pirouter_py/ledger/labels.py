"""Labels from use: what the ledger says of each model's answer to each request, in the
labelled-prompt format (`{"messages", "labels": {alias: score}, "tokens": {alias: {in, out}}}`),
with where each label came from in `"label_sources": {alias: source}`, so `learn` can weigh them.

Sources, from the strongest word to the weakest:

- `feedback`: what a person said (`POST /v1/feedback`, `pirouter feedback`); the newest score on
  a request replaces the returned model's label, whatever else said otherwise.
- `check`: an attempt escalated by an answer check (short, truncated, empty, marker, a failed
  check) scores 0; errors, cancellations and v0.1's http escalations say nothing of quality and
  give no label.
- `shadow`: a shadow check ([learning] shadow_rate) labels the cheaper model it asked, unless
  that model was tried for real.
- `regenerate`: the client asked again (see `regenerated`): the earlier answer's model scores 0.
- `answered`: an attempt whose answer was returned scores 1 (the client took it, and said no
  more).

The prompt's text is present only where `[ledger] store_prompts` kept it; otherwise a line
carries the request's hashed features (`[learning] keep_features`), which train a learned router
but cannot re-route.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from pirouter_py.ledger.db import Connection, has_table
from pirouter_py.ledger.read import read_requests, stored_prompts
from pirouter_py.record import ANSWER_OUTCOMES, OK, STATUS_OK
from pirouter_py.types import ChatRequest

FEEDBACK = "feedback"
CHECK = "check"
SHADOW = "shadow"
REGENERATE = "regenerate"
ANSWERED = "answered"
SOURCES = (FEEDBACK, CHECK, SHADOW, REGENERATE, ANSWERED)
# A request asked again this soon after the earlier one's answer ended is a regenerate: long
# enough to read an answer and ask again, short enough that the same words a while later (a new
# attempt at the same task) are not taken for a verdict on the first answer.
REGENERATE_SECS = 60.0
# "after the earlier answer ended" allows this much: arrival (wall clock, once the body is read)
# plus latency (from the first byte, in whole ms) can overshoot the end a little
SLACK_MS = 100
# What `pirouter learn` needs of a model before it trains it (learning/ reads these here, where
# the daemon's dashboard can read them too): MIN_LABELS labels, at least MIN_EACH of them good (a
# score at or above GOOD) and MIN_EACH not
MIN_LABELS = 50
MIN_EACH = 5
GOOD = 0.5


def shortfall(n: int, good: int) -> str:
    """What a model with `n` labels, `good` of them good, lacks before it can be learned ("":
    nothing)."""
    wants = []
    if n < MIN_LABELS:
        wants.append(f"{MIN_LABELS - n} more labels")
    if good < MIN_EACH:
        wants.append(f"{MIN_EACH - good} more good answers")
    if n - good < MIN_EACH:
        wants.append(f"{MIN_EACH - (n - good)} more escalated or bad answers")
    return ", ".join(wants)


def instruction_key(request: ChatRequest, conversation: str) -> str:
    """What a regenerate repeats, as 16 hex digits (the text is never kept): a hash of the
    conversation (live/sessions.session_key), the number of messages, and the latest user
    instruction. A client that regenerates sends the conversation again without the answer it
    discards: the same key; the next turn of the conversation has more messages: another."""
    latest = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
    digest = hashlib.blake2b(digest_size=8)
    for part in (conversation, str(len(request.messages)), latest):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def attempt_labels(
    attempts: list[dict[str, Any]], final: str | None
) -> tuple[dict[str, float], dict[str, str]]:
    """Score and source per alias from one request's attempts and the alias that answered (the
    last attempt of an alias wins)."""
    out: dict[str, float] = {}
    sources: dict[str, str] = {}
    for a in attempts:
        outcome, alias = a.get("outcome"), a.get("alias")
        if not alias or outcome not in ANSWER_OUTCOMES:
            continue
        if outcome == OK:
            if a.get("returned") or alias == final:  # v0.1 rows keep no `returned`
                out[alias], sources[alias] = 1.0, ANSWERED
        else:
            out[alias], sources[alias] = 0.0, CHECK
    return out, sources


def regenerated(rows: Iterable[dict[str, Any]], window: float = REGENERATE_SECS) -> set[str]:
    """The ids of answered requests the client asked again: a later request with the same
    `instruction_key` from the same client key arrived at most `window` seconds after the
    earlier one's answer ended (not before it: two asked at once are no verdict). Only the
    request just before in that conversation is judged; a request the client cancelled is not
    (it may have been stopped for any reason)."""
    last: dict[tuple[str, Any], dict[str, Any]] = {}
    out = set()
    keyed = [r for r in rows if r.get("instruction_key") and r.get("ts_ms") is not None]
    for row in sorted(keyed, key=lambda r: r["ts_ms"]):
        group = (row["instruction_key"], row.get("client"))
        before = last.get(group)
        if before is not None and before["status"] == STATUS_OK and before.get("final_model"):
            ended = before["ts_ms"] + (before.get("latency_ms") or 0)
            if -SLACK_MS <= row["ts_ms"] - ended <= window * 1000:
                out.add(before["id"])
        last[group] = row
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


def read_labels(
    db: Connection, since: float, window: float = REGENERATE_SECS, with_text: bool = True
) -> list[dict[str, Any]]:
    """One labelled line per request since `since` that has a label, oldest first (`window`:
    how soon a request asked again counts as a regenerate, in seconds; without `with_text`,
    lines carry neither the kept messages nor the features: counting labels needs neither)."""
    rows = read_requests(db, since)
    feedback = _feedback(db, since)
    shadows = _shadow(db, since)
    again = regenerated(rows, window)
    texts = _text(db, [r["id"] for r in rows]) if with_text else {}
    lines = []
    for row in rows:
        final = row.get("final_model") or None
        labels, sources = attempt_labels(row["attempts"], final)
        if row["id"] in again and final:
            labels[final], sources[final] = 0.0, REGENERATE
        if row["id"] in feedback and final:  # what a person said wins
            labels[final], sources[final] = float(feedback[row["id"]]), FEEDBACK
        tokens = {
            a["alias"]: {"in": a.get("input_tokens") or 0, "out": a.get("output_tokens") or 0}
            for a in row["attempts"]
            if a.get("alias") in labels
        }
        for alias, score, tin, tout in shadows.get(row["id"], ()):
            if alias not in labels:  # what the model did for real comes first
                labels[alias], sources[alias] = score, SHADOW
                tokens[alias] = {"in": tin, "out": tout}
        if not labels:
            continue
        line: dict[str, Any] = {"request_id": row["id"], "ts": row["ts"]}
        if row["id"] in texts:
            line["messages"] = texts[row["id"]]
        elif with_text and row.get("features"):  # hashed ids, enough to learn from
            line["features"] = row["features"]
        line["labels"] = labels
        line["label_sources"] = sources
        line["tokens"] = tokens
        lines.append(line)
    return lines


def by_source(lines: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many labels each source gave, in SOURCES order (those that gave none left out)."""
    counts = dict.fromkeys(SOURCES, 0)
    for line in lines:
        for source in line.get("label_sources", {}).values():
            counts[source] = counts.get(source, 0) + 1
    return {source: n for source, n in counts.items() if n}
