"""Fault injection across provider types: each failure of the first model, in each of the three
upstream formats, streamed and whole: the client gets the next model's answer, the ledger has
the row, the daemon stays up."""

from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import Daemon, FakeUpstream, Reply
from tests.test_daemon import EXPECTED_OUTCOME, FAIL

CONFIG = """
[ledger]
path = "{url}"
[providers.up-openai]
type = "openai"
base_url = "{url}"
api_key = "k"
request_timeout_secs = 1
[providers.up-anthropic]
type = "anthropic"
base_url = "{url}"
api_key = "k"
request_timeout_secs = 1
[providers.up-ollama]
type = "ollama"
base_url = "{url}"
request_timeout_secs = 1
[models.first-openai]
provider = "up-openai"
model_id = "f-openai"
[models.first-anthropic]
provider = "up-anthropic"
model_id = "f-anthropic"
[models.first-ollama]
provider = "up-ollama"
model_id = "f-ollama"
[models.next]
provider = "up-openai"
model_id = "next"
[[rules]]
name = "first-then-next"
when = { header = { name = "x-first", any_value = true } }
then = { primary = "$header:x-first", cascade = ["next"] }
[cascade]
on_short_response = true
min_output_tokens = 3
on_marker = "<escalate/>"
on_truncated = true
on_empty = true
max_cooldown_secs = 0
"""
KINDS = ("openai", "anthropic", "ollama")
WORDS = "one two three four five six"
FAULTS = {
    **FAIL,
    "529": Reply(kind="status", status=529),
    "garbage-stream": Reply(kind="malformed"),
    "reset-mid-body": Reply(kind="cut", text=WORDS, chunks=1),
    "stall-mid-body": Reply(kind="stall", text=WORDS, chunks=1),
    # bytes without events: a byte every 0.2 s, or a keep-alive comment every 0.2 s (#27.2)
    "drip-bytes": Reply(kind="drip", chunk_delay=0.2),
    "keepalive-comments": Reply(kind="comments", chunk_delay=0.2),
}
OUTCOMES = {
    **EXPECTED_OUTCOME,
    "529": "escalated_http_error",
    "garbage-stream": "escalated_http_error",
    "reset-mid-body": "escalated_http_error",
    "stall-mid-body": "escalated_http_error",
    "drip-bytes": "escalated_http_error",
    "keepalive-comments": "escalated_http_error",
}


