"""A bug in pirouter, once an answer has begun, must not corrupt the HTTP exchange: a stream ends
with an error event in its own protocol and is recorded (a 500 from the errors middleware would
be written into the stream); a failure in the bookkeeping after an answer is logged, and the
middleware's 500 is not sent after it (aiohttp drops a response for a request already answered).
The bug is injected; the daemon, its upstream (the scripted fake, over loopback HTTP) and the
ledger file are real."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import ClientSession, web

from pirouter_py.config import load_config
from pirouter_py.observe import log
from pirouter_py.observe.metrics import Metrics
from pirouter_py.server import app as server
from pirouter_py.server import chat, middleware, relay, textgen
from pirouter_py.wire import openai as openai_wire
from pirouter_py.wire import textgen as textgen_wire
from tests.fakes import FakeUpstream, Reply

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def _capture(monkeypatch: pytest.MonkeyPatch) -> io.BytesIO:
    """The daemon's log lines, as JSON (set in the test itself: pytest puts its own stderr back
    between a fixture and the test, and the replaced stream would close)."""
    binary = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(binary, write_through=True))
    log.setup("info", json=True)
    # a module's logger keeps the stream of its first use (cache_logger_on_first_use): a fresh one
    for module in (middleware, relay, textgen):
        monkeypatch.setattr(module, "log", log.get_logger("pirouter"))
    return binary


def _lines(binary: io.BytesIO, event: str) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in binary.getvalue().decode().splitlines()]
    return [x for x in found if x["event"] == event]


def _serve(fake: FakeUpstream, tmp_path: Path, exchange: Any) -> Any:
    """Run the daemon's app with its ledger in tmp_path, run `exchange(http, url)`, close it."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[providers.up]\ntype = "openai"\nbase_url = "{fake.url}/v1"\napi_key = "k"\n'
        '[models.m]\nprovider = "up"\nmodel_id = "m"\nsupports_fim = true\n'
    )

    async def main() -> Any:
        app = server.create_app(load_config(path), recorder=None, ledger_path=tmp_path / "l.db")
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"
        try:
            async with ClientSession() as http:
                return await exchange(http, url)
        finally:
            await runner.cleanup()  # the ledger writes its last rows and closes

    return asyncio.run(asyncio.wait_for(main(), 20))


