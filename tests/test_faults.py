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


# Right JSON, wrong types (#27.3): tokens as words, a text that is a number, a tool call named by
# a number or whose arguments are no JSON object; each protocol, whole and streamed, asked in
# OpenAI's protocol (translated) and in the upstream's own (passed through). Never relayed, never
# a 500: the next model answers. The builders below frame one answer of each shape; with
# well-typed values (WELL_TYPED) the first model's answer is taken.
FOUR = "one two three four"
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def openai_whole(message: dict[str, Any], usage: Any = None, finish: Any = "stop") -> list[bytes]:
    body = {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
        "usage": usage or {"prompt_tokens": 1, "completion_tokens": 4},
    }
    return [_json(body)]


def openai_stream(*deltas: dict[str, Any], finish: Any = "stop") -> list[bytes]:
    chunks = [{"id": "x", "choices": [{"index": 0, "delta": d}]} for d in deltas]
    chunks.append({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    return [b"data: " + _json(c) + b"\n\n" for c in chunks] + [b"data: [DONE]\n\n"]


def anthropic_whole(*content: dict[str, Any], usage: Any = None) -> list[bytes]:
    body = {
        "id": "x",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": list(content),
        "stop_reason": "end_turn",
        "usage": usage or {"input_tokens": 1, "output_tokens": 4},
    }
    return [_json(body)]


def anthropic_stream(*events: dict[str, Any], usage: Any = None) -> list[bytes]:
    start = {
        "type": "message_start",
        "message": {
            "id": "x",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "usage": usage or {"input_tokens": 1, "output_tokens": 1},
        },
    }
    end = [
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ]
    return [
        b"event: " + e["type"].encode() + b"\ndata: " + _json(e) + b"\n\n"
        for e in [start, *events, *end]
    ]


def anthropic_block(block: dict[str, Any], *deltas: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"type": "content_block_start", "index": 0, "content_block": block},
        *({"type": "content_block_delta", "index": 0, "delta": d} for d in deltas),
        {"type": "content_block_stop", "index": 0},
    ]


def ollama_whole(message: dict[str, Any], **counts: Any) -> list[bytes]:
    body = {
        "model": "m",
        "message": {"role": "assistant", **message},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 1,
        "eval_count": 4,
        **counts,
    }
    return [_json(body)]


def ollama_stream(*messages: dict[str, Any], **counts: Any) -> list[bytes]:
    lines: list[Any] = [
        {"model": "m", "message": {"role": "assistant", **m}, "done": False} for m in messages
    ]
    last = {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True}
    lines.append({**last, "prompt_eval_count": 1, "eval_count": 4, **counts})
    return [_json(line) + b"\n" for line in lines]


def tool_use(name: Any = "f", arguments: Any = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": "t1", "name": name, "input": arguments or {"a": 1}}


def ollama_call(name: Any = "f", arguments: Any = None) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": arguments or {"a": 1}}}


def openai_call(name: Any = "f", arguments: Any = '{"a": 1}', **extra: Any) -> dict[str, Any]:
    return {"index": 0, "id": "c1", "function": {"name": name, "arguments": arguments}, **extra}


WRONG_TYPES: dict[tuple[str, bool, str], list[bytes]] = {
    ("openai", False, "tokens-as-words"): openai_whole(
        {"content": FOUR}, usage={"prompt_tokens": "many", "completion_tokens": 1}
    ),
    ("openai", False, "content-number"): openai_whole({"content": 5}),
    ("openai", False, "part-text-number"): openai_whole({"content": [{"type": "text", "text": 5}]}),
    ("openai", False, "finish-number"): openai_whole({"content": FOUR}, finish=3),
    ("openai", False, "tool-name-number"): openai_whole(
        {"content": None, "tool_calls": [{**CALL, "function": {"name": 5, "arguments": "{}"}}]}
    ),
    ("openai", False, "arguments-not-json"): openai_whole(
        {"tool_calls": [{**CALL, "function": {"name": "f", "arguments": "not json"}}]}
    ),
    ("openai", False, "arguments-not-object"): openai_whole(
        {"tool_calls": [{**CALL, "function": {"name": "f", "arguments": "[1, 2]"}}]}
    ),
    ("openai", False, "arguments-not-text"): openai_whole(
        {"tool_calls": [{**CALL, "function": {"name": "f", "arguments": {"a": 1}}}]}
    ),
    ("openai", True, "index-as-word"): openai_stream(
        {"tool_calls": [openai_call(index="zero")]}, finish="tool_calls"
    ),
    ("openai", True, "content-number"): openai_stream({"content": 5}, {"content": FOUR}),
    ("openai", True, "tool-name-number"): openai_stream(
        {"tool_calls": [openai_call(name=5)]}, finish="tool_calls"
    ),
    ("openai", True, "arguments-not-object"): openai_stream(
        {"tool_calls": [openai_call(arguments="[1,")]},
        {"tool_calls": [{"index": 0, "function": {"arguments": " 2]"}}]},
        finish="tool_calls",
    ),
    ("openai", True, "arguments-number"): openai_stream(
        {"tool_calls": [openai_call(arguments=5)]}, finish="tool_calls"
    ),
    ("anthropic", False, "tokens-as-words"): anthropic_whole(
        {"type": "text", "text": FOUR}, usage={"input_tokens": 1, "output_tokens": "many"}
    ),
    ("anthropic", False, "text-number"): anthropic_whole({"type": "text", "text": 12}),
    ("anthropic", False, "tool-name-number"): anthropic_whole(tool_use(name=5)),
    ("anthropic", False, "input-not-object"): anthropic_whole(tool_use(arguments="x")),
    ("anthropic", True, "tokens-as-words"): anthropic_stream(
        *anthropic_block({"type": "text", "text": ""}, {"type": "text_delta", "text": FOUR}),
        usage={"input_tokens": "many", "output_tokens": 1},
    ),
    ("anthropic", True, "block-text-number"): anthropic_stream(
        *anthropic_block({"type": "text", "text": 5}, {"type": "text_delta", "text": FOUR})
    ),
    ("anthropic", True, "text-delta-number"): anthropic_stream(
        *anthropic_block({"type": "text", "text": ""}, {"type": "text_delta", "text": 5})
    ),
    ("anthropic", True, "tool-name-number"): anthropic_stream(
        *anthropic_block({**tool_use(name=5), "input": {}})
    ),
    ("anthropic", True, "input-not-object"): anthropic_stream(
        *anthropic_block(
            {**tool_use(), "input": {}}, {"type": "input_json_delta", "partial_json": "[1]"}
        )
    ),
    ("anthropic", True, "partial-json-number"): anthropic_stream(
        *anthropic_block(
            {**tool_use(), "input": {}}, {"type": "input_json_delta", "partial_json": 5}
        )
    ),
    ("ollama", False, "tokens-as-words"): ollama_whole({"content": FOUR}, prompt_eval_count="many"),
    ("ollama", False, "content-number"): ollama_whole({"content": 7}),
    ("ollama", False, "tool-name-number"): ollama_whole(
        {"content": "", "tool_calls": [ollama_call(name=5)]}
    ),
    ("ollama", False, "arguments-not-object"): ollama_whole(
        {"content": "", "tool_calls": [ollama_call(arguments="x")]}
    ),
    ("ollama", True, "tokens-as-words"): ollama_stream({"content": FOUR}, eval_count="many"),
    ("ollama", True, "content-number"): ollama_stream({"content": 7}, {"content": FOUR}),
    ("ollama", True, "arguments-not-object"): ollama_stream(
        {"content": "", "tool_calls": [ollama_call(arguments=[1])]}
    ),
}
# The same builders with well-typed values: the first model's answer stands
WELL_TYPED: dict[tuple[str, bool], list[bytes]] = {
    ("openai", False): openai_whole({"content": FOUR, "tool_calls": [CALL]}),
    ("openai", True): openai_stream(
        {"content": FOUR},
        {"tool_calls": [openai_call(arguments='{"a":')]},
        {"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]},
    ),
    ("anthropic", False): anthropic_whole({"type": "text", "text": FOUR}, tool_use()),
    ("anthropic", True): anthropic_stream(
        *anthropic_block({"type": "text", "text": ""}, {"type": "text_delta", "text": FOUR}),
        *(
            {**e, "index": 1}
            for e in anthropic_block(
                {**tool_use(), "input": {}},
                {"type": "input_json_delta", "partial_json": '{"a"'},
                {"type": "input_json_delta", "partial_json": ": 1}"},
            )
        ),
    ),
    ("ollama", False): ollama_whole({"content": FOUR, "tool_calls": [ollama_call()]}),
    ("ollama", True): ollama_stream(
        {"content": FOUR}, {"content": "", "tool_calls": [ollama_call()]}
    ),
}
OWN_PATH = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "ollama": "/api/chat"}


def answer_text(body: bytes, stream: bool) -> str:
    """The text of a whole answer, or of an OpenAI or Anthropic event stream or Ollama lines."""
    if not stream:
        return body.decode()
    if body.startswith(b"{"):  # Ollama's lines
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        return "".join(line.get("message", {}).get("content", "") for line in lines)
    return streamed_text(body)


def ask(daemon: Any, kind: str, stream: bool, asked: str) -> tuple[Any, bytes, str]:
    """The answer to a chat asked in `asked` (openai, or `kind`'s own protocol) that starts at
    the model on `kind`'s upstream: (the response, its body, its request id)."""
    path = "/v1/chat/completions" if asked == "openai" else OWN_PATH[kind]
    conn, response = send(daemon, f"first-{kind}", stream=stream, path=path)
    body = response.read()
    conn.close()
    return response, body, response.getheader("x-pirouter-request-id") or ""


@pytest.mark.usefixtures("clean_fake")
@pytest.mark.parametrize("asked", ["openai", "own"])
@pytest.mark.parametrize(
    ("kind", "stream", "case"),
    list(WRONG_TYPES),
    ids=[f"{k}-{'stream' if s else 'whole'}-{c}" for k, s, c in WRONG_TYPES],
)
def test_wrong_typed_json_escalates(
    daemon: Any, fake: FakeUpstream, kind: str, stream: bool, case: str, asked: str
) -> None:
    fake.script(f"f-{kind}", Reply(kind="raw", raw=WRONG_TYPES[(kind, stream, case)]))
    response, body, rid = ask(daemon, kind, stream, asked)
    assert response.status == 200, body
    assert response.getheader("x-pirouter-model") == "next"
    assert "Hello from the fake upstream." in answer_text(body, stream)
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


@pytest.mark.usefixtures("clean_fake")
@pytest.mark.parametrize("asked", ["openai", "own"])
@pytest.mark.parametrize(("kind", "stream"), list(WELL_TYPED), ids=str)
def test_well_typed_json_is_answered(
    daemon: Any, fake: FakeUpstream, kind: str, stream: bool, asked: str
) -> None:
    fake.script(f"f-{kind}", Reply(kind="raw", raw=WELL_TYPED[(kind, stream)]))
    response, body, rid = ask(daemon, kind, stream, asked)
    assert response.status == 200, body
    assert response.getheader("x-pirouter-model") == f"first-{kind}", body
    assert FOUR in answer_text(body, stream)
    assert daemon.wait_log(rid)["chain"] == [f"first-{kind}:ok"]


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
