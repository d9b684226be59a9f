"""The daemon's HTTP side: the aiohttp app, its routes and middleware, start-up and shutdown.

Three inbound protocols (OpenAI `/v1/chat/completions`, Anthropic `/v1/messages`, Ollama
`/api/chat`) share one path: the route's `Codec` decodes the body, `router.decide` picks the
models, the `Cascade` runs them, and the codec writes the answer, stream or error in the client's
own format. Each request ends with one canonical log line and one `RequestRecord` for the
recorder. A traceback or a key never reaches a client. On shutdown, new requests get 503 while
those in flight finish, bounded by `[server] shutdown_timeout_secs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pirouter_py import __version__, access
from pirouter_py import ledger as ledger_mod
from pirouter_py import providers as provider_registry
from pirouter_py import record as rec
from pirouter_py import reload as config_reload
from pirouter_py.cascade import Cascade, Outcome
from pirouter_py.config import Config, LoadedConfig, parse_bind
from pirouter_py.errors import (
    BudgetExceeded,
    ForbiddenHost,
    PirouterError,
    RequestError,
    RequestTimeout,
    RoutingError,
    Unauthorized,
    UnknownModel,
    UnsupportedMediaType,
    UpstreamError,
)
from pirouter_py.features import estimate_tokens
from pirouter_py.health import Health
from pirouter_py.ledger import Ledger
from pirouter_py.log import RequestLines, bound_logger, get_logger
from pirouter_py.loop import StartGate, settle_gc
from pirouter_py.metrics import Metrics
from pirouter_py.providers.http import Upstreams
from pirouter_py.record import Attempt, Recorder, RequestRecord
from pirouter_py.router import Decision, decide
from pirouter_py.traffic import Traffic, session_key
from pirouter_py.types import ChatRequest
from pirouter_py.wire import codecs
from pirouter_py.wire import ollama as ollama_wire
from pirouter_py.wire.codecs import Codec

log = get_logger("pirouter")

ROUTES_HELP = (
    "POST /v1/chat/completions, POST /v1/messages, POST /api/chat, GET /v1/models, "
    "GET /api/tags, GET /healthz"
)
JSON = "application/json"
KEEPALIVE_S = 90.0  # an idle upstream connection older than this is not reused


@dataclass(slots=True)
class State:
    """What the app holds for its whole life."""

    loaded: LoadedConfig
    recorder: Recorder | None
    environ: Mapping[str, str] | None
    ledger_path: Path | None = None  # when set, the app opens a Ledger there as its recorder
    ledger: Ledger | None = None
    ledger_error: str | None = None  # why the ledger could not be opened, if it could not
    keys: tuple[bytes, ...] = ()  # client keys; empty: none required (loopback only)
    hosts: frozenset[str] = frozenset()  # Host names answered; empty: any (keys protect)
    started: float = field(default_factory=time.time)
    cascade: Cascade | None = None
    metrics: Metrics | None = None
    health: Health | None = None
    traffic: Traffic | None = None
    upstreams: Upstreams | None = None
    draining: bool = False
    served: int = 0
    in_flight: int = 0
    gate: StartGate = field(default_factory=StartGate)
    request_lines: RequestLines | None = None  # None: the level is above info


STATE = web.AppKey("state", State)
_INTERNAL = "internal error in pirouter (request {rid}); it was logged"
# The request id the errors middleware gave a request: a typed key where this aiohttp has them
# (a string key warns there)
RID: Any = web.RequestKey("rid", str) if hasattr(web, "RequestKey") else "rid"


# ---------------------------------------------------------------------------------------------
# Errors in the client's protocol

_STATUS_TEXT = {
    404: "no route for {method} {path}; pirouter serves " + ROUTES_HELP,
    405: "method {method} is not allowed on {path}",
    413: "request body is larger than the {limit}-byte limit ([server] max_body_bytes)",
}
_STATUS_KIND = {404: "not_found_error", 503: "service_unavailable"}


def error_response(
    codec: Codec,
    status: int,
    message: str,
    kind: str,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=codec.error_body(status, message, kind, param),
        content_type=JSON,
        headers=headers,
    )


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes an error body in the client's protocol, with a request id."""
    state = request.app[STATE]
    codec = codecs.for_path(request.path)
    rid = rec.new_request_id()
    request[RID] = rid
    ids = {"x-pirouter-request-id": rid}
    if state.draining and request.path not in ("/healthz", "/health"):
        return error_response(
            codec,
            503,
            "pirouter is shutting down; retry shortly",
            "service_unavailable",
            headers=ids | {"retry-after": "1"},
        )
    try:
        if state.hosts and request.host and access.host_name(request.host) not in state.hosts:
            raise ForbiddenHost(
                f"pirouter does not answer for host {request.host!r}; add it to "
                "[server] allowed_hosts if it is yours"
            )
        cors = state.loaded.config.server.cors_origins
        if request.method == "OPTIONS" and access.cors_origin(cors, request.headers.get("Origin")):
            # browsers send no keys with a preflight
            return web.Response(
                status=204,
                headers=access.preflight_headers(
                    request.headers.get("Access-Control-Request-Headers", "")
                ),
            )
        if (
            state.keys
            and request.path != "/healthz"
            and not access.key_ok(state.keys, request.headers)
        ):
            raise Unauthorized(
                "a client key is required: send `Authorization: Bearer <key>` "
                "or `x-api-key: <key>` ([server] api_keys_env / api_keys_file)"
            )
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        template = _STATUS_TEXT.get(exc.status)
        message = (
            template.format(
                method=request.method,
                path=request.path,
                limit=state.loaded.config.server.max_body_bytes,
            )
            if template
            else exc.reason
        )
        return error_response(
            codec,
            exc.status,
            message,
            _STATUS_KIND.get(exc.status, "invalid_request_error"),
            headers=ids,
        )
    except PirouterError as exc:
        return error_response(
            codec,
            exc.http_status,
            exc.message,
            exc.openai_type,
            param=getattr(exc, "param", None),
            headers=ids,
        )
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("internal_error", request_id=rid, path=request.path)
        return error_response(
            codec,
            500,
            _INTERNAL.format(rid=rid),
            "server_error",
            headers=ids,
        )


