"""Text completions and embeddings: `/v1/completions` and Ollama's `/api/generate` (raw prompts,
fill-in-the-middle with `suffix`), `/v1/embeddings`, `/api/embed` and `/api/embeddings`.

Completions go to models with `supports_fim = true`, embeddings to models of
`kind = "embedding"`; neither is rewritten into chat. The model named by the client (an alias, or
a model id of the catalog) serves the request; `auto`, or a name pirouter does not know, takes
the local models first, then the cheapest. Completions fall back to the next capable model on a
retryable error, as chat does; embeddings never do (vectors of two models do not compare).
Each request is recorded in the ledger with its attempts, tokens and cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from pirouter_py import record as rec
from pirouter_py.cascade import Outcome
from pirouter_py.config import Config, ModelConfig
from pirouter_py.errors import RoutingError, UpstreamError
from pirouter_py.live.traffic import Traffic
from pirouter_py.observe.log import get_logger
from pirouter_py.providers.base import BEFORE_READ, Provider
from pirouter_py.record import Attempt
from pirouter_py.server.chat import read_body
from pirouter_py.server.middleware import INTERNAL, RID
from pirouter_py.server.relay import Batch, Coalesced
from pirouter_py.server.request import (
    Ctx,
    cancelled,
    failed,
    observed,
    overhead_ms,
    record,
    routing_headers,
    send_whole,
)
from pirouter_py.server.state import JSON, STATE
from pirouter_py.types import (
    ChatRequest,
    Embeddings,
    EmbedRequest,
    TextAnswer,
    TextRequest,
    Usage,
)
from pirouter_py.wire import codecs
from pirouter_py.wire import textgen as wire

T = TypeVar("T")
COMPLETIONS_RULE = "completions"
EMBEDDINGS_RULE = "embeddings"
log = get_logger("pirouter")


def chain_for(
    config: Config,
    requested: str,
    serves: Callable[[ModelConfig], bool],
    what: str,
    key: str,
    live: Traffic | None = None,
) -> tuple[str, ...]:
    """The models that may serve a request naming `requested`, in the order they are tried:
    models whose budget is spent are left out, cooling or rate-limited ones go last."""
    capable = sorted(
        (
            a
            for a, m in config.models.items()
            if m.enabled and serves(m) and (live is None or live.spent(a) is None)
        ),
        key=lambda a: (
            live is not None and live.busy(a, 0) is not None,
            not config.models[a].local,
            config.models[a].cost,
            a,
        ),
    )
    named = requested if requested in config.models else None
    if named is None:  # a model id of the catalog names its alias (Ollama clients send ids)
        named = next((a for a in capable if config.models[a].model_id == requested), None)
    if named is not None:
        if live is not None and (spent := live.spent(named)) is not None:
            raise RoutingError(spent.message())
        if named not in capable:
            raise RoutingError(
                f"model '{named}' does not serve {what}; set `{key}` in [models.{named}] "
                f"or ask for one that does: {', '.join(capable) or 'none is configured'}"
            )
        return (named, *(a for a in capable if a != named))
    if not capable:
        raise RoutingError(
            f"no model serves {what}: declare one with `{key}` in its [models.<alias>] table"
        )
    return tuple(capable)


def _ctx(request: web.Request, model: str, stream: bool, protocol: Any, rule: str) -> Ctx:
    state = request.app[STATE]
    chat = ChatRequest(model=model, messages=(), stream=stream, protocol=protocol)
    return Ctx(
        request,
        codecs.for_path(request.path),
        chat,
        state.snapshot,
        time.perf_counter(),
        time.time(),
        request[RID],
        rule=rule,
    )


async def _call(
    ctx: Ctx,
    chain: tuple[str, ...],
    once: Callable[[Provider, ModelConfig], Awaitable[T]],
    usage: Callable[[T], Usage | None],
) -> tuple[str, T] | Outcome:
    try:
        return await ctx.snapshot.cascade.call(chain, once, ctx.tried, usage)
    except asyncio.CancelledError:
        cancelled(ctx)
        raise


def _route(ctx: Ctx, serves: Callable[[ModelConfig], bool], what: str, key: str) -> tuple[str, ...]:
    """The chain for the request, or a RoutingError (a 400 in the client's protocol), recorded."""
    try:
        snapshot = ctx.snapshot
        chain = chain_for(snapshot.config, ctx.chat.model, serves, what, key, snapshot.traffic)
    except RoutingError:
        observed(ctx, record(ctx, rec.STATUS_ROUTING_ERROR, 400, None, overhead_ms(ctx), None))
        raise
    ctx.primary = chain[0]
    return chain


async def _reply(ctx: Ctx, alias: str, payload: bytes) -> web.Response:
    """A whole answer: recorded, then sent."""
    overhead, headers = _finish(ctx, alias)
    made = record(ctx, rec.STATUS_OK, 200, alias, overhead, None)
    return await send_whole(
        ctx, web.Response(body=payload, content_type=JSON, headers=headers), made
    )


def _finish(ctx: Ctx, alias: str) -> tuple[float, dict[str, str]]:
    ctx.attempts = tuple(ctx.tried)
    overhead = overhead_ms(ctx)
    return overhead, routing_headers(ctx, alias, overhead)


# ---------------------------------------------------------------------------------------------
# Text completions


def counted(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The handler, counted in flight (/health, metrics, the drain) as chat requests are."""

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        state.in_flight += 1
        task = asyncio.current_task()
        if task is not None:
            state.working.add(task)
        try:
            return await handler(request)
        finally:
            state.in_flight -= 1
            state.working.discard(task)

    return handle


@counted
async def completions(request: web.Request) -> web.StreamResponse:
    ollama = request.path == "/api/generate"
    body = await read_body(request, require_json=not ollama)
    text = wire.decode_generate(body) if ollama else wire.decode_completion(body)
    ctx = _ctx(request, text.model, text.stream, text.protocol, COMPLETIONS_RULE)
    chain = _route(ctx, lambda m: m.supports_fim, "text completions", "supports_fim = true")
    if text.stream:
        return await _stream_text(ctx, chain, text)

    async def once(provider: Provider, model: ModelConfig) -> TextAnswer:
        return await provider.text(text, model)

    result = await _call(ctx, chain, once, lambda a: a.usage)
    if isinstance(result, Outcome):
        return failed(ctx, result)
    alias, answer = result
    overhead, headers = _finish(ctx, alias)
    made = record(ctx, rec.STATUS_OK, 200, alias, overhead, None)
    if ollama:
        payload = wire.encode_generate(answer, alias=alias)
    else:
        payload = wire.encode_completion(
            answer, alias=alias, request_id=ctx.rid, created=int(ctx.arrived)
        )
    return await send_whole(
        ctx, web.Response(body=payload, content_type=JSON, headers=headers), made
    )


async def _stream_text(ctx: Ctx, chain: tuple[str, ...], text: TextRequest) -> web.StreamResponse:
    """The first piece decides which model answers (an error before it falls back); the rest is
    relayed as it comes, what one upstream read brought in one write (`relay.Batch`), the headers
    with the first bytes and the end with the last, as the chat streams are."""
    ollama = text.protocol == "ollama"

    Started = tuple[TextAnswer, AsyncGenerator[TextAnswer, None]]

    async def once(provider: Provider, model: ModelConfig) -> Started:
        pieces = provider.text_stream(text, model)
        try:
            first = await anext(pieces)
        except StopAsyncIteration:
            first = TextAnswer(finish_reason="stop")
        except BaseException:
            await pieces.aclose()
            raise
        return first, pieces

    result = await _call(ctx, chain, once, lambda _: None)
    if isinstance(result, Outcome):
        return failed(ctx, result)
    alias, (first, pieces) = result
    attempt = ctx.tried[-1]
    began = time.perf_counter() - attempt.latency_ms / 1000  # when this attempt started
    overhead, headers = _finish(ctx, alias)
    encoder = (
        wire.GenerateLines(alias)
        if ollama
        else wire.CompletionChunks(alias, ctx.rid, int(ctx.arrived))
    )
    encode = encoder.encode
    opening = encode(first)
    kind = "application/x-ndjson" if ollama else "text/event-stream"
    # the headers go with the first bytes when the first piece shows some, else right away
    response = (Coalesced if opening else web.StreamResponse)(
        headers={"content-type": kind, "cache-control": "no-cache", **headers}
    )
    batch = Batch(response)
    add = batch.add
    if opening:
        add(opening)
    status = rec.STATUS_OK
    sent, usage, finish = len(first.text), first.usage, first.finish_reason

    def error_piece(code: int, message: str, kind: str) -> bytes:
        """An error ending the stream, as a line (Ollama) or an event (OpenAI)."""
        error = ctx.codec.error_body(code, message, kind, None)
        return error + b"\n" if ollama else b"data: " + error + b"\n\n"

    reading = BEFORE_READ.set(batch.flush)
    try:
        await response.prepare(ctx.request)
        async for piece in pieces:
            sent += len(piece.text)
            if piece.usage is not None:
                usage = piece.usage
            if piece.finish_reason:
                finish = piece.finish_reason
            if chunk := encode(piece):  # b"" for a piece with nothing to show
                add(chunk)
        # Ollama's last line carries the counts, which an OpenAI upstream sends after its finish
        tail = batch.take() + encoder.end(TextAnswer("", finish or "stop", usage))
    except UpstreamError as exc:
        status = rec.STATUS_UPSTREAM_ERROR
        attempt.outcome, attempt.error = rec.STREAM_ERROR, exc.message
        tail = batch.take() + error_piece(502, exc.message, "upstream_error")
    except (asyncio.CancelledError, ConnectionResetError):
        await pieces.aclose()
        batch.parts.clear()  # the client is gone: nothing more is written to it
        attempt.outcome = rec.CLIENT_CANCELLED
        _spent(attempt, text, usage, sent, began)
        observed(ctx, record(ctx, rec.STATUS_CLIENT_CANCELLED, 200, alias, overhead, None))
        raise
    except Exception:  # a bug, the answer begun: a 500 now would be written into the stream
        log.exception("internal_error", request_id=ctx.rid, path=ctx.request.path)
        await pieces.aclose()
        status = rec.STATUS_INTERNAL_ERROR
        attempt.outcome, attempt.error = rec.STREAM_ERROR, "internal error in pirouter"
        tail = batch.take() + error_piece(500, INTERNAL.format(rid=ctx.rid), "server_error")
    finally:
        BEFORE_READ.reset(reading)
    _spent(attempt, text, usage, sent, began)
    made = record(ctx, status, 200, alias, overhead, None)
    try:
        with contextlib.suppress(ConnectionResetError):
            await batch.written()
            await response.write_eof(tail)  # the last bytes and the body's end in one write
    finally:
        observed(ctx, made)
    return response


def _spent(
    attempt: Attempt, text: TextRequest, usage: Usage | None, sent: int, began: float
) -> None:
    """A streamed completion's attempt, once its stream ends: the upstream's counts, else an
    estimate (a token per 3 bytes, as the router estimates), and its whole time."""
    if usage is not None:
        attempt.input_tokens, attempt.output_tokens = usage.input_tokens, usage.output_tokens
    else:
        attempt.input_tokens = len(text.prompt + (text.suffix or "")) // 3 + 1
        attempt.output_tokens = sent // 3 + 1 if sent else 0
    attempt.latency_ms = (time.perf_counter() - began) * 1000


# ---------------------------------------------------------------------------------------------
# Embeddings


@counted
async def embeddings(request: web.Request) -> web.StreamResponse:
    ollama = request.path.startswith("/api/")
    body = await read_body(request, require_json=not ollama)
    asked: EmbedRequest = wire.decode_embed(body) if ollama else wire.decode_embeddings(body)
    ctx = _ctx(request, asked.model, False, asked.protocol, EMBEDDINGS_RULE)
    chain = _route(ctx, lambda m: m.kind == "embedding", "embeddings", 'kind = "embedding"')
    chain = chain[:1]  # vectors of two models do not compare: no fallback

    async def once(provider: Provider, model: ModelConfig) -> Embeddings:
        return await provider.embed(asked, model)

    result = await _call(ctx, chain, once, lambda e: Usage(e.input_tokens))
    if isinstance(result, Outcome):
        return failed(ctx, result)
    alias, vectors = result
    overhead, headers = _finish(ctx, alias)
    made = record(ctx, rec.STATUS_OK, 200, alias, overhead, None)
    if ollama:
        legacy = request.path == "/api/embeddings"
        payload = wire.encode_embed(vectors, alias=alias, legacy=legacy)
    else:
        payload = wire.encode_embeddings(vectors, alias=alias, raw=asked.raw)
    return await send_whole(
        ctx, web.Response(body=payload, content_type=JSON, headers=headers), made
    )
