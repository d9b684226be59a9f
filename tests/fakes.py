"""Fake upstreams that speak each provider's real wire format, and the daemon started as users do.

`FakeUpstream` is a real aiohttp server on 127.0.0.1 (port 0) in a thread of its own, scripted per
model id: answer, stream paced chunks, fail with any status (and Retry-After), hang, reset the
connection, send malformed JSON, or cut or stall a body midway (streamed or whole). It records every
request it received.
`Daemon` runs `python -m pirouter_py run --port 0` in a subprocess and reads its URL and log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
MAX_HANG_S = 20.0  # a hanging reply gives up after this, so no test can wait forever


@dataclass
class Reply:
    """One scripted upstream reply."""

    text: str = "Hello from the fake upstream."
    # answer | status | hang | reset | malformed | cut | stall | raw (`raw`: these pieces as
    # they are, `chunk_delay` apart, in the content type of the request's kind) | drip (one
    # byte every `chunk_delay`, forever) | comments (`: PROCESSING` every `chunk_delay`, forever)
    kind: str = "answer"
    status: int = 200
    error: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str = "stop"
    usage: tuple[int, int] | None = None  # (prompt, completion); default: from the text
    delay: float = 0.0  # before the headers
    chunk_delay: float = 0.0  # between stream chunks
    chunks: int | None = None  # for "cut"/"stall": content chunks before the reset or the stall
    raw: list[bytes] = field(default_factory=list)
    # Anthropic only: when the request forces a tool (`tool_choice` {"type": "tool"}, as a
    # translator does for structured output), answer `text` (JSON) as that tool's `input`
    json_via_tool: bool = False


async def interrupted(request: web.Request, reply: Reply, n: int) -> bool:
    """At the `chunks`-th piece of a "cut" or "stall" reply: reset the connection, or go silent."""
    if reply.kind not in ("cut", "stall") or n != (reply.chunks or 1):
        return False
    if reply.kind == "stall":
        await asyncio.sleep(MAX_HANG_S)
    assert request.transport is not None
    request.transport.abort()
    return True


@dataclass
class Seen:
    """One request the fake received."""

    path: str
    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    cancelled: bool = False
    finished: bool = False


def words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text) or [""]


class FakeUpstream:
    """A scripted OpenAI-compatible server."""

    def __init__(self) -> None:
        self.scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self.defaults: dict[str, Reply] = {}
        self.seen: list[Seen] = []
        self.refused_keys: dict[str, int] = {}  # API key -> the status every request with it gets
        # what the model listings (GET /v1/models, /api/tags; POST /api/show) answer; not in
        # `seen`: pirouter's start-up probe reads them, `init` looks models up in them
        self.listed: dict[str, list[str]] = {"m-cheap": [], "m-strong": []}
        self.listings: list[str] = []  # the path of each listing asked for
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- scripting -------------------------------------------------------------------------

    def script(self, model: str, *replies: Reply) -> None:
        self.scripts[model].extend(replies)

    def default(self, model: str, reply: Reply) -> None:
        self.defaults[model] = reply

    def reset(self) -> None:
        self.scripts.clear()
        self.defaults.clear()
        self.seen.clear()
        self.refused_keys.clear()
        self.listings.clear()

    def models_called(self) -> list[str]:
        return [s.model for s in self.seen]

    def _next(self, model: str) -> Reply:
        queue = self.scripts.get(model)
        if queue:
            return queue.popleft()
        return self.defaults.get(model, Reply())

    # --- serving ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/api/chat", self._ollama)
        app.router.add_post("/v1/completions", self._text)
        app.router.add_post("/api/generate", self._text)
        app.router.add_post("/v1/embeddings", self._embed)
        app.router.add_post("/api/embed", self._embed)
        app.router.add_get("/v1/models", self._list)
        app.router.add_get("/api/tags", self._list)
        app.router.add_post("/api/show", self._show)
        return app

    def _refused(self, request: web.Request) -> int | None:
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "")[7:]
        return self.refused_keys.get(key)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        """The model listing: OpenAI's `{"data": [{"id"}]}` or Ollama's `{"models": [...]}`."""
        self.listings.append(request.path)
        if (status := self._refused(request)) is not None:
            return web.json_response({"error": {"message": "invalid api key"}}, status=status)
        if request.path == "/api/tags":
            models = [
                {"name": m, "model": m, "details": {"parameter_size": m.rsplit(":", 1)[-1].upper()}}
                for m in self.listed
            ]
            return web.json_response({"models": models})
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in self.listed]}
        )

    async def _show(self, request: web.Request) -> web.StreamResponse:
        """Ollama's model details: capabilities (as `listed` has them) and context length."""
        name = (await request.json()).get("model", "")
        if name not in self.listed:
            return web.json_response({"error": f"model '{name}' not found"}, status=404)
        return web.json_response(
            {
                "capabilities": self.listed[name] or ["completion"],
                "model_info": {"general.architecture": "llama", "llama.context_length": 32768},
            }
        )

    async def _serve(
        self,
        request: web.Request,
        error_body: Callable[[Reply], Any],
        answer: Callable[[web.Request, dict[str, Any], Reply, Seen], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """What every format shares: record, script, delay, and the failure kinds."""
        body = await request.json()
        seen = Seen(request.path, body.get("model", ""), body, dict(request.headers))
        self.seen.append(seen)
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "")[7:]
        if key in self.refused_keys:
            status = self.refused_keys[key]
            refusal = Reply(kind="status", status=status, error=f"key refused ({status})")
            return web.json_response(error_body(refusal), status=status)
        reply = self._next(seen.model)
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.kind == "hang":
                await asyncio.sleep(MAX_HANG_S)
                return web.Response(status=504)
            if reply.kind == "reset":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
            if reply.kind == "status":
                return web.json_response(
                    error_body(reply), status=reply.status, headers=reply.headers
                )
            if reply.kind == "malformed":
                return web.Response(
                    text='{"id": "x", "content": [', content_type="application/json"
                )
            if reply.kind in ("raw", "drip", "comments"):
                return await self._raw(request, body, reply)
            if reply.kind in ("cut", "stall") and not body.get("stream"):
                # a whole body that stops midway: reset, or silence until the reader gives up
                response = web.StreamResponse(headers={"content-type": "application/json"})
                response.content_length = 400
                await response.prepare(request)
                await response.write(b'{"id": "partial", "model": "m", "content": [')
                await interrupted(request, reply, reply.chunks or 1)
                return response
            return await answer(request, body, reply, seen)
        except (asyncio.CancelledError, ConnectionResetError):
            seen.cancelled = True  # the daemon went away mid-answer
            raise
        finally:
            seen.finished = True

    async def _raw(
        self, request: web.Request, body: dict[str, Any], reply: Reply
    ) -> web.StreamResponse:
        """Bytes as scripted, in the content type the request's kind expects."""
        stream = (
            body.get("stream") is not False
            if request.path == "/api/chat"
            else bool(body.get("stream"))
        )
        kind = "application/json"
        if stream:
            kind = (
                "application/x-ndjson"
                if request.path.startswith("/api/")
                else ("text/event-stream")
            )
        response = web.StreamResponse(headers={"content-type": kind})
        await response.prepare(request)
        if reply.kind == "raw":
            for i, piece in enumerate(reply.raw):
                if i and reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
                await response.write(piece)
            await response.write_eof()
            return response
        piece = b": PROCESSING\n\n" if reply.kind == "comments" else b" "
        deadline = asyncio.get_running_loop().time() + MAX_HANG_S
        while asyncio.get_running_loop().time() < deadline:
            await response.write(piece)
            await asyncio.sleep(reply.chunk_delay or 1.0)
        return response

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        async def answer(
            request: web.Request, body: dict[str, Any], reply: Reply, seen: Seen
        ) -> web.StreamResponse:
            if body.get("stream"):
                return await self._stream(request, body, reply, seen)
            return web.json_response(self._completion(body, reply))

        def error(reply: Reply) -> Any:
            # quirk: `param` and `code` present, null when they do not apply (source: OpenAI
            # API reference, "Error codes"; openai-python's ErrorObject)
            return {
                "error": {"message": reply.error, "type": "fake_error", "param": None, "code": None}
            }

        return await self._serve(request, error, answer)

    # --- text completions and embeddings (OpenAI and Ollama shapes) ------------------------

    async def _text(self, request: web.Request) -> web.StreamResponse:
        ollama = request.path == "/api/generate"

        async def answer(
            request: web.Request, body: dict[str, Any], reply: Reply, seen: Seen
        ) -> web.StreamResponse:
            prompt = len(str(body.get("prompt", ""))) // 4 + len(str(body.get("suffix", ""))) // 4
            tokens = reply.usage or (prompt, len(words(reply.text)))
            stream = body.get("stream") is not False if ollama else bool(body.get("stream"))
            if not stream:
                if ollama:
                    return web.json_response(
                        {
                            "model": body["model"],
                            "response": reply.text,
                            "done": True,
                            "done_reason": "stop",
                            "prompt_eval_count": tokens[0],
                            "eval_count": tokens[1],
                        }
                    )
                return web.json_response(
                    {
                        "id": "cmpl-fake",
                        "object": "text_completion",
                        "model": body["model"],
                        "choices": [{"text": reply.text, "index": 0, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1]},
                    }
                )
            kind = "application/x-ndjson" if ollama else "text/event-stream"
            response = web.StreamResponse(headers={"content-type": kind})
            await response.prepare(request)
            for n, piece in enumerate(words(reply.text)):
                if await interrupted(request, reply, n):
                    return response
                if ollama:
                    line = {"model": body["model"], "response": piece, "done": False}
                    await response.write(json.dumps(line).encode() + b"\n")
                else:
                    chunk = {"choices": [{"text": piece, "index": 0, "finish_reason": None}]}
                    await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
            if ollama:
                last = {
                    "model": body["model"],
                    "response": "",
                    "done": True,
                    "done_reason": "stop",
                    "prompt_eval_count": tokens[0],
                    "eval_count": tokens[1],
                }
                await response.write(json.dumps(last).encode() + b"\n")
            else:
                end = {
                    "choices": [{"text": "", "index": 0, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1]},
                }
                await response.write(b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n")
            return response

        def error(reply: Reply) -> Any:
            if ollama:
                return {"error": reply.error}
            return {"error": {"message": reply.error, "type": "fake_error", "code": None}}

        return await self._serve(request, error, answer)

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        """Vectors made from each text: [its length, its first character's code, 1.5]."""
        ollama = request.path == "/api/embed"

        async def answer(
            request: web.Request, body: dict[str, Any], reply: Reply, seen: Seen
        ) -> web.StreamResponse:
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            vectors = [[float(len(s)), float(ord(s[0]) if s else 0), 1.5] for s in texts]
            tokens = sum(len(words(s)) for s in texts)
            if ollama:
                return web.json_response(
                    {"model": body["model"], "embeddings": vectors, "prompt_eval_count": tokens}
                )
            data = [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
            ]
            return web.json_response(
                {
                    "object": "list",
                    "data": data[::-1],  # any order: the index says which is which
                    "model": body["model"],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )

        def error(reply: Reply) -> Any:
            return {"error": reply.error} if ollama else {"error": {"message": reply.error}}

        return await self._serve(request, error, answer)

    # --- Anthropic Messages --------------------------------------------------------------

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        def error(reply: Reply) -> Any:
            kind = "overloaded_error" if reply.status == 529 else "invalid_request_error"
            # quirk: the request id rides in the error body too (source: Anthropic docs,
            # "Errors", error shapes)
            return {
                "type": "error",
                "error": {"type": kind, "message": reply.error},
                "request_id": "req_fake",
            }

        return await self._serve(request, error, self._anthropic_answer)

    async def _anthropic_answer(
        self, request: web.Request, body: dict[str, Any], reply: Reply, seen: Seen
    ) -> web.StreamResponse:
        stop = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}.get(
            reply.finish_reason, "end_turn"
        )
        usage = self._usage(body, reply)
        calls = [
            {
                "type": "tool_use",
                "id": c["id"],
                "name": c["function"]["name"],
                "input": json.loads(c["function"]["arguments"]),
            }
            for c in reply.tool_calls or []
        ]
        forced = body.get("tool_choice") or {}
        if reply.json_via_tool and forced.get("type") == "tool":
            # quirk: a forced tool is the whole answer: no text block before the tool_use, and
            # stop_reason "tool_use" (source: Anthropic docs, "Tool use", forcing tool use:
            # "the model will not emit a natural language response ... before tool_use")
            tool_input = json.loads(reply.text)
            reply = replace(reply, text="")
            calls = [
                {
                    "type": "tool_use",
                    "id": "toolu_forced",
                    "name": forced.get("name", ""),
                    "input": tool_input,
                }
            ]
            stop = "tool_use"
        if not body.get("stream"):
            content = ([{"type": "text", "text": reply.text}] if reply.text else []) + calls
            return web.json_response(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"] + "-2026",
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": usage["prompt_tokens"],
                        "output_tokens": usage["completion_tokens"],
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                }
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def send(data: dict[str, Any]) -> None:
            await response.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)

        # quirk: the input tokens are counted only here, in message_start; output_tokens here
        # is a placeholder (source: Anthropic docs, "Streaming Messages", event flow)
        await send(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"] + "-2026",
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": 1},
                },
            }
        )
        # quirk: `ping` events anywhere in the stream (source: Anthropic docs, "Streaming
        # Messages", ping events)
        await send({"type": "ping"})
        index = 0
        if reply.text:
            await send(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            for n, piece in enumerate(words(reply.text)):
                if await interrupted(request, reply, n):
                    return response
                await send(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    }
                )
            await send({"type": "content_block_stop", "index": 0})
            index = 1
        for n, call in enumerate(calls, index):
            await send(
                {
                    "type": "content_block_start",
                    "index": n,
                    "content_block": {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["name"],
                        "input": {},
                    },
                }
            )
            args = json.dumps(call["input"])
            # quirk: a tool's input starts with an empty partial_json (source: Anthropic docs,
            # "Streaming Messages", streaming request with tool use example)
            for part in ("", args[: len(args) // 2], args[len(args) // 2 :]):
                await send(
                    {
                        "type": "content_block_delta",
                        "index": n,
                        "delta": {"type": "input_json_delta", "partial_json": part},
                    }
                )
            await send({"type": "content_block_stop", "index": n})
        await send({"type": "ping"})
        # quirk: the final usage has the output tokens only, no input_tokens (source: Anthropic
        # docs, "Streaming Messages", basic streaming request example)
        await send(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage["completion_tokens"]},
            }
        )
        await send({"type": "message_stop"})
        return response

    # --- Ollama /api/chat ----------------------------------------------------------------

    async def _ollama(self, request: web.Request) -> web.StreamResponse:
        def error(reply: Reply) -> Any:
            return {"error": reply.error}

        return await self._serve(request, error, self._ollama_answer)

    async def _ollama_answer(
        self, request: web.Request, body: dict[str, Any], reply: Reply, seen: Seen
    ) -> web.StreamResponse:
        usage = self._usage(body, reply)
        # quirk: tool calls have no id (the id came with Ollama 0.12.10; older servers, and the
        # examples, have none), arguments are an object, not a JSON string, and the function
        # has its `index` (source: ollama docs/api.md "Chat request (No streaming, with
        # tools)"; api/types.go ToolCallFunction: `json:"index"`, no omitempty)
        calls = [
            {
                "function": {
                    "index": i,
                    "name": c["function"]["name"],
                    "arguments": json.loads(c["function"]["arguments"]),
                }
            }
            for i, c in enumerate(reply.tool_calls or [])
        ]
        # quirk: Go timestamps with nanoseconds and a zone offset; durations in nanoseconds
        # (source: ollama docs/api.md "Chat request (Streaming)")
        created = "2026-11-22T08:52:19.385406455-07:00"
        final = {
            "model": body["model"],
            "created_at": created,
            "done": True,
            "done_reason": "length" if reply.finish_reason == "length" else "stop",
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_count": usage["prompt_tokens"],
            "prompt_eval_duration": 342546000,
            "eval_count": usage["completion_tokens"],
            "eval_duration": 4535599000,
        }
        if not body.get("stream", True):
            whole: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if calls:
                whole["tool_calls"] = calls
            return web.json_response({**final, "message": whole})
        response = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
        await response.prepare(request)

        async def send(data: dict[str, Any]) -> None:
            await response.write(json.dumps(data).encode() + b"\n")
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)

        line = {"model": body["model"], "created_at": created, "done": False}
        for n, piece in enumerate(words(reply.text) if reply.text else []):
            if await interrupted(request, reply, n):
                return response
            # quirk: streamed pieces carry `"images": null` (source: ollama docs/api.md "Chat
            # request (Streaming)")
            message = {"role": "assistant", "content": piece, "images": None}
            await send({**line, "message": message})
        # quirk: the tool calls come whole, in a line of their own with done false, before the
        # final line (source: ollama docs/api.md "Chat request (Streaming with tools)")
        if calls:
            await send(
                {**line, "message": {"role": "assistant", "content": "", "tool_calls": calls}}
            )
        await send({**final, "message": {"role": "assistant", "content": ""}})
        return response

    @staticmethod
    def _usage(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        prompt, completion = reply.usage or (
            len(json.dumps(body["messages"])) // 4,
            len(words(reply.text)) if reply.text else 0,
        )
        # quirk: the token details objects ride along with the three counts (source: OpenAI API
        # reference, "The chat completion object", usage)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        # quirk: `refusal` null and `annotations` [] on every message, `service_tier` on the
        # body (source: OpenAI API reference, "The chat completion object")
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text or None,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"] + "-2026",
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": self._usage(body, reply),
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: Reply, seen: Seen
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": body["model"] + "-2026",
        }

        async def send(choices: list[Any], **extra: Any) -> None:
            # quirk: every choice of a chunk carries `logprobs: null` (source: OpenAI API
            # reference, "The chat completion chunk object")
            choices = [{**c, "logprobs": None} for c in choices]
            data = {**base, "choices": choices, **extra}
            # quirk: with include_usage every chunk carries `usage: null` but the last, which
            # has the counts and empty `choices` (source: OpenAI API reference,
            # stream_options.include_usage)
            if include_usage and "usage" not in extra:
                data["usage"] = None
            await response.write(b"data: " + json.dumps(data).encode() + b"\n\n")
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)

        # quirk: the first chunk is the role alone, with empty content and a null refusal
        # (source: OpenAI API reference, "The chat completion chunk object" example)
        await send(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "finish_reason": None,
                }
            ]
        )
        pieces = words(reply.text) if reply.text else []
        for n, piece in enumerate(pieces):
            if await interrupted(request, reply, n):
                return response
            await send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        for i, call in enumerate(reply.tool_calls or []):
            fn = call["function"]
            await send(
                [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {"name": fn["name"], "arguments": ""},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ]
            )
            args = fn["arguments"]
            for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                await send(
                    [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [{"index": i, "function": {"arguments": part}}]
                            },
                            "finish_reason": None,
                        }
                    ]
                )
        await send([{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}])
        if include_usage:
            # quirk: llama.cpp's server adds its `timings` beside the usage of the last chunk
            # (source: llama.cpp tools/server/tests/unit/test_chat_completion.py,
            # test_chat_completion_with_timings_per_token)
            timings = {
                "prompt_n": 1,
                "prompt_ms": 1.0,
                "prompt_per_second": 1000.0,
                "predicted_n": 1,
                "predicted_ms": 1.0,
                "predicted_per_second": 1000.0,
            }
            await send([], usage=self._usage(body, reply), timings=timings)
        await response.write(b"data: [DONE]\n\n")
        return response

    # --- life ------------------------------------------------------------------------------

    def start(self, sock: socket.socket | None = None) -> str:
        """Serve on a free loopback port, or on `sock` (bound, not yet listening)."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            # Hanging replies are cut off at shutdown rather than waited for.
            self._runner = web.AppRunner(
                self.app(), access_log=None, shutdown_timeout=0.5, handler_cancellation=True
            )
            loop.run_until_complete(self._runner.setup())
            site: web.BaseSite = (
                web.TCPSite(self._runner, "127.0.0.1", 0)
                if sock is None
                else web.SockSite(self._runner, sock)
            )
            loop.run_until_complete(site.start())
            host, port = self._runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


class Daemon:
    """`pirouter run` in a subprocess, on a free loopback port."""

    def __init__(
        self, config: Path, env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.config = config
        # The ledger (and anything else in the data dir) lands beside the config, never in $HOME.
        # The run file (where it listens) too, so no other test's `status` finds this daemon.
        self.env = {
            **os.environ,
            "XDG_DATA_HOME": str(config.parent / "data"),
            "XDG_STATE_HOME": str(config.parent / "state"),
            **(env or {}),
        }
        self.extra_args = extra_args
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.ready_s = 0.0
        self._readers: list[threading.Thread] = []

    def config_args(self) -> tuple[str, ...]:
        """How the daemon is told its config (a subclass may run it on the default's path)."""
        return ("--config", str(self.config))

    def start(self, timeout: float = 15.0) -> Daemon:
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pirouter_py",
                *self.config_args(),
                "run",
                "--port",
                "0",
                *self.extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=ROOT,
        )
        found = threading.Event()

        def read_out() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.stdout.append(line)
                match = re.search(r"listening on (http://\S+)", line)
                if match and not self.url:
                    self.url = match.group(1)
                    found.set()

        def read_err() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr.append(line)

        self._readers = [
            threading.Thread(target=read_out, daemon=True),
            threading.Thread(target=read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.02):
            if self.proc.poll() is not None or time.monotonic() > deadline:  # exited, or hung
                self.stop()
                raise RuntimeError(f"daemon did not start: {''.join(self.stderr)}")
        self.ready_s = time.perf_counter() - started
        return self

    def post(
        self, body: dict[str, Any], path: str = "/v1/chat/completions", **headers: str
    ) -> tuple[int, dict[str, str], Any]:
        """POST JSON; (status, lower-cased headers, decoded body)."""
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=20)
        try:
            conn.request(
                "POST",
                path,
                body=json.dumps(body),
                headers={"content-type": "application/json", **headers},
            )
            response = conn.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                json.loads(response.read()),
            )
        finally:
            conn.close()

    def log_lines(self, event: str = "request") -> list[dict[str, Any]]:
        out = []
        for line in list(self.stderr):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if data.get("event") == event:
                out.append(data)
        return out

    def wait_log(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The canonical log line of one request, once the reader thread has seen it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if line.get("request_id") == request_id:
                    return line
            time.sleep(0.01)
        raise AssertionError(f"no log line for request {request_id}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        for reader in self._readers:
            reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return code


class LLMock:
    """PyPI's llmock (an independent OpenAI/Anthropic mock with a chaos admin API) on a free port.

    `script()` queues behaviours over its `/_llmock/scenario` API: statuses with Retry-After,
    delays, slow first tokens, and streams that disconnect, truncate, stall or turn malformed.
    """

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> LLMock:
        binary = Path(sys.executable).parent / "llmock"
        args = ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [str(binary), *args, "--response-style", "echo", "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("llmock did not start")

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + "/_llmock" + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def script(self, *behaviors: dict[str, Any]) -> None:
        self._admin("POST", "/scenario", {"behaviors": list(behaviors)})

    def reset(self) -> None:
        self._admin("POST", "/reset", {})

    def requests(self) -> list[dict[str, Any]]:
        return list(self._admin("GET", "/requests")["requests"])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real small filesystem (tmpfs, root only) at `where` that a test can fill: ENOSPC, not a
    simulation. Skips the test where mounting is not allowed."""
    import pytest

    where.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (root is needed): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=30)


def fill(disk: Path) -> Path:
    """Fill a filesystem to its last block; the filler's path (delete it, and the crumbs beside
    it, to make room again)."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    for n in range(100):  # the last blocks, a little at a time
        try:
            (disk / f"crumb{n}").write_bytes(b"\0" * 512)
        except OSError:
            break
    return filler


def make_room(disk: Path) -> None:
    """Undo `fill`."""
    for path in [disk / "filler", *disk.glob("crumb*")]:
        path.unlink(missing_ok=True)
