"""The stream relay: a committed stream goes to the client event by event, in its protocol.

While the cascade holds a stream back, the client is sent a keep-alive every
`[server] stream_keepalive_secs` (the response starts with the first one, so its headers then name
no model yet, and a cascade that fails after it ends the stream with an error event instead of a
502). What the cascade held back is written first, then the rest as it arrives. An upstream failure
after the commit ends the stream with an error event; a client that goes away closes the upstream
stream; a bug in pirouter ends the stream with an error event too (a 500 cannot be sent once the
answer has begun). The request is recorded (journaled) before the last bytes go out.

What one read from the upstream brought goes to the client in one write (the encoded events wait
in `Batch` until the reader is about to read again, `providers.base.BEFORE_READ`), and the
response's headers go with its first bytes: a byte relay writes once per read, and a write per
event cost more than the translation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiohttp import web

from pirouter_py import record as rec
from pirouter_py.cascade import Outcome
from pirouter_py.errors import PirouterError, UpstreamError
from pirouter_py.observe.log import get_logger
from pirouter_py.providers.base import BEFORE_READ
from pirouter_py.record import Attempt
from pirouter_py.server import responses
from pirouter_py.server.middleware import INTERNAL
from pirouter_py.server.request import (
    Ctx,
    cancelled,
    failed,
    observed,
    overhead_ms,
    record,
    routing_headers,
)
from pirouter_py.server.state import DRAIN, drained
from pirouter_py.wire import Envelope

log = get_logger("pirouter")


class KeepAlive:
    """Keep-alives while the cascade holds a stream back: a timer, and a task once it fires (a
    stream that commits in time costs a timer and its cancellation)."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.every = ctx.snapshot.config.server.stream_keepalive_secs
        self.response: web.StreamResponse | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        if self.every > 0 and ctx.codec.keepalive:
            self.timer = asyncio.get_running_loop().call_later(self.every, self._start)

    def _start(self) -> None:
        self.task = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        ctx = self.ctx
        response = web.StreamResponse(
            headers=stream_headers(ctx, {"x-pirouter-request-id": ctx.rid})
        )
        await response.prepare(ctx.request)
        self.response = response
        while True:
            await response.write(ctx.codec.keepalive)
            await asyncio.sleep(self.every)

    async def stop(self) -> web.StreamResponse | None:
        """Stop sending; the response, if keep-alives began it."""
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await self.task
        return self.response


class Coalesced(web.StreamResponse):
    """A stream response whose headers wait for its first bytes and go in the same write."""

    _send_headers_immediately = False


class Batch:
    """The encoded events of one upstream read, written together when the reader is about to
    read again (`flush`, set as `BEFORE_READ`) or at the end (`take`). Should the relay wait on
    anything else first (an event source that reads no upstream), what waits is written as soon
    as the loop runs (`_late`): events are never held for longer than one turn of the loop."""

    __slots__ = ("late", "loop", "parts", "response")

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.parts: list[bytes] = []
        self.loop = asyncio.get_running_loop()
        self.late: asyncio.Task[None] | None = None

    def add(self, chunk: bytes) -> None:
        if not self.parts:
            self.loop.call_soon(self._late)
        self.parts.append(chunk)

    def _late(self) -> None:
        if self.parts:  # the relay waited without flushing: write in a task of its own
            self.late = asyncio.ensure_future(self._write_late(self.take()))

    async def _write_late(self, data: bytes) -> None:
        with contextlib.suppress(ConnectionResetError):  # the relay's next write says it
            await self.response.write(data)

    async def written(self) -> None:
        """Wait for a late write (its bytes came first, so they go first)."""
        if self.late is not None:
            late, self.late = self.late, None
            await late

    async def flush(self) -> None:
        if self.late is not None:
            await self.written()
        if self.parts:
            await self.response.write(self.take())

    def take(self) -> bytes:
        parts = self.parts
        if not parts:
            return b""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        return data


def spent_so_far(ctx: Ctx, attempt: Attempt, sent_chars: int) -> None:
    """A stream the client left: the upstream reports usage only at the end, so the tokens it
    spent are estimated (the request's input estimate; the text relayed, a token per 3 bytes as
    the router estimates) unless it reported them already."""
    if not attempt.input_tokens and ctx.decision is not None:
        attempt.input_tokens = ctx.decision.features.estimated_tokens
    if not attempt.output_tokens and sent_chars:
        attempt.output_tokens = sent_chars // 3 + 1


def stream_headers(ctx: Ctx, extra: dict[str, str]) -> dict[str, str]:
    return {"content-type": ctx.codec.stream_content_type, "cache-control": "no-cache", **extra}


