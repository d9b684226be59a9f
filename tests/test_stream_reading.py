"""Upstream streams read as bytes arrive (providers/base.py `_lines`): events split across TCP
writes, several events in one write, CRLF line ends, multi-line data, a last line without its
newline. The upstream is a real aiohttp server on 127.0.0.1 that writes the body in the pieces
each case gives, draining and pausing between them so they reach pirouter as separate reads."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from pirouter_py.config import ModelConfig, ProviderConfig
from pirouter_py.errors import UpstreamError
from pirouter_py.providers.base import HTTPProvider
from pirouter_py.providers.ollama import OllamaProvider
from pirouter_py.providers.openai import OpenAIProvider
from pirouter_py.providers.transport import Upstreams
from pirouter_py.types import ChatRequest, Message, StreamEvent, TextPart

CHUNK = b'{"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}'


def event(text: str, end: bytes = b"\n\n") -> bytes:
    return b"data: " + CHUNK % text.encode() + end


async def serve_pieces(pieces: list[bytes], content_type: str) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": content_type})
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(0.02)  # a separate read on the other side
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    app.router.add_post("/api/chat", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def collect(
    kind: type[HTTPProvider], pieces: list[bytes], content_type: str
) -> list[StreamEvent]:
    runner, url = await serve_pieces(pieces, content_type)
    try:
        upstreams = Upstreams()
        config = ProviderConfig(type=kind.kind, base_url=url, api_key="k", request_timeout_secs=5)
        provider = kind("up", config, upstreams, {})
        hi = Message("user", (TextPart("hi"),))
        request = ChatRequest(model="auto", messages=(hi,), stream=True)
        model = ModelConfig(provider="up", model_id="m")
        stream: AsyncIterator[StreamEvent] = provider.stream(request, model)
        try:
            return [e async for e in stream]
        finally:
            await upstreams.close()
    finally:
        await runner.cleanup()


def texts(events: list[StreamEvent]) -> list[str]:
    return [e.text for e in events if e.text]


SSE_CASES: dict[str, tuple[list[bytes], list[str]]] = {
    "one event per write": ([event("a"), event("b"), b"data: [DONE]\n\n"], ["a", "b"]),
    "an event split mid-line": (
        [event("a")[:9], event("a")[9:] + event("b")[:3], event("b")[3:], b"data: [DO", b"NE]\n\n"],
        ["a", "b"],
    ),
    "several events in one write": (
        [event("a") + event("b") + event("c") + b"data: [DONE]\n\n"],
        ["a", "b", "c"],
    ),
    "CRLF line ends, split between CR and LF": (
        [event("a", b"\r\n\r"), b"\n" + event("b", b"\r\n\r\n"), b"data: [DONE]\r\n\r\n"],
        ["a", "b"],
    ),
    "comments and an event name": (
        [b": keep-alive\n\n", b"event: message\n" + event("a"), b"data: [DONE]\n\n"],
        ["a"],
    ),
    "[DONE] without its blank line": ([event("a"), b"data: [DONE]"], ["a"]),
}


@pytest.mark.parametrize("case", SSE_CASES)
def test_sse_framing(case: str) -> None:
    pieces, expected = SSE_CASES[case]
    events = asyncio.run(collect(OpenAIProvider, pieces, "text/event-stream"))
    assert texts(events) == expected


def test_multi_line_data_is_joined_with_newlines() -> None:
    # SSE: an event's `data:` lines are one payload, joined by "\n" (JSON allows it there).
    first, second = b'{"choices":[{"index":0,', b'"delta":{"content":"x"},"finish_reason":null}]}'
    pieces = [b"data: " + first + b"\ndata: " + second + b"\n\n", b"data: [DONE]\n\n"]
    events = asyncio.run(collect(OpenAIProvider, pieces, "text/event-stream"))
    assert texts(events) == ["x"]


@pytest.mark.parametrize(
    ("pieces", "error"),
    [
        ([event("a"), event("b")], "ended before \\[DONE\\]"),  # cut between events
        ([event("a"), event("b")[:12]], "malformed stream line"),  # cut inside one
    ],
)
def test_a_stream_cut_short_is_an_error(pieces: list[bytes], error: str) -> None:
    with pytest.raises(UpstreamError, match=error):
        asyncio.run(collect(OpenAIProvider, pieces, "text/event-stream"))


def ndjson(text: str, done: bool = False) -> bytes:
    line = b'{"model":"m","message":{"role":"assistant","content":"%s"},"done":%s}' % (
        text.encode(),
        b"true" if done else b"false",
    )
    return line + b"\n"


NDJSON_CASES: dict[str, tuple[list[bytes], list[str]]] = {
    "one line per write": ([ndjson("a"), ndjson("b"), ndjson("", True)], ["a", "b"]),
    "lines split and joined": (
        [ndjson("a")[:7], ndjson("a")[7:] + ndjson("b")[:20], ndjson("b")[20:] + ndjson("", True)],
        ["a", "b"],
    ),
    "CRLF and blank lines": (
        [ndjson("a")[:-1] + b"\r\n\r\n", ndjson("b"), ndjson("", True)],
        ["a", "b"],
    ),
    "the last line without its newline": ([ndjson("a"), ndjson("", True)[:-1]], ["a"]),
}


@pytest.mark.parametrize("case", NDJSON_CASES)
def test_ndjson_framing(case: str) -> None:
    pieces, expected = NDJSON_CASES[case]
    events = asyncio.run(collect(OllamaProvider, pieces, "application/x-ndjson"))
    assert texts(events) == expected
    assert events[-1].finish_reason is not None  # the done line was read


class _Written:
    """A response that records its writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.writes.append(data)


def test_a_relay_writes_what_one_read_brought_in_one_write_and_never_holds_it() -> None:
    asyncio.run(_batched())


async def _batched() -> None:
    from pirouter_py.server.relay import Batch

    response = _Written()
    batch = Batch(response)  # type: ignore[arg-type]
    batch.add(b"a")
    batch.add(b"b")
    await batch.flush()  # the reader is about to read again: one write for both
    assert response.writes == [b"ab"]
    batch.add(b"c")  # then the relay waits on something that reads no upstream
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert response.writes == [b"ab", b"c"]  # written within a turn of the loop
    batch.add(b"d")
    await asyncio.sleep(0)  # a late write is scheduled, not yet run
    batch.add(b"e")
    await batch.flush()  # the late write goes first
    await batch.written()  # (the loop turned meanwhile: "e" was given a late write of its own)
    assert response.writes == [b"ab", b"c", b"d", b"e"]
    assert batch.take() == b""