@pytest.fixture(scope="module")
def daemon(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("faults")
    path = folder / "config.toml"
    text = CONFIG.replace('path = "{url}"', f'path = "{folder / "ledger.db"}"')
    path.write_text(text.replace("{url}", fake.url))
    process = Daemon(path).start()
    process.ledger = folder / "ledger.db"  # type: ignore[attr-defined]
    yield process
    assert process.stop() == 0


def send(
    daemon: Any, first: str, *, stream: bool = False, path: str = "/v1/chat/completions"
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """POST a one-message chat whose rule starts at model `first`; the caller reads and closes."""
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    body = {"model": "auto", "stream": stream, "max_tokens": 64}
    body["messages"] = [{"role": "user", "content": "hi"}]
    conn.request(
        "POST",
        path,
        body=json.dumps(body),
        headers={"content-type": "application/json", "x-first": first},
    )
    return conn, conn.getresponse()


def streamed_text(body: bytes) -> str:
    """The text of an OpenAI or Anthropic event stream."""
    text = []
    for block in body.split(b"\n\n"):
        for raw in block.split(b"\n"):
            if not raw.startswith(b"data: {"):
                continue
            event = json.loads(raw[6:])
            if event.get("choices"):
                text.append(event["choices"][0]["delta"].get("content") or "")
            elif event.get("type") == "content_block_delta":
                text.append(event["delta"].get("text", ""))
    return "".join(text)


@pytest.mark.usefixtures("clean_fake")
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("kind", KINDS)
def test_fault(daemon: Any, fake: FakeUpstream, kind: str, fault: str, stream: bool) -> None:
    fake.script(f"f-{kind}", FAULTS[fault])
    conn, response = send(daemon, f"first-{kind}", stream=stream)
    body = response.read()
    rid = response.getheader("x-pirouter-request-id")
    conn.close()
    assert response.status == 200, body
    assert response.getheader("x-pirouter-model") == "next"
    assert fake.models_called() == [f"f-{kind}", "next"]
    text = streamed_text(body) if stream else body.decode()
    assert "Hello from the fake upstream." in text
    line = daemon.wait_log(rid)
    assert line["chain"] == [f"first-{kind}:{OUTCOMES[fault]}", "next:ok"]


def test_every_fault_left_a_ledger_row(daemon: Any) -> None:
    expected = len(KINDS) * len(FAULTS) * 2
    deadline = time.monotonic() + 10
    rows: list[Any] = []
    while time.monotonic() < deadline:  # the writer commits in the background (WAL: readable)
        db = sqlite3.connect(daemon.ledger)
        rows = db.execute("SELECT status, final_model FROM requests").fetchall()
        db.close()
        if len(rows) >= expected:
            break
        time.sleep(0.1)
    assert len(rows) == expected
    assert set(rows) == {("ok", "next")}


DRIP = "alpha bravo charlie delta echo foxtrot golf hotel"


@pytest.mark.usefixtures("clean_fake")
@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_drip_is_relayed_as_it_comes(daemon: Any, fake: FakeUpstream, kind: str) -> None:
    """Chunks 0.25 s apart, longer in all than the 1 s timeout: each gap is within it, so the
    answer is not cut, and the client sees the first words long before the last are sent (once
    the hold-back has the 11 characters that `on_marker` needs)."""
    fake.script(f"f-{kind}", Reply(text=DRIP, chunk_delay=0.25))
    started = time.monotonic()
    conn, response = send(daemon, f"first-{kind}", stream=True)
    first_text_at, text = 0.0, ""
    for line in response:  # SSE lines, as the daemon flushes them
        if line.startswith(b"data: {"):
            event = json.loads(line[6:])
            delta = event["choices"][0]["delta"].get("content") if event["choices"] else None
            if delta:
                first_text_at = first_text_at or time.monotonic() - started
                text += delta
    total = time.monotonic() - started
    conn.close()
    assert response.getheader("x-pirouter-model") == f"first-{kind}"
    assert text.split() == DRIP.split()
    assert total > 1.5 and first_text_at < total - 0.8  # streamed through, not gathered


def test_a_connect_timeout_escalates(fake: FakeUpstream, tmp_path: Path) -> None:
    """A listener whose accept queue is full drops SYNs: a real connect timeout on loopback."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    filler = socket.create_connection(full.getsockname(), timeout=5)  # takes the only slot
    dead = "http://{}:{}".format(*full.getsockname())
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.replace('path = "{url}"', f'path = "{tmp_path / "ledger.db"}"').replace(
            "{url}", fake.url
        )
        + f'[providers.silent]\ntype = "openai"\nbase_url = "{dead}"\napi_key = "k"\n'
        + "connect_timeout_secs = 0.5\n"
        + '[models.first-silent]\nprovider = "silent"\nmodel_id = "never"\n'
    )
    fake.reset()
    daemon = Daemon(config).start()
    try:
        started = time.monotonic()
        conn, response = send(daemon, "first-silent")
        response.read()
        conn.close()
        status, model = response.status, response.getheader("x-pirouter-model")
        elapsed = time.monotonic() - started
    finally:
        assert daemon.stop() == 0
        filler.close()
        full.close()
    assert (status, model) == (200, "next")
    assert 0.5 <= elapsed < 5  # the connect timeout, not the request timeout, gave up
    line = daemon.log_lines()[-1]
    assert line["chain"] == ["first-silent:escalated_http_error", "next:ok"]


# Right JSON, wrong types (#27.3): tokens as words, a text that is a number, a tool call whose
# index is a string; each protocol, whole and streamed. Never a 500: the next model answers.
WRONG_TYPES: dict[tuple[str, bool], list[bytes]] = {
    ("openai", False): [
        b'{"id": "x", "object": "chat.completion", "model": "m", "choices": [{"index": 0, '
        b'"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}], '
        b'"usage": {"prompt_tokens": "many", "completion_tokens": 1}}'
    ],
    ("openai", True): [
        b'data: {"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": "zero",'
        b' "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]}'
        b"\n\n",
        b'data: {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": '
        b'"tool_calls"}]}\n\ndata: [DONE]\n\n',
    ],
    ("anthropic", False): [
        b'{"id": "x", "type": "message", "role": "assistant", "model": "m", "content": '
        b'[{"type": "text", "text": 12}], "stop_reason": "end_turn", "usage": '
        b'{"input_tokens": 1, "output_tokens": 1}}'
    ],
    ("anthropic", True): [
        b'event: message_start\ndata: {"type": "message_start", "message": {"id": "x", '
        b'"type": "message", "role": "assistant", "model": "m", "content": [], "usage": '
        b'{"input_tokens": "many", "output_tokens": 1}}}\n\n',
        b'event: content_block_start\ndata: {"type": "content_block_start", "index": 0, '
        b'"content_block": {"type": "text", "text": 5}}\n\n',
        b'event: message_stop\ndata: {"type": "message_stop"}\n\n',
    ],
    ("ollama", False): [
        b'{"model": "m", "message": {"role": "assistant", "content": 7}, "done": true, '
        b'"prompt_eval_count": "many", "eval_count": 1}'
    ],
    ("ollama", True): [
        b'{"model": "m", "message": {"role": "assistant", "content": 7}, "done": false}\n',
        b'{"model": "m", "message": {"role": "assistant", "content": ""}, "done": true, '
        b'"prompt_eval_count": "many", "eval_count": 1}\n',
    ],
}


@pytest.mark.usefixtures("clean_fake")
@pytest.mark.parametrize(("kind", "stream"), list(WRONG_TYPES), ids=str)
def test_wrong_typed_json_escalates(
    daemon: Any, fake: FakeUpstream, kind: str, stream: bool
) -> None:
    fake.script(f"f-{kind}", Reply(kind="raw", raw=WRONG_TYPES[(kind, stream)]))
    conn, response = send(daemon, f"first-{kind}", stream=stream)
    body = response.read()
    rid = response.getheader("x-pirouter-request-id") or ""
    conn.close()
    assert response.status == 200, body
    assert response.getheader("x-pirouter-model") == "next"
    text = streamed_text(body) if stream else body.decode()
    assert "Hello from the fake upstream." in text
    line = daemon.wait_log(rid)
    assert line["chain"] == [f"first-{kind}:escalated_http_error", "next:ok"]
    deadline = time.monotonic() + 10
    outcomes: list[Any] = []
    while time.monotonic() < deadline and not outcomes:
        db = sqlite3.connect(daemon.ledger)
        query = "SELECT outcome, error FROM attempts WHERE request_id = ? ORDER BY idx"
        outcomes = db.execute(query, (rid,)).fetchall()
        db.close()
        time.sleep(0.05)
    assert [o for o, _ in outcomes] == ["escalated_http_error", "ok"]  # never `pending`
    assert "cannot understand" in outcomes[0][1]


# Streams that survive a cut (#27): cut after the commit, the next model goes on from the text
# relayed so far, into the same client stream: one answer, one end, no error.


@pytest.mark.usefixtures("clean_fake")
@pytest.mark.parametrize("inbound", ["openai", "anthropic"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_cut_after_its_commit_is_continued_by_the_next_model(
    daemon: Any, fake: FakeUpstream, kind: str, inbound: str
) -> None:
    fake.script(f"f-{kind}", Reply(kind="cut", text=WORDS, chunks=4))
    path = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}[inbound]
    conn, response = send(daemon, f"first-{kind}", stream=True, path=path)
    body = response.read()
    rid = response.getheader("x-pirouter-request-id") or ""
    conn.close()
    assert response.status == 200, body
    text = streamed_text(body)
    assert text.startswith("one two three ") and text.endswith("Hello from the fake upstream.")
    if inbound == "anthropic":
        assert body.count(b"event: message_start") == 1, body
        assert body.count(b"event: message_stop") == 1 and b"event: error" not in body
    else:
        assert body.count(b"data: [DONE]") == 1 and b'"error"' not in body
    asked = fake.seen[-1]
    assert asked.model == "next" and fake.models_called() == [f"f-{kind}", "next"]
    partial, instruction = asked.body["messages"][-2:]
    assert partial["role"] == "assistant" and text.startswith(partial["content"])
    assert instruction["role"] == "user" and "Continue it exactly" in instruction["content"]
    line = daemon.wait_log(rid)
    assert line["chain"] == [f"first-{kind}:stream_error", "next:ok"]
    deadline = time.monotonic() + 10
    found: list[Any] = []
    while time.monotonic() < deadline and len(found) < 2:
        db = sqlite3.connect(daemon.ledger)
        query = "SELECT alias, outcome, returned, note FROM attempts WHERE request_id = ?"
        found = db.execute(query + " ORDER BY idx", (rid,)).fetchall()
        final = db.execute("SELECT final_model FROM requests WHERE id = ?", (rid,)).fetchone()
        db.close()
        time.sleep(0.05)
    assert [(a, o, r) for a, o, r, _ in found] == [
        (f"first-{kind}", "stream_error", 1),
        ("next", "ok", 1),
    ]
    assert found[1][3] == (
        f"continued the answer of first-{kind} from character {len(partial['content'])}"
    )
    assert final == ("next",)