async def serve_stream(ctx: Ctx) -> web.StreamResponse:
    assert ctx.decision is not None
    keepalive = KeepAlive(ctx)
    try:
        outcome = await ctx.snapshot.cascade.stream(ctx.decision, ctx.chat, ctx.tried)
    except asyncio.CancelledError as exc:
        begun = await keepalive.stop()
        if drained(exc) and begun is not None:  # the drain ran out: an error event ends it
            ctx.attempts = tuple(ctx.tried)
            return await failed_begun(ctx, rec.STATUS_SHUTDOWN, DRAIN, begun)
        cancelled(ctx, shutdown=drained(exc))
        raise
    except Exception as exc:  # a request error, or a bug: the keep-alives stop first
        begun = await keepalive.stop()
        if begun is None:
            raise  # answered by the errors middleware, in the client's protocol
        ctx.attempts = tuple(ctx.tried)
        message = exc.message if isinstance(exc, PirouterError) else INTERNAL.format(rid=ctx.rid)
        if not isinstance(exc, PirouterError):
            log.exception("internal_error", request_id=ctx.rid, path=ctx.request.path)
        return await failed_begun(ctx, rec.STATUS_INTERNAL_ERROR, message, begun)
    begun = await keepalive.stop()
    if isinstance(outcome, Outcome):
        if begun is None:
            return failed(ctx, outcome)
        assert outcome.error is not None
        ctx.attempts = outcome.attempts
        return await failed_begun(ctx, outcome.status, outcome.error.message, begun)
    ctx.attempts = outcome.attempts
    overhead = (time.perf_counter() - ctx.started) * 1000 - outcome.upstream_ms
    encoder = ctx.codec.stream_encoder(
        Envelope(
            outcome.alias,
            ctx.rid,
            int(ctx.arrived),
            ctx.chat,
            include_usage=ctx.chat.include_usage,
            input_estimate=ctx.decision.features.estimated_tokens,
        )
    )
    status = rec.STATUS_OK
    config = ctx.snapshot.config
    learning = config.learning
    # the text is kept for the ledger (store_prompts) or a shadow check's judge
    keep = config.ledger.store_prompts or (learning.shadow_rate > 0 and bool(learning.shadow_judge))
    text = rec.Kept(config.ledger.max_stored_chars)  # at most that much held, however long
    if keep:
        for e in outcome.held:
            text.add(e.text)
    sent = sum(len(e.text) for e in outcome.held)  # characters relayed, for a cancel's tokens
    first = b"".join(encoder.encode(e) for e in outcome.held)
    # the headers go with the first bytes, when there are some: those held back, sent with what
    # else the upstream's read brought, before the next read (or with the end)
    response = begun or (Coalesced if first else web.StreamResponse)(
        headers=stream_headers(ctx, routing_headers(ctx, outcome.alias, overhead))
    )
    batch = Batch(response)
    add = batch.add
    if first:
        add(first)
    reading = BEFORE_READ.set(batch.flush)
    try:
        if begun is None:
            await response.prepare(ctx.request)
        async for event in outcome.rest:
            sent += len(event.text)
            if keep:
                text.add(event.text)
            chunk = encoder.encode(event)
            if chunk:
                add(chunk)
        tail = batch.take() + encoder.end()
    except UpstreamError as exc:
        status = rec.STATUS_UPSTREAM_ERROR
        tail = batch.take() + encoder.error(exc.message) + encoder.end()
    except (asyncio.CancelledError, ConnectionResetError) as exc:
        await outcome.rest.aclose()
        spent_so_far(ctx, outcome.attempt, sent)
        if not drained(exc):
            batch.parts.clear()  # the client is gone: nothing more is written to it
            gone = record(ctx, rec.STATUS_CLIENT_CANCELLED, 200, outcome.alias, overhead, None)
            observed(ctx, gone)
            raise
        # the drain ran out mid-answer: the client's stream ends with an error event
        outcome.attempt.outcome = rec.STREAM_ERROR
        outcome.attempt.error = DRAIN
        status = rec.STATUS_SHUTDOWN
        tail = batch.take() + encoder.error(DRAIN, "service_unavailable") + encoder.end()
    except Exception:  # a bug, the answer begun: a 500 now would be written into the stream
        log.exception("internal_error", request_id=ctx.rid, path=ctx.request.path)
        await outcome.rest.aclose()
        outcome.attempt.outcome = rec.STREAM_ERROR  # closing it said the client cancelled
        outcome.attempt.error = "internal error in pirouter"
        status = rec.STATUS_INTERNAL_ERROR
        tail = batch.take() + encoder.error(INTERNAL.format(rid=ctx.rid), "server_error")
        tail += encoder.end()
    finally:
        BEFORE_READ.reset(reading)
    # Recorded (journaled) before the last bytes go out: an answered stream always has its row.
    stored = None
    if ctx.chat.protocol == "responses" and status == rec.STATUS_OK:
        stored = responses.keep(ctx, getattr(encoder, "output", None))
    answer = text.text() if keep else None
    # a stream cut and continued (cascade._continued) has more attempts than at its commit, and
    # its answer was finished by the last of them
    ctx.attempts = tuple(ctx.tried)
    final = next((a.alias for a in reversed(ctx.attempts) if a.returned), outcome.alias)
    made = record(ctx, status, 200, final, overhead, answer, stored)
    try:
        with contextlib.suppress(ConnectionResetError):
            await batch.written()
            await response.write_eof(tail)  # the last bytes and the body's end in one write
    finally:
        observed(ctx, made)
    return response


async def failed_begun(
    ctx: Ctx, status: str, message: str, response: web.StreamResponse
) -> web.StreamResponse:
    """No answer after keep-alives began the response (its status, 200, is sent): an error event
    in the client's protocol ends the stream, and the request is recorded as failed."""
    encoder = ctx.codec.stream_encoder(Envelope("", ctx.rid, int(ctx.arrived), include_usage=False))
    made = record(ctx, status, 200, None, overhead_ms(ctx), None)
    try:
        with contextlib.suppress(ConnectionResetError):
            await response.write(encoder.error(message) + encoder.end())
    finally:
        observed(ctx, made)
    return response
