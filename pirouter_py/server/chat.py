"""The one path every chat request takes, whatever protocol it came in.

OpenAI `/v1/chat/completions` and `/v1/responses`, Anthropic `/v1/messages` and Ollama
`/api/chat` share it: the
route's `Codec` decodes the body, `routing.decide` picks the models, the `Cascade` runs them, and
the codec writes the answer (here, whole; `relay.py`, streamed) or the error in the client's own
format. Each request ends with one `RequestRecord` for the recorder and one canonical log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from pirouter_py import record as rec
from pirouter_py.errors import (
    BudgetExceeded,
    PirouterError,
    RequestTimeout,
    RoutingError,
    Unrecorded,
    UnsupportedMediaType,
)
from pirouter_py.live.sessions import session_key
from pirouter_py.routing.decide import decide
from pirouter_py.server import relay, responses
from pirouter_py.server.middleware import CLIENT, RID, error_response
from pirouter_py.server.request import (
    Ctx,
    cancelled,
    failed,
    meta,
    observed,
    overhead_ms,
    record,
    routing_headers,
    send_whole,
)
from pirouter_py.server.state import JSON, STATE, State, drained
from pirouter_py.types import ChatRequest
from pirouter_py.wire import Envelope, filled
from pirouter_py.wire.codecs import Codec

# Headers of an Anthropic client's request that Anthropic upstreams receive unchanged.
FORWARDED = ("anthropic-version", "anthropic-beta")


async def decode(request: web.Request, codec: Codec, *, count_only: bool = False) -> ChatRequest:
    """The request body in the neutral form."""
    body = await read_body(request, require_json=codec.requires_json_content_type)
    if count_only:  # count_tokens bodies carry no max_tokens
        with contextlib.suppress(orjson.JSONDecodeError):
            data = orjson.loads(body)
            if isinstance(data, dict):
                data.pop("max_tokens", None)
                body = orjson.dumps(data)
    chat = codec.decode_request(body)
    if codec.protocol == "anthropic" and any(h in request.headers for h in FORWARDED):
        forwarded = {h: request.headers[h] for h in FORWARDED if h in request.headers}
        chat = replace(chat, headers=forwarded)
    return chat


async def read_body(request: web.Request, *, require_json: bool) -> bytes:
    """The request body; its arrival is bounded by body_timeout_secs."""
    if require_json and request.content_type != JSON:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {request.content_type or 'absent'}"
        )
    limit = request.app[STATE].loaded.config.server.body_timeout_secs
    try:
        if request.content.is_eof():  # the whole body came with the headers: nothing to wait for
            return await request.read()
        async with asyncio.timeout(limit):  # a client trickling its body holds nothing long
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {limit:g} s ([server] body_timeout_secs)"
        ) from None


async def shared_pin(shared: Any, traffic: Any, session: str) -> None:
    """Take the session's pin from the shared state when it is newer than this instance's."""
    found = await shared.pin(session)
    mine = traffic.sessions.last.get(session)
    if found is not None and (mine is None or found[1] > mine[1]):
        traffic.sessions.last[session] = found


def unrecorded(state: State) -> None:
    """With `[ledger] require = true`, refuse while a row could not be kept on disk."""
    if state.ledger is None or not state.ledger.durable():
        raise Unrecorded(
            "the ledger cannot record this request now (its disk is full or unwritable), and "
            "[ledger] require = true refuses to answer unrecorded; retry shortly"
        )


def chat_handler(codec: Codec) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        state = request.app[STATE]
        state.in_flight += 1  # from arrival: one waiting at the start gate is in flight too
        task = asyncio.current_task()
        if task is not None:
            state.working.add(task)
        try:
            await state.gate.enter()
            if state.snapshot.config.ledger.require and state.ledger_path is not None:
                unrecorded(state)
            chat = await decode(request, codec)
            return await serve(request, codec, chat, started)
        finally:
            state.in_flight -= 1
            state.working.discard(task)

    return handle


async def serve(
    request: web.Request, codec: Codec, chat: ChatRequest, started: float
) -> web.StreamResponse:
    """Route, run and answer one decoded request."""
    # Taken once: a reload swaps the snapshot, and this request keeps the one it started with.
    state = request.app[STATE]
    snapshot = state.snapshot
    if chat.protocol == "responses":
        chat = await responses.resolve(state, chat, request.headers)
    config, traffic = snapshot.config, snapshot.traffic
    ctx = Ctx(request, codec, chat, snapshot, started, time.time(), request[RID])
    try:
        pin = None
        if config.affinity.enabled or config.routing.turns:  # turns: tool results stay put
            ctx.session = session_key(chat, request.headers)
            if state.shared is not None:  # the turn before may have been on another instance
                await shared_pin(state.shared, traffic, ctx.session)
            pin = traffic.sessions.pin(ctx.session)
        ctx.decision = decide(
            config,
            chat,
            request.headers,
            live=traffic.for_client(request.get(CLIENT)),
            pin=pin,
            scorer=snapshot.scorer,
            unavailable=snapshot.unavailable,
        )
    except RoutingError as exc:
        overhead = (time.perf_counter() - started) * 1000
        observed(ctx, record(ctx, rec.STATUS_ROUTING_ERROR, exc.http_status, None, overhead, None))
        headers = routing_headers(ctx, None, overhead)
        if isinstance(exc, BudgetExceeded):
            headers["retry-after"] = str(exc.retry_after)
        return error_response(codec, exc.http_status, exc.message, exc.openai_type, headers=headers)
    try:
        if chat.stream:
            return await relay.serve_stream(ctx)
        return await serve_whole(ctx)
    except PirouterError as exc:  # no model could take the request: the client's error
        if not ctx.recorded:  # recorded with what was tried
            ctx.attempts = ctx.attempts or tuple(ctx.tried)
            made = record(
                ctx, rec.STATUS_ROUTING_ERROR, exc.http_status, None, overhead_ms(ctx), None
            )
            observed(ctx, made)
        raise
    except Exception:  # a bug before the answer: the errors middleware logs it and answers 500
        if not ctx.recorded:  # recorded with what the models did: their tokens were spent
            ctx.attempts = ctx.attempts or tuple(ctx.tried)
            overhead = overhead_ms(ctx)
            observed(ctx, record(ctx, rec.STATUS_INTERNAL_ERROR, 500, None, overhead, None))
        raise


async def serve_whole(ctx: Ctx) -> web.StreamResponse:
    assert ctx.decision is not None
    try:
        outcome = await ctx.snapshot.cascade.run(ctx.decision, ctx.chat, ctx.tried)
    except asyncio.CancelledError as exc:
        cancelled(ctx, shutdown=drained(exc))
        raise
    if outcome.response is None:
        return failed(ctx, outcome)
    ctx.attempts = outcome.attempts
    answer = outcome.response
    usage = filled(answer.usage, ctx.decision.features.estimated_tokens, len(answer.text))
    if usage != answer.usage:  # the upstream did not count: the client is told an estimate
        answer = replace(answer, usage=usage)
    body = ctx.codec.encode_response(
        answer, Envelope(outcome.alias or "", ctx.rid, int(ctx.arrived), ctx.chat, meta(ctx))
    )
    overhead = overhead_ms(ctx)
    stored = None
    if responses.keeping(ctx):  # the answer's output items, read back only to be kept
        stored = responses.keep(ctx, orjson.loads(body).get("output"))
    kept = rec.capped(outcome.response.text, ctx.snapshot.config.ledger.max_stored_chars)
    made = record(ctx, outcome.status, 200, outcome.alias, overhead, kept, stored)
    headers = routing_headers(ctx, outcome.alias, overhead)
    return await send_whole(ctx, web.Response(body=body, content_type=JSON, headers=headers), made)