async def _post(http: ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    """One whole (not streamed) chat request: its status and JSON body."""
    async with http.post(url, json=BODY) as response:
        return response.status, await response.json()


def _rows(tmp_path: Path, columns: str = "r.status, a.outcome, a.error") -> list[tuple[Any, ...]]:
    db = sqlite3.connect(tmp_path / "l.db")
    try:
        return db.execute(
            f"SELECT {columns} FROM requests r "
            "JOIN attempts a ON a.request_id = r.id ORDER BY r.ts_ms"
        ).fetchall()
    finally:
        db.close()


def test_a_bug_is_a_500_and_its_log_line_says_where(
    fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 500 tells the client "it was logged": the line must hold the cause, not exc_info."""
    stderr = _capture(monkeypatch)

    async def broken(*_: object, **__: object) -> web.StreamResponse:
        raise RuntimeError("a bug in routing")

    monkeypatch.setattr(chat, "serve", broken)

    status, answer = _serve(fake, tmp_path, _post)
    assert status == 500
    message = str(answer["error"]["message"])
    [line] = _lines(stderr, "internal_error")
    assert str(line["request_id"]) in message
    assert "RuntimeError: a bug in routing" in str(line["exception"])


def test_a_bug_mid_stream_ends_the_stream_with_an_error_and_is_recorded(
    fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = _capture(monkeypatch)
    fake.default("m", Reply(text="one two three four five six", chunks=6))
    encode = openai_wire.StreamEncoder.encode
    encoded = [0]

    def buggy(self: openai_wire.StreamEncoder, event: Any) -> bytes:
        encoded[0] += 1
        if encoded[0] == 4:  # after the first events went out
            raise KeyError("a bug in encoding")
        return encode(self, event)

    monkeypatch.setattr(openai_wire.StreamEncoder, "encode", buggy)

    async def exchange(http: ClientSession, url: str) -> tuple[int, bytes]:
        async with http.post(url, json={**BODY, "stream": True}) as response:
            return response.status, await response.read()

    status, body = _serve(fake, tmp_path, exchange)
    assert status == 200
    events = [line[6:] for line in body.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["message"].startswith("internal error in pirouter (request ")
    assert error["type"] == "server_error"  # a 500's type, not the upstream's
    assert any("choices" in json.loads(e) for e in events[:-2])  # the answer had begun
    [logged] = _lines(stderr, "internal_error")
    assert "KeyError: 'a bug in encoding'" in logged["exception"]
    assert logged["request_id"] in error["message"]
    assert _rows(tmp_path) == [("internal_error", "stream_error", "internal error in pirouter")]
    [line] = _lines(stderr, "request")
    assert line["status"] == "internal_error" and line["chain"] == ["m:stream_error"]


def test_a_bug_in_the_bookkeeping_after_an_answer_is_logged_not_answered(
    fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = _capture(monkeypatch)
    fake.default("m", Reply(text="a complete answer"))

    def broken(self: Metrics, record: Any, models: Any) -> None:
        raise ZeroDivisionError("a bug in metrics")

    monkeypatch.setattr(Metrics, "observe", broken)

    async def exchange(http: ClientSession, url: str) -> list[tuple[int, str]]:
        out = []
        for _ in range(2):  # one keep-alive connection: a stray second response would break it
            async with http.post(url, json=BODY) as response:
                data = await response.json()
                out.append((response.status, data["choices"][0]["message"]["content"]))
        return out

    answers = _serve(fake, tmp_path, exchange)
    assert answers == [(200, "a complete answer")] * 2
    logged = _lines(stderr, "internal_error")
    assert len(logged) == 2 and "ZeroDivisionError: a bug in metrics" in logged[0]["exception"]
    assert [status for status, _, _ in _rows(tmp_path)] == ["ok", "ok"]


def test_a_bug_before_the_answer_is_a_500_and_the_spent_attempt_is_recorded(
    fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model answered (its tokens were spent), then pirouter failed to build the answer."""
    stderr = _capture(monkeypatch)
    fake.default("m", Reply(text="a complete answer"))

    def broken(ctx: Any) -> dict[str, Any]:
        raise KeyError("a bug in building the answer")

    monkeypatch.setattr(chat, "meta", broken)

    status, answer = _serve(fake, tmp_path, _post)
    assert status == 500 and answer["error"]["type"] == "server_error"
    columns = "r.status, r.http_status, a.outcome, a.input_tokens, a.output_tokens"
    assert _rows(tmp_path, columns) == [("internal_error", 500, "ok", 8, 3)]
    [logged] = _lines(stderr, "internal_error")
    assert "KeyError: 'a bug in building the answer'" in logged["exception"]
    [line] = _lines(stderr, "request")
    assert line["status"] == "internal_error" and line["request_id"] == logged["request_id"]


@pytest.mark.parametrize("ollama", [False, True], ids=["completions", "generate"])
def test_a_bug_mid_text_stream_ends_it_with_an_error_in_its_protocol_and_is_recorded(
    fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ollama: bool
) -> None:
    """The text-completion streams as the chat ones: a bug after the first pieces went out ends
    the stream with an error event (OpenAI's SSE) or line (Ollama's NDJSON), not a broken
    connection, and the request is recorded as pirouter's own error."""
    stderr = _capture(monkeypatch)
    fake.default("m", Reply(text="one two three four five six", chunks=6))
    encoder = textgen_wire.GenerateLines if ollama else textgen_wire.CompletionChunks
    encode = encoder.encode
    encoded = [0]

    def buggy(self: Any, piece: Any) -> bytes:
        encoded[0] += 1
        if encoded[0] == 4:  # after the first pieces went out
            raise KeyError("a bug in encoding")
        return encode(self, piece)

    monkeypatch.setattr(encoder, "encode", buggy)
    path = "/api/generate" if ollama else "/v1/completions"
    body = {"model": "m", "prompt": "def add(a, b):", "stream": True}

    async def exchange(http: ClientSession, url: str) -> tuple[int, str, bytes]:
        url = url.replace("/v1/chat/completions", path)
        async with http.post(url, json=body) as response:
            return response.status, response.headers["cache-control"], await response.read()

    status, cache, raw = _serve(fake, tmp_path, exchange)
    assert status == 200 and cache == "no-cache"
    if ollama:
        lines = [json.loads(line) for line in raw.decode().splitlines()]
        assert any(line.get("response") for line in lines[:-1])  # the answer had begun
        error = lines[-1]["error"]
        message = error if isinstance(error, str) else error["message"]
    else:
        events = [e[6:] for e in raw.decode().split("\n\n") if e.startswith("data: ")]
        assert any("choices" in json.loads(e) for e in events[:-1])  # the answer had begun
        error = json.loads(events[-1])["error"]
        assert error["type"] == "server_error"
        message = error["message"]
    assert message.startswith("internal error in pirouter (request ")
    [logged] = _lines(stderr, "internal_error")
    assert "KeyError: 'a bug in encoding'" in logged["exception"]
    assert _rows(tmp_path) == [("internal_error", "stream_error", "internal error in pirouter")]