# ---------------------------------------------------------------------------------------------
# Routes that answer without a model


async def healthz(request: web.Request) -> web.Response:
    """v0.1's `ok`, plus a line when ledger rows wait because writing them fails (not when they
    wait a moment for the writer's next batch)."""
    ledger = request.app[STATE].ledger
    status = ledger.status() if ledger is not None else None
    if status is not None and status.failing:
        return web.Response(text=f"ok\nledger backlog: {status.backlog}")
    return web.Response(text="ok")


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body: dict[str, Any] = {
        "status": "draining" if state.draining else "ok",
        "version": __version__,
        "uptime_s": round(time.time() - state.started, 3),
        "requests": state.served,
        "in_flight": state.in_flight,
        "config": state.loaded.source,
    }
    if state.ledger is not None:
        body["ledger"] = asdict(state.ledger.status())
    elif state.ledger_error is not None:
        body["ledger"] = {
            "path": str(state.ledger_path),
            "failing": True,
            "last_error": state.ledger_error,
            "written": 0,
            "backlog": 0,
        }
    if state.health is not None:
        body["models"] = state.health.snapshot()
    if state.traffic is not None and (limits := state.traffic.limits.snapshot()):
        body["limits"] = limits
    if state.cascade is not None:  # keys resting after a 401/403/429, by variable name only
        providers = state.cascade.providers.items()
        rested = {n: p.rested.snapshot() for n, p in providers if hasattr(p, "rested")}
        body["keys"] = {n: r for n, r in rested.items() if r}
    return web.Response(body=orjson.dumps(body), content_type=JSON)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of requests, attempts, latency, tokens, cost, in flight, backlog."""
    state = request.app[STATE]
    assert state.metrics is not None  # the route exists only when metrics are on
    body, content_type = state.metrics.render()
    response = web.Response(body=body)
    response.headers["content-type"] = content_type
    return response


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cfg = state.loaded.config
    created = int(state.started)
    data = [{"id": "auto", "object": "model", "created": created, "owned_by": "pirouter"}] + [
        {"id": alias, "object": "model", "created": created, "owned_by": cfg.models[alias].provider}
        for alias in cfg.aliases
    ]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=JSON)


async def ollama_tags(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cfg = state.loaded.config
    aliases = [("auto", "pirouter")] + [(a, cfg.models[a].provider) for a in cfg.aliases]
    return web.Response(body=ollama_wire.tags(aliases, state.started), content_type=JSON)


async def ollama_version(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps({"version": __version__}), content_type=JSON)


async def ollama_show(request: web.Request) -> web.Response:
    cfg = request.app[STATE].loaded.config
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise RequestError("request body is not valid JSON") from None
    name = data.get("model") or data.get("name") if isinstance(data, dict) else None
    if name == "auto":
        body = ollama_wire.show("auto", "pirouter", True, True, None)
    elif isinstance(name, str) and name in cfg.models:
        m = cfg.models[name]
        body = ollama_wire.show(
            name, m.provider, m.supports_tools, m.supports_vision, m.context_window
        )
    else:
        raise UnknownModel(
            f"model '{name}' not found; pirouter serves auto and the aliases of its config"
        )
    return web.Response(body=body, content_type=JSON)


async def count_tokens(request: web.Request) -> web.Response:
    """Anthropic's `/v1/messages/count_tokens`, answered from pirouter's estimate."""
    chat = await _decode(request, codecs.ANTHROPIC, count_only=True)
    return web.Response(
        body=orjson.dumps({"input_tokens": estimate_tokens(chat)}), content_type=JSON
    )


# ---------------------------------------------------------------------------------------------
# Serving one chat request


async def _decode(request: web.Request, codec: Codec, *, count_only: bool = False) -> ChatRequest:
    if codec.requires_json_content_type and request.content_type != JSON:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {request.content_type or 'absent'}"
        )
    limit = request.app[STATE].loaded.config.server.body_timeout_secs
    try:
        if request.content.is_eof():  # the whole body came with the headers: nothing to wait for
            body = await request.read()
        else:
            async with asyncio.timeout(limit):  # a client trickling its body holds nothing long
                body = await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {limit:g} s ([server] body_timeout_secs)"
        ) from None
    if count_only:  # count_tokens bodies carry no max_tokens
        with contextlib.suppress(orjson.JSONDecodeError):
            data = orjson.loads(body)
            if isinstance(data, dict):
                data.pop("max_tokens", None)
                body = orjson.dumps(data)
    return codec.decode_request(body)


def chat_handler(codec: Codec) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        state = request.app[STATE]
        state.in_flight += 1  # from arrival: one waiting at the start gate is in flight too
        try:
            await state.gate.enter()
            chat = await _decode(request, codec)
            return await _serve(request, codec, chat, started)
        finally:
            state.in_flight -= 1

    return handle


@dataclass(slots=True)
class _Ctx:
    """One request on its way through the daemon."""

    request: web.Request
    codec: Codec
    chat: ChatRequest
    started: float
    arrived: float
    rid: str
    decision: Decision | None = None
    attempts: tuple[Attempt, ...] = ()
    session: str | None = None  # the conversation, with [affinity] enabled
    tried: list[Attempt] = field(default_factory=list)  # the cascade's attempts as it goes
    recorded: bool = False


def _routing_headers(ctx: _Ctx, alias: str | None, overhead_ms: float) -> dict[str, str]:
    headers = {
        "x-pirouter-request-id": ctx.rid,
        "x-pirouter-attempts": str(len(ctx.attempts)),
        "x-pirouter-overhead-ms": f"{overhead_ms:.2f}",
    }
    if ctx.decision is not None:
        headers["x-pirouter-rule"] = ctx.decision.rule
    if alias is not None:
        headers["x-pirouter-model"] = alias
    return headers


def _meta(ctx: _Ctx) -> dict[str, Any]:
    assert ctx.decision is not None
    return {
        "request_id": ctx.rid,
        "rule": ctx.decision.rule,
        "attempts": [a.to_json() for a in ctx.attempts],
    }


def _upstream_ms(attempts: tuple[Attempt, ...]) -> float:
    return sum(a.latency_ms for a in attempts)


def _record(
    ctx: _Ctx, status: str, http: int, final: str | None, overhead_ms: float, answer: str | None
) -> RequestRecord:
    """The record of a finished request, given to the recorder (the ledger journals it) before
    the answer's last bytes are sent; `_observed` follows."""
    ctx.recorded = True
    state = ctx.request.app[STATE]
    state.served += 1
    decision = ctx.decision
    record = RequestRecord(
        request_id=ctx.rid,
        ts=ctx.arrived,
        protocol=ctx.chat.protocol,
        requested_model=ctx.chat.model,
        rule=decision.rule if decision else None,
        difficulty=decision.difficulty if decision else None,
        primary=decision.primary if decision else None,
        final=final,
        status=status,
        http_status=http,
        streamed=ctx.chat.stream,
        latency_ms=(time.perf_counter() - ctx.started) * 1000,
        overhead_ms=overhead_ms,
        ttft_ms=next((a.ttft_ms for a in ctx.attempts if a.returned), None),
        user_agent=ctx.request.headers.get("user-agent", ""),
        attempts=ctx.attempts,
        session=ctx.session,
        pin=decision.pin if decision else None,
        estimated_tokens=decision.features.estimated_tokens if decision else 0,
    )
    if state.recorder is not None:
        if state.loaded.config.ledger.store_prompts and ctx.chat.raw is not None:
            prompt = orjson.dumps(ctx.chat.raw).decode()
            state.recorder.record(replace(record, prompt=prompt, answer=answer))
        else:
            state.recorder.record(record)
    return record


