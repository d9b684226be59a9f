"""Labels from use (`pirouter ledger labels`): scores per model worked out by hand from recorded
attempts, feedback and stored prompts in a real ledger file, including a v0.1 row; where each
label came from; regenerates told on a running daemon; `learn` weighing labels by source."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.config import load_config
from pirouter_py.learning import data, train
from pirouter_py.ledger import feedback, schema
from pirouter_py.ledger import rows as ledger_rows
from pirouter_py.ledger.labels import attempt_labels, instruction_key, read_labels, regenerated
from pirouter_py.ledger.read import open_read_only
from pirouter_py.routing import learned
from pirouter_py.types import ChatRequest
from pirouter_py.wire.codecs import BY_PROTOCOL
from tests.fakes import Daemon, FakeUpstream, Reply
from tests.test_stats import CONFIG, attempt, record

runner = CliRunner()


def test_attempt_labels_by_outcome() -> None:
    attempts: list[dict[str, Any]] = [
        {"alias": "local", "outcome": "escalated_http_error"},  # says nothing of quality
        {"alias": "cheap", "outcome": "escalated_tool_call"},  # a failed check: 0
        {"alias": "mid", "outcome": "client_cancelled"},
        {"alias": "strong", "outcome": "ok", "returned": 1},
    ]
    assert attempt_labels(attempts, "strong") == (
        {"cheap": 0.0, "strong": 1.0},
        {"cheap": "check", "strong": "answered"},
    )
    # an ok that was not the answer (v0.1 rows: no `returned`, so the final alias decides)
    assert attempt_labels([{"alias": "cheap", "outcome": "ok"}], None) == ({}, {})
    ok = attempt_labels([{"alias": "cheap", "outcome": "ok"}], "cheap")
    assert ok == ({"cheap": 1.0}, {"cheap": "answered"})


def test_labels_from_a_ledger(tmp_path: Path, write_config: Callable[[str], Path]) -> None:
    path = tmp_path / "ledger.db"
    config = write_config(CONFIG.replace("{ledger}", str(path)) + "store_prompts = true\n")
    now = time.time() - 60
    records = [
        record("r1", now, "ok", "cheap", 10, attempt("cheap", "ok", (100, 5), True)),
        record(
            "r2",
            now + 1,
            "ok",
            "strong",
            10,
            attempt("cheap", "escalated_truncated", (100, 50)),
            attempt("strong", "ok", (100, 80), True),
        ),
        record("r3", now + 2, "exhausted", None, 10, attempt("cheap", "escalated_http_error")),
        record("r4", now + 3, "ok", "cheap", 10, attempt("cheap", "ok", (7, 3), True)),
    ]
    db = schema.connect(path)
    schema.migrate(db)
    ledger_rows.write_batch(db, records, load_config(config).config.models)
    db.execute(
        "INSERT INTO prompts (request_id, messages, answer) VALUES (?, ?, ?)",
        ("r2", json.dumps({"messages": [{"role": "user", "content": "prove it"}]}), "ok"),
    )
    # a v0.1 row: attempts only in cascade_path, no `returned`
    path_json = json.dumps(
        [{"alias": "strong", "outcome": {"kind": "ok", "input_tokens": 9, "output_tokens": 4}}]
    )
    db.execute(
        "INSERT INTO requests (id, ts, requested_model, route_rule, primary_model, final_model,"
        " cascade_path, input_tokens, output_tokens, cost_usd, latency_ms, status)"
        " VALUES ('v1', ?, 'auto', 'r', 'strong', 'strong', ?, 9, 4, 0, 5, 'ok')",
        (int(now) + 4, path_json),
    )
    db.close()
    feedback.record(path, "r4", 0.0, "wrong", "http")  # the user disagrees with r4's answer
    result = runner.invoke(app, ["ledger", "labels", "-c", str(config)])
    assert result.exit_code == 0, result.output
    lines = {x["request_id"]: x for x in map(json.loads, result.stdout.splitlines())}
    assert set(lines) == {"r1", "r2", "r4", "v1"}  # r3 has no label: an error is not a verdict
    assert lines["r1"]["labels"] == {"cheap": 1.0}
    assert lines["r2"]["labels"] == {"cheap": 0.0, "strong": 1.0}
    assert lines["r2"]["tokens"] == {
        "cheap": {"in": 100, "out": 50},
        "strong": {"in": 100, "out": 80},
    }
    assert lines["r2"]["messages"] == [{"role": "user", "content": "prove it"}]
    assert "messages" not in lines["r1"]
    assert lines["r4"]["labels"] == {"cheap": 0.0}
    assert lines["v1"]["labels"] == {"strong": 1.0}
    assert {rid: line["label_sources"] for rid, line in lines.items()} == {
        "r1": {"cheap": "answered"},
        "r2": {"cheap": "check", "strong": "answered"},
        "r4": {"cheap": "feedback"},
        "v1": {"strong": "answered"},
    }
    said = result.stderr.splitlines()[-1]
    assert said == "4 labelled requests; labels by source: feedback 1, check 1, answered 3"
    # --since drops the older ones; -o writes a file
    out = tmp_path / "labels.jsonl"
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now + 2.5))
    result = runner.invoke(
        app, ["ledger", "labels", "--since", since, "-o", str(out), "-c", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["request_id"] for x in out.read_text().splitlines()] == ["r4", "v1"]


def test_labels_without_a_ledger(tmp_path: Path, write_config: Callable[[str], Path]) -> None:
    config = write_config(CONFIG.replace("{ledger}", str(tmp_path / "none.db")))
    result = runner.invoke(app, ["ledger", "labels", "-c", str(config)])
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == "0 labelled requests; labels by source: none\n"
    assert not (tmp_path / "none.db").exists()


# --- regenerates ---------------------------------------------------------------------------


def row(rid: str, at: float, key: str | None = "k", **more: object) -> dict[str, object]:
    """A requests row as read_requests gives it: arrived `at` seconds in, answered in 2 s."""
    base = {"id": rid, "ts_ms": int(at * 1000), "latency_ms": 2000, "status": "ok"}
    return {**base, "final_model": "cheap", "instruction_key": key, "client": None, **more}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([row("a", 0), row("b", 61.9)], {"a"}),  # 59.9 s after the answer ended
        ([row("a", 0), row("b", 62.1)], set()),  # 60.1 s after: a new attempt, no verdict
        ([row("a", 0), row("b", 1)], set()),  # asked while the first was running: two at once
        ([row("a", 0), row("b", 3, key="other")], set()),  # another instruction or conversation
        ([row("a", 0), row("b", 3, key=None)], set()),  # a tool result or side call: no key
        ([row("a", 0, client="ann"), row("b", 3, client="bob")], set()),  # another client key
        ([row("a", 0, status="client_cancelled"), row("b", 3)], set()),  # stopped: no verdict
        ([row("a", 0, final_model=""), row("b", 3)], set()),  # no model answered
        ([row("a", 0), row("b", 3), row("c", 6)], {"a", "b"}),  # asked three times
        ([row("b", 3), row("a", 0)], {"a"}),  # in arrival order, whatever the rows' order
    ],
)
def test_regenerated_by_hand(rows: list[dict[str, Any]], expected: set[str]) -> None:
    assert regenerated(rows) == expected


def test_a_shorter_window_is_a_parameter() -> None:
    rows = [row("a", 0), row("b", 12)]  # 10 s after the answer
    assert (regenerated(rows), regenerated(rows, window=9.0)) == ({"a"}, set())


def test_instruction_key_is_the_turn_not_the_text() -> None:
    def chat(*texts: str) -> ChatRequest:
        roles = ["user", "assistant"] * len(texts)
        messages = [{"role": r, "content": t} for r, t in zip(roles, texts, strict=False)]
        body = {"model": "auto", "messages": messages}
        return BY_PROTOCOL["openai"].decode_request(json.dumps(body).encode())

    first = instruction_key(chat("go on"), "conv")
    assert len(first) == 16 and int(first, 16) >= 0
    assert instruction_key(chat("go on"), "conv") == first  # asked again: the same
    assert instruction_key(chat("go on"), "other") != first  # in another conversation
    assert instruction_key(chat("go on", "ok", "go on"), "conv") != first  # a later turn
    assert instruction_key(chat("go on!"), "conv") != first


# --- label sources in a labelled file, and weights ------------------------------------------


def test_label_sources_are_read_and_checked() -> None:
    line = {"prompt": "hi", "labels": {"cheap": 0, "strong": 1}}
    assert data.example(line).sources == {}  # a hand-labelled file: none
    given = {"cheap": "regenerate", "strong": "answered"}
    assert data.example({**line, "label_sources": given}).sources == given
    for bad, says in [
        ({"cheap": "vibes"}, 'label_sources["cheap"] must be one of feedback, check, shadow'),
        ({"mid": "check"}, 'label_sources["mid"] names no label'),
        (["check"], '"label_sources" must be an object'),
    ]:
        with pytest.raises(ValueError, match=re.escape(says)):
            data.example({**line, "label_sources": bad})


def test_learn_weighs_labels_by_source() -> None:
    """The same prompt labelled good 30 times by silence (answered) and bad 20 times by a
    person (feedback): weighed, the person wins (30 x 0.5 < 20 x 1); unweighed, or with the
    sources swapped, the other way."""

    def examples(good: str, bad: str) -> list[data.Example]:
        def one(score: int, source: str) -> data.Example:
            return data.example(
                {
                    "prompt": "summarise this",
                    "labels": {"cheap": score},
                    "label_sources": {"cheap": source},
                }
            )

        return [one(1, good) for _ in range(30)] + [one(0, bad) for _ in range(20)]

    ids = examples("answered", "feedback")[0].ids

    def chance(exs: list[data.Example]) -> float:
        bias, weights = train.fit(exs, "cheap")
        scorer = learned.Scorer(
            {"cheap": learned.AliasModel(bias, array("f", weights), 50, 30)}, 0.0, 50
        )
        return scorer.chances(ids)["cheap"]

    assert train.sample_weights(examples("answered", "feedback"), "cheap") == (
        [0.5 / 0.7] * 30 + [1 / 0.7] * 20
    )
    assert chance(examples("answered", "feedback")) < 0.5
    assert chance(examples("feedback", "answered")) > 0.5
    assert chance(examples("feedback", "feedback")) > 0.5  # no weighing: the majority
    # a whole model trains from weighed labels (the file `learn` writes)
    assert train.train(examples("answered", "feedback"))["models"]["cheap"]["weights"]


# --- on a running daemon -------------------------------------------------------------------

DAEMON = """
[ledger]
path = "{ledger}"
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.cheap]
provider = "fake"
model_id = "m-cheap"
quality = "basic"
supports_tools = true
[models.strong]
provider = "fake"
model_id = "m-strong"
quality = "strong"
supports_tools = true
input_per_m = 3.0
output_per_m = 15.0
[cascade]
on_empty = true
[learning]
keep_features = true
"""
LS = {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
TOOLS = [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}]


def request_count(book: Path) -> int:
    if not book.exists():
        return 0
    db = sqlite3.connect(book)
    try:
        return int(db.execute("SELECT count(*) FROM requests").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def test_regenerates_checks_and_feedback_on_a_running_daemon(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Requests to a real daemon, then `ledger labels` on its ledger: the same instruction asked
    again in the same conversation soon after marks the first answer bad (source regenerate);
    another conversation, a later turn, an agent's tool results, or asking after the window do
    not; an answer check's escalation marks the cheaper model bad (source check); a person's
    feedback overrides a regenerate."""
    fake.reset()
    book = tmp_path / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(DAEMON.replace("{url}", fake.url).replace("{ledger}", str(book)))
    daemon = Daemon(config).start()

    def ask(messages: list[dict[str, Any]], **headers: str) -> str:
        time.sleep(0.02)  # a person reads the answer first, however quickly
        body: dict[str, Any] = {"model": "auto", "messages": messages}
        if any(m["role"] == "tool" for m in messages):
            body["tools"] = TOOLS
        headers["x-pirouter-difficulty"] = "easy"  # the policy tries cheap first
        status, got, _ = daemon.post(body, **headers)
        assert status == 200
        return got["x-pirouter-request-id"]

    def say(text: str, session: str | None = None, agent: str = "") -> str:
        headers = {"user-agent": agent} if session is None else {"x-pirouter-session": session}
        return ask([{"role": "user", "content": text}], **headers)

    try:
        haiku = [say("write a haiku about rain", "a"), say("write a haiku about rain", "a")]
        colour = [say("name a colour", "b"), say("name a colour", "c")]  # other sessions
        go = [{"role": "user", "content": "go on"}]
        turns = [
            ask(go, **{"x-pirouter-session": "d"}),
            ask(
                [*go, {"role": "assistant", "content": "more"}, *go], **{"x-pirouter-session": "d"}
            ),
        ]
        fake.script("m-cheap", Reply(text=""))  # escalated by the on_empty check
        checked = say("explain monads", "e")
        fixed = [say("fix my code", "f"), say("fix my code", "f")]
        status, _, _ = daemon.post({"request_id": fixed[0], "score": "good"}, "/v1/feedback")
        assert status == 200
        trip = [say("plan a trip", "g")]
        time.sleep(0.5)
        trip.append(say("plan a trip", "g"))
        # no session named: the conversation is its user agent, system prompt and first message
        joke = [say("tell a joke", agent="cli"), say("tell a joke", agent="cli")]
        riddle = [say("tell a riddle", agent="one"), say("tell a riddle", agent="two")]
        tool = [{"role": "assistant", "content": None, "tool_calls": [LS]}]
        tool.append({"role": "tool", "tool_call_id": "c1", "content": "a.txt"})
        agent = [ask([*go, *tool], **{"x-pirouter-session": "h"}) for _ in range(2)]
        deadline = time.monotonic() + 10  # the ledger writes in batches
        while request_count(book) < 17 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        assert daemon.stop() == 0
    result = runner.invoke(app, ["ledger", "labels", "-c", str(config)])
    assert result.exit_code == 0, result.output
    lines = {x["request_id"]: x for x in map(json.loads, result.stdout.splitlines())}
    labelled = {rid: (x["labels"], x["label_sources"]) for rid, x in lines.items()}
    answered = ({"cheap": 1.0}, {"cheap": "answered"})
    regenerate = ({"cheap": 0.0}, {"cheap": "regenerate"})
    asked_again = {haiku[0], trip[0], joke[0]}
    assert {rid: labelled[rid] for rid in asked_again} == dict.fromkeys(asked_again, regenerate)
    assert labelled[fixed[0]] == ({"cheap": 1.0}, {"cheap": "feedback"})  # the person wins
    assert labelled[checked] == (
        {"cheap": 0.0, "strong": 1.0},
        {"cheap": "check", "strong": "answered"},
    )
    rest = [haiku[1], *colour, *turns, fixed[1], trip[1], joke[1], *riddle]
    assert {rid: labelled[rid] for rid in rest} == dict.fromkeys(rest, answered)
    assert all(
        lines[rid]["label_sources"] == dict.fromkeys(lines[rid]["labels"], "answered")
        for rid in agent
    )
    assert len(lines) == 17
    assert result.stderr.splitlines()[-1] == (
        "17 labelled requests; labels by source: feedback 1, check 1, regenerate 3, answered 13"
    )
    # `learn` counts them as it weighs them (too few to learn from here)
    learn = runner.invoke(app, ["learn", "--json", "-c", str(config)])
    assert learn.exit_code == 1
    assert json.loads(learn.stdout)["label_sources"] == {
        "answered": 13,
        "regenerate": 3,
        "feedback": 1,
        "check": 1,
    }
    db = open_read_only(book)
    assert db is not None
    try:
        keys = dict(db.execute("SELECT id, instruction_key FROM requests").fetchall())
        # the window is a parameter: asked again 0.5 s after the answer is past a 0.25 s window
        shorter = {x["request_id"]: x["label_sources"] for x in read_labels(db, 0, window=0.25)}
    finally:
        db.close()
    assert keys[haiku[0]] == keys[haiku[1]] and len(keys[haiku[0]]) == 16
    assert keys[colour[0]] != keys[colour[1]]
    assert keys[agent[0]] is None and keys[agent[1]] is None  # tool results: no one asked again
    assert shorter[trip[0]] == {"cheap": "answered"}
    assert shorter[haiku[0]] == {"cheap": "regenerate"}
