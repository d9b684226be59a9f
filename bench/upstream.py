"""A fast fake upstream for benchmarks: a fixed answer, or a stream of paced chunks, in each wire
format pirouter speaks inbound and outbound.

Run as its own process: `python bench/upstream.py PORT`. It answers OpenAI chat completions
(`/v1/chat/completions`), Anthropic Messages (`/v1/messages`), OpenAI Responses (`/v1/responses`)
and Ollama (`/api/chat`), and the text completions of both (`/v1/completions`, `/api/generate`),
each in its own format, so that the floor (`passthrough.py`) can relay
every inbound path's own bytes and pirouter can call each kind of upstream. A
`"bench": {"chunks": N, "pace_ms": M}` field in the request body (which pirouter and the
pass-through forward untouched to an upstream of the client's own protocol) shapes a stream; the
default is 16 chunks with no pacing (what the per-path rows use: a translated request carries no
`bench` field, so both sides of a row get the default). `GET /seen` answers how many requests
each path has had and the last body on each: which endpoint a proxy calls for an inbound path.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

DEFAULT_CHUNKS = 16
TEXT = "A short benchmark answer."


def _sse(data: dict[str, object], event: str | None = None) -> bytes:
    line = b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
    return b"event: " + event.encode() + b"\n" + line if event else line


def _json(data: dict[str, object]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


# OpenAI chat completions
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
).encode()
CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench-model",'
    b'"choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}\n\n'
)
LAST = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench-model",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench-model",'
    b'"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":64,"total_tokens":76}}\n\n'
    b"data: [DONE]\n\n"
)

# Anthropic Messages
_MESSAGE = {
    "id": "msg_bench",
    "type": "message",
    "role": "assistant",
    "model": "bench-model",
    "content": [{"type": "text", "text": TEXT}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 6},
}
MESSAGES_ANSWER = _json(_MESSAGE)
MESSAGES_FIRST = _sse(
    {
        "type": "message_start",
        "message": {
            **_MESSAGE,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        },
    },
    "message_start",
) + _sse(
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    "content_block_start",
)
MESSAGES_CHUNK = _sse(
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "word "}},
    "content_block_delta",
)
MESSAGES_LAST = (
    _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    + _sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 64},
        },
        "message_delta",
    )
    + _sse({"type": "message_stop"}, "message_stop")
)

# OpenAI Responses (what the floor relays for the Responses path; pirouter calls chat completions)
_ITEM = {
    "type": "message",
    "id": "msg_bench",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": TEXT, "annotations": []}],
}
_RESPONSE = {
    "id": "resp_bench",
    "object": "response",
    "created_at": 0,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "model": "bench-model",
    "output": [_ITEM],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "store": False,
    "usage": {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 6,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 18,
    },
}
RESPONSES_ANSWER = _json(_RESPONSE)
_BEGUN = {**_RESPONSE, "status": "in_progress", "output": [], "usage": None}
_IDS = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}


def _responses_event(kind: str, seq: int, **fields: object) -> bytes:
    return _sse({"type": kind, "sequence_number": seq, **fields}, kind)


def responses_stream(chunks: int) -> tuple[bytes, list[bytes], bytes]:
    """The typed events of a Responses stream: (before the deltas, each delta, after them)."""
    part = {"type": "output_text", "text": "", "annotations": []}
    first = (
        _responses_event("response.created", 0, response=_BEGUN)
        + _responses_event("response.in_progress", 1, response=_BEGUN)
        + _responses_event(
            "response.output_item.added",
            2,
            output_index=0,
            item={**_ITEM, "status": "in_progress", "content": []},
        )
        + _responses_event("response.content_part.added", 3, part=part, **_IDS)
    )
    deltas = [
        _responses_event("response.output_text.delta", 4 + i, delta="word ", logprobs=[], **_IDS)
        for i in range(chunks)
    ]
    seq = 4 + chunks
    text = "word " * chunks
    item = {**_ITEM, "content": [{**part, "text": text}]}
    last = (
        _responses_event("response.output_text.done", seq, text=text, logprobs=[], **_IDS)
        + _responses_event("response.content_part.done", seq + 1, part=item["content"][0], **_IDS)
        + _responses_event("response.output_item.done", seq + 2, output_index=0, item=item)
        + _responses_event("response.completed", seq + 3, response={**_RESPONSE, "output": [item]})
    )
    return first, deltas, last


# Ollama /api/chat
_OLLAMA = {"model": "bench-model", "created_at": "2026-01-01T00:00:00.000000Z"}
OLLAMA_DONE = {
    "done_reason": "stop",
    "done": True,
    "total_duration": 1000,
    "load_duration": 10,
    "prompt_eval_count": 12,
    "prompt_eval_duration": 100,
    "eval_duration": 800,
}
OLLAMA_ANSWER = _json(
    {**_OLLAMA, "message": {"role": "assistant", "content": TEXT}, **OLLAMA_DONE, "eval_count": 6}
)
OLLAMA_CHUNK = (
    _json({**_OLLAMA, "message": {"role": "assistant", "content": "word "}, "done": False}) + b"\n"
)
OLLAMA_LAST = (
    _json(
        {
            **_OLLAMA,
            "message": {"role": "assistant", "content": ""},
            **OLLAMA_DONE,
            "eval_count": 64,
        }
    )
    + b"\n"
)


# Text completions: OpenAI's /v1/completions and Ollama's /api/generate (editors' completions)
_COMPLETION = {
    "id": "cmpl-bench",
    "object": "text_completion",
    "created": 0,
    "model": "bench-model",
}
COMPLETION_ANSWER = _json(
    {
        **_COMPLETION,
        "choices": [{"index": 0, "text": TEXT, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
)
COMPLETION_CHUNK = _sse(
    {
        **_COMPLETION,
        "choices": [{"index": 0, "text": "word ", "logprobs": None, "finish_reason": None}],
    }
)
COMPLETION_LAST = (
    _sse({**_COMPLETION, "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
    + b"data: [DONE]\n\n"
)
GENERATE_ANSWER = _json({**_OLLAMA, "response": TEXT, **OLLAMA_DONE, "eval_count": 6})
GENERATE_CHUNK = _json({**_OLLAMA, "response": "word ", "done": False}) + b"\n"
GENERATE_LAST = _json({**_OLLAMA, "response": "", **OLLAMA_DONE, "eval_count": 64}) + b"\n"


# Requests per upstream path and the last body on each (`GET /seen`)
SEEN: dict[str, int] = {}
BODIES: dict[str, bytes] = {}


def _seen(request: web.Request, body: bytes) -> None:
    SEEN[request.path] = SEEN.get(request.path, 0) + 1
    BODIES[request.path] = body


def _shape(body: bytes) -> tuple[int, float]:
    shape = (json.loads(body).get("bench") or {}) if b'"bench"' in body else {}
    return int(shape.get("chunks", DEFAULT_CHUNKS)), float(shape.get("pace_ms", 0)) / 1000


async def _stream(
    request: web.Request, kind: str, first: bytes, chunks: list[bytes], last: bytes, pace: float
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": kind})
    await response.prepare(request)
    if first:
        await response.write(first)
    for chunk in chunks:
        await response.write(chunk)
        if pace:
            await asyncio.sleep(pace)
    await response.write(last)
    return response


def _streamed(body: bytes, default: bool = False) -> bool:
    flat = body.replace(b" ", b"")
    return b'"stream":true' in flat or (default and b'"stream":false' not in flat)


Parts = tuple[bytes, list[bytes], bytes]  # a stream: what comes first, each chunk, the end


def endpoint(
    answer: bytes, kind: str, parts: Callable[[int], Parts], default_stream: bool = False
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A path's handler: `answer` whole, or the stream `parts(chunks)` as the body shapes it
    (`default_stream`: Ollama streams unless told not to)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        _seen(request, body)
        if not _streamed(body, default=default_stream):
            return web.Response(body=answer, content_type="application/json")
        chunks, pace = _shape(body)
        return await _stream(request, kind, *parts(chunks), pace)

    return handle


def repeated(first: bytes, chunk: bytes, last: bytes) -> Callable[[int], Parts]:
    return lambda chunks: (first, [chunk] * chunks, last)


SSE, NDJSON = "text/event-stream", "application/x-ndjson"
chat = endpoint(ANSWER, SSE, repeated(b"", CHUNK, LAST))
messages = endpoint(MESSAGES_ANSWER, SSE, repeated(MESSAGES_FIRST, MESSAGES_CHUNK, MESSAGES_LAST))
# Responses' events are numbered: one stream made per length, then reused
responses = endpoint(RESPONSES_ANSWER, SSE, functools.cache(responses_stream))
ollama = endpoint(OLLAMA_ANSWER, NDJSON, repeated(b"", OLLAMA_CHUNK, OLLAMA_LAST), True)
completions = endpoint(COMPLETION_ANSWER, SSE, repeated(b"", COMPLETION_CHUNK, COMPLETION_LAST))
generate = endpoint(GENERATE_ANSWER, NDJSON, repeated(b"", GENERATE_CHUNK, GENERATE_LAST), True)


async def tags(request: web.Request) -> web.Response:
    return web.json_response({"models": [{"name": "bench-model", "model": "bench-model"}]})


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "bench-model", "object": "model"}]})


async def seen(request: web.Request) -> web.Response:
    last = {path: body.decode(errors="replace") for path, body in BODIES.items()}
    return web.json_response({"hits": SEEN, "last": last})


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/api/chat", ollama)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/api/generate", generate)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/seen", seen)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