def _observed(ctx: _Ctx, record: RequestRecord) -> None:
    """What the daemon learns from a finished request (log line, metrics, live traffic); for an
    answer, after it is sent: the client need not wait (the log line alone is ~20-40 µs)."""
    state = ctx.request.app[STATE]
    if state.request_lines is not None:
        state.request_lines.finished(record, state.loaded.config.server.log_requests_per_sec)
    if state.metrics is not None:
        state.metrics.observe(record)
    if state.traffic is not None:
        state.traffic.finished(record)


async def _serve(
    request: web.Request, codec: Codec, chat: ChatRequest, started: float
) -> web.StreamResponse:
    state = request.app[STATE]
    # A reload swaps both at once; this request keeps the pair it started with.
    config, cascade, traffic = state.loaded.config, state.cascade, state.traffic
    assert cascade is not None
    ctx = _Ctx(request, codec, chat, started, time.time(), request[RID])
    try:
        pin = None
        if config.affinity.enabled and traffic is not None:
            ctx.session = session_key(chat, request.headers)
            pin = traffic.sessions.pin(ctx.session)
        ctx.decision = decide(config, chat, request.headers, live=traffic, pin=pin)
    except RoutingError as exc:
        overhead = (time.perf_counter() - started) * 1000
        failed = _record(ctx, rec.STATUS_ROUTING_ERROR, exc.http_status, None, overhead, None)
        _observed(ctx, failed)
        headers = _routing_headers(ctx, None, overhead)
        if isinstance(exc, BudgetExceeded):
            headers["retry-after"] = str(exc.retry_after)
        return error_response(codec, exc.http_status, exc.message, exc.openai_type, headers=headers)
    try:
        if chat.stream:
            return await _serve_stream(ctx, cascade)
        return await _serve_whole(ctx, cascade)
    except PirouterError:
        raise
    except Exception:  # a bug before the answer: the errors middleware logs it and answers 500
        if not ctx.recorded:  # recorded with what the models did: their tokens were spent
            ctx.attempts = ctx.attempts or tuple(ctx.tried)
            overhead = (time.perf_counter() - started) * 1000 - _upstream_ms(ctx.attempts)
            _observed(ctx, _record(ctx, rec.STATUS_INTERNAL_ERROR, 500, None, overhead, None))
        raise


