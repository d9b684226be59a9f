"""The stream relay: a committed stream goes to the client event by event, in its protocol.

What the cascade held back is written first, then the rest as it arrives. An upstream failure
after the commit ends the stream with an error event; a client that goes away closes the upstream
stream; a bug in pirouter ends the stream with an error event too (a 500 cannot be sent once the
answer has begun). The request is recorded (journaled) before the last bytes go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import web

from pirouter_py import record as rec
from pirouter_py.cascade import Outcome
from pirouter_py.errors import UpstreamError
from pirouter_py.observe.log import get_logger
from pirouter_py.server.middleware import INTERNAL
from pirouter_py.server.request import (
    Ctx,
    cancelled,
    failed,
    observed,
    record,
    routing_headers,
)

log = get_logger("pirouter")


async def serve_stream(ctx: Ctx) -> web.StreamResponse:
    assert ctx.decision is not None
    try:
        outcome = await ctx.snapshot.cascade.stream(ctx.decision, ctx.chat, ctx.tried)
    except asyncio.CancelledError:
        cancelled(ctx)
        raise
    if isinstance(outcome, Outcome):
        return failed(ctx, outcome)
    ctx.attempts = outcome.attempts
    overhead = (time.perf_counter() - ctx.started) * 1000 - outcome.upstream_ms
    response = web.StreamResponse(
        headers={
            "content-type": ctx.codec.stream_content_type,
            "cache-control": "no-cache",
            **routing_headers(ctx, outcome.alias, overhead),
        }
    )
    encoder = ctx.codec.stream_encoder(
        alias=outcome.alias,
        request_id=ctx.rid,
        created=int(ctx.arrived),
        include_usage=ctx.chat.include_usage,
        request=ctx.chat,
    )
    status = rec.STATUS_OK
    keep = ctx.snapshot.config.ledger.store_prompts
    text: list[str] = [e.text for e in outcome.held] if keep else []
    try:
        await response.prepare(ctx.request)
        await response.write(b"".join(encoder.encode(e) for e in outcome.held))
        async for event in outcome.rest:
            if keep:
                text.append(event.text)
            chunk = encoder.encode(event)
            if chunk:
                await response.write(chunk)
        tail = encoder.end()
    except UpstreamError as exc:
        status = rec.STATUS_UPSTREAM_ERROR
        tail = encoder.error(exc.message) + encoder.end()
    except (asyncio.CancelledError, ConnectionResetError):
        await outcome.rest.aclose()
        gone = record(ctx, rec.STATUS_CLIENT_CANCELLED, 200, outcome.alias, overhead, None)
        observed(ctx, gone)
        raise
    except Exception:  # a bug, the answer begun: a 500 now would be written into the stream
        log.exception("internal_error", request_id=ctx.rid, path=ctx.request.path)
        await outcome.rest.aclose()
        outcome.attempt.outcome = rec.STREAM_ERROR  # closing it said the client cancelled
        outcome.attempt.error = "internal error in pirouter"
        status = rec.STATUS_INTERNAL_ERROR
        tail = encoder.error(INTERNAL.format(rid=ctx.rid), "server_error") + encoder.end()
    # Recorded (journaled) before the last bytes go out: an answered stream always has its row.
    made = record(ctx, status, 200, outcome.alias, overhead, "".join(text) if keep else None)
    try:
        with contextlib.suppress(ConnectionResetError):
            await response.write(tail)
    finally:
        observed(ctx, made)
    return response