def _failed(ctx: _Ctx, outcome: Outcome) -> web.Response:
    ctx.attempts = outcome.attempts
    overhead = (time.perf_counter() - ctx.started) * 1000 - _upstream_ms(outcome.attempts)
    assert outcome.error is not None
    _observed(ctx, _record(ctx, outcome.status, 502, None, overhead, None))
    return error_response(
        ctx.codec,
        502,
        outcome.error.message,
        "upstream_error",
        headers=_routing_headers(ctx, None, overhead),
    )


def _cancelled(ctx: _Ctx) -> None:
    """The client went away before an answer was committed: record what had been tried."""
    ctx.attempts = tuple(ctx.tried)
    overhead = (time.perf_counter() - ctx.started) * 1000 - _upstream_ms(ctx.attempts)
    _observed(ctx, _record(ctx, rec.STATUS_CLIENT_CANCELLED, 499, None, overhead, None))


async def _serve_whole(ctx: _Ctx, cascade: Cascade) -> web.StreamResponse:
    assert ctx.decision is not None
    try:
        outcome = await cascade.run(ctx.decision, ctx.chat, ctx.tried)
    except asyncio.CancelledError:
        _cancelled(ctx)
        raise
    if outcome.response is None:
        return _failed(ctx, outcome)
    ctx.attempts = outcome.attempts
    body = ctx.codec.encode_response(
        outcome.response,
        alias=outcome.alias or "",
        request_id=ctx.rid,
        created=int(ctx.arrived),
        meta=_meta(ctx),
    )
    overhead = (time.perf_counter() - ctx.started) * 1000 - _upstream_ms(outcome.attempts)
    record = _record(ctx, outcome.status, 200, outcome.alias, overhead, outcome.response.text)
    response = web.Response(
        body=body, content_type=JSON, headers=_routing_headers(ctx, outcome.alias, overhead)
    )
    try:  # sent here rather than by aiohttp after we return, so the bookkeeping can follow it
        with contextlib.suppress(ConnectionResetError):
            await response.prepare(ctx.request)
            await response.write_eof()
    finally:
        _observed(ctx, record)
    return response


async def _serve_stream(ctx: _Ctx, cascade: Cascade) -> web.StreamResponse:
    assert ctx.decision is not None
    try:
        outcome = await cascade.stream(ctx.decision, ctx.chat, ctx.tried)
    except asyncio.CancelledError:
        _cancelled(ctx)
        raise
    if isinstance(outcome, Outcome):
        return _failed(ctx, outcome)
    ctx.attempts = outcome.attempts
    overhead = (time.perf_counter() - ctx.started) * 1000 - outcome.upstream_ms
    response = web.StreamResponse(
        headers={
            "content-type": ctx.codec.stream_content_type,
            "cache-control": "no-cache",
            **_routing_headers(ctx, outcome.alias, overhead),
        }
    )
    encoder = ctx.codec.stream_encoder(
        alias=outcome.alias,
        request_id=ctx.rid,
        created=int(ctx.arrived),
        include_usage=ctx.chat.include_usage,
    )
    status = rec.STATUS_OK
    keep = ctx.request.app[STATE].loaded.config.ledger.store_prompts
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
        await outcome.rest.aclose()  # type: ignore[attr-defined]
        cancelled = _record(ctx, rec.STATUS_CLIENT_CANCELLED, 200, outcome.alias, overhead, None)
        _observed(ctx, cancelled)
        raise
    except Exception:  # a bug, the answer begun: a 500 now would be written into the stream
        log.exception("internal_error", request_id=ctx.rid, path=ctx.request.path)
        await outcome.rest.aclose()  # type: ignore[attr-defined]
        outcome.attempt.outcome = rec.STREAM_ERROR  # closing it said the client cancelled
        outcome.attempt.error = "internal error in pirouter"
        status = rec.STATUS_INTERNAL_ERROR
        tail = encoder.error(_INTERNAL.format(rid=ctx.rid), "server_error") + encoder.end()
    # Recorded (journaled) before the last bytes go out: an answered stream always has its row.
    record = _record(ctx, status, 200, outcome.alias, overhead, "".join(text) if keep else None)
    try:
        with contextlib.suppress(ConnectionResetError):
            await response.write(tail)
    finally:
        _observed(ctx, record)
    return response


# ---------------------------------------------------------------------------------------------
# The app and its life


async def _ledger(app: web.Application) -> AsyncIterator[None]:
    """The ledger opens before the first request and closes after the last has recorded."""
    state = app[STATE]
    if state.ledger_path is None:
        yield
        return
    ledger = Ledger(state.ledger_path, state.loaded.config)
    try:
        await ledger.open()
    except (OSError, sqlite3.Error) as exc:
        # A ledger that cannot be opened (a read-only or full disk) must not take the daemon
        # down: serve without it, and say so loudly in the log, /health and `pirouter status`.
        state.ledger_error = (
            f"cannot open the ledger at {state.ledger_path}: {exc}; set "
            "[ledger] path to a writable file (requests are not recorded)"
        )
        log.error("ledger_unavailable", path=str(state.ledger_path), error=str(exc))
        yield
        return
    state.ledger = ledger
    state.recorder = ledger
    if state.traffic is not None:
        await asyncio.to_thread(_seed, state.traffic, state.ledger_path, state.loaded.config)
    yield
    await ledger.close()


def _seed(traffic: Traffic, path: Path, config: Config) -> None:
    """Budgets, sessions and latency start from what the ledger already knows."""
    db = ledger_mod.open_read_only(path)
    if db is None:
        return
    try:
        traffic.seed(ledger_mod.traffic_seed(db, time.time(), config.affinity.soft_secs))
    except sqlite3.Error as exc:
        log.warning("traffic_seed_failed", error=str(exc))
    finally:
        db.close()


async def _upstreams(app: web.Application) -> AsyncIterator[None]:
    """One connection pool for every upstream call, closed at shutdown."""
    state = app[STATE]
    state.upstreams = upstreams = Upstreams(keepalive=KEEPALIVE_S)
    config = state.loaded.config
    providers = provider_registry.build(config, upstreams, state.environ)
    limits = state.traffic.limits if state.traffic else None
    state.cascade = Cascade(config, providers, health=state.health, limits=limits)
    watcher = asyncio.create_task(config_reload.watch_config(state), name="config-watcher")
    if any(p.url.startswith("https://") for p in config.providers.values()):
        upstreams.warm_tls()
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await upstreams.close()


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """CORS headers on every response to an allowed origin (streams included)."""
    allowed = request.app[STATE].loaded.config.server.cors_origins
    origin = access.cors_origin(allowed, request.headers.get("Origin"))
    if origin is not None:
        response.headers.update(access.cors_headers(origin))


async def _drain(app: web.Application) -> None:
    app[STATE].draining = True


async def _last_lines(app: web.Application) -> None:
    """The count of request lines skipped in the last second, if any, before exiting."""
    if (lines := app[STATE].request_lines) is not None:
        lines.report()


def create_app(
    loaded: LoadedConfig,
    *,
    recorder: Recorder | None = None,
    ledger_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    host: str | None = None,
) -> web.Application:
    """The daemon's application for a loaded config; with `ledger_path`, it records there."""
    app = web.Application(
        client_max_size=loaded.config.server.max_body_bytes, middlewares=[errors_middleware]
    )
    state = app[STATE] = State(loaded, recorder, environ, ledger_path)
    request_log = bound_logger("pirouter")  # bound once: a proxy binds on every call
    if request_log.is_enabled_for(logging.INFO):
        state.request_lines = RequestLines(request_log)
    cascade = loaded.config.cascade
    state.health = Health(cascade.cooldown_secs, cascade.max_cooldown_secs)
    state.traffic = Traffic(loaded.config, state.health)
    server = loaded.config.server
    state.keys = access.load_keys(server, environ)
    listen = host if host is not None else (parse_bind(server.bind) or ("127.0.0.1", 0))[0]
    if access.is_loopback(listen):  # beyond loopback, client keys are the protection
        state.hosts = access.allowed_hosts(listen, server.allowed_hosts)
    if loaded.config.server.metrics:
        state.metrics = Metrics(
            loaded.config.models,
            in_flight=lambda: state.in_flight,
            ledger_backlog=lambda: state.ledger.status().backlog if state.ledger else 0,
        )
    app.cleanup_ctx.append(_ledger)
    app.on_cleanup.append(_last_lines)
    app.cleanup_ctx.append(_upstreams)
    app.on_shutdown.append(_drain)
    if server.cors_origins:
        app.on_response_prepare.append(_cors_headers)
    add = app.router
    add.add_get("/healthz", healthz)
    add.add_get("/health", health)
    if state.metrics is not None:
        add.add_get("/metrics", metrics)
    add.add_get("/v1/models", list_models)
    add.add_post("/v1/chat/completions", chat_handler(codecs.OPENAI))
    add.add_post("/v1/messages", chat_handler(codecs.ANTHROPIC))
    add.add_post("/v1/messages/count_tokens", count_tokens)
    add.add_post("/api/chat", chat_handler(codecs.OLLAMA))
    add.add_get("/api/tags", ollama_tags)
    add.add_get("/api/version", ollama_version)
    add.add_post("/api/show", ollama_show)
    return app


async def serve(
    loaded: LoadedConfig,
    host: str,
    port: int,
    *,
    announce: Callable[[str], None],
    ledger_path: Path | None,
) -> None:
    """Listen until SIGINT or SIGTERM, then drain and return."""
    app = create_app(loaded, ledger_path=ledger_path, host=host)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=loaded.config.server.shutdown_timeout_secs,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise PirouterError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "is another pirouter running? Change [server] bind or pass "
                "--port"
            ) from None
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, config_reload.reload_config, app[STATE])
        settle_gc()
        # Only now say where we listen: a supervisor may signal as soon as it reads this line.
        announce(f"http://{shown}:{bound[1]}")
        await stop.wait()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Draining is bounded by shutdown_timeout_secs: a repeated signal (a second Ctrl-C,
            # an impatient supervisor) must not cut it short or turn exit 0 into death by signal.
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        log.info(
            "shutting_down",
            in_flight=app[STATE].in_flight,
            timeout_s=loaded.config.server.shutdown_timeout_secs,
        )
    finally:
        await runner.cleanup()
