"""The daemon's application: its routes, its state, and what opens and closes with it.

`create_app` builds everything a config needs (the first snapshot: config, providers, cascade,
live traffic) and the routes; the ledger opens before the first request and closes after the
last has recorded; the config watcher runs while the app does. `serve.py` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from aiohttp import web

from pirouter_py.config import LoadedConfig, default_ledger_path, parse_bind
from pirouter_py.config.load import is_loopback
from pirouter_py.ledger.read import client_spend_since, open_read_only, traffic_seed
from pirouter_py.ledger.writer import Ledger, Recorder
from pirouter_py.live.budgets import day_start, month_start
from pirouter_py.live.health import Health
from pirouter_py.live.traffic import Traffic
from pirouter_py.observe.log import RequestLines, bound_logger, get_logger
from pirouter_py.observe.metrics import Metrics
from pirouter_py.providers.transport import Upstreams
from pirouter_py.routing import learned
from pirouter_py.server import access, catalog, dashboard, feedback, ops, probes, scope, textgen
from pirouter_py.server import reload as config_reload
from pirouter_py.server.chat import chat_handler
from pirouter_py.server.messages import count_tokens
from pirouter_py.server.middleware import errors_middleware, on_prepare
from pirouter_py.server.state import STATE, Snapshot, State, snapshot_for
from pirouter_py.wire import codecs

log = get_logger("pirouter")

KEEPALIVE_S = 90.0  # an idle upstream connection older than this is not reused


REOPEN_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # waits between tries to open a ledger that failed to


async def _ledger(app: web.Application) -> AsyncIterator[None]:
    """The ledger opens before the first request and closes after the last has recorded. One
    that cannot be opened (a full or read-only disk) does not take the daemon down: requests are
    served and their rows wait in the ledger's queue while it is tried again, with backoff; the
    log, /health and `pirouter status` say so until it opens."""
    state = app[STATE]
    if state.ledger_path is None:
        yield
        return
    ledger = Ledger(state.ledger_path, state.loaded.config, in_flight=lambda: state.in_flight)
    state.ledger = ledger
    state.recorder = ledger  # rows wait in its queue until it opens
    reopen = None
    try:
        await ledger.open()
        await asyncio.to_thread(_seed, state.snapshot, state.ledger_path, state.ledger_url)
    except (OSError, sqlite3.Error) as exc:
        _unavailable(state, ledger, exc)
        reopen = asyncio.create_task(_reopen(state, ledger), name="ledger-reopen")
    yield
    if reopen is not None:
        reopen.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reopen
    await ledger.close()


async def _shared(app: web.Application) -> AsyncIterator[None]:
    """State shared with other instances through Redis ([state] url; live/shared.py)."""
    from pirouter_py.live.shared import Shared

    state = app[STATE]
    config = state.snapshot.config
    assert config.state.url is not None
    shared = Shared(
        config.state.url,
        config.state.prefix,
        lambda: state.snapshot.traffic,
        lambda: state.snapshot.cascade.providers,
    )
    traffic = state.snapshot.traffic
    traffic.shared = shared
    traffic.limits.on_take, traffic.limits.on_settle = shared.started, shared.settled
    state.health.on_failed, state.health.on_succeeded = shared.cooled, shared.recovered
    state.shared = shared
    await shared.start()
    yield
    await shared.close()


def _unavailable(state: State, ledger: Ledger, exc: BaseException) -> None:
    state.ledger_error = ledger.last_error = _cannot_open(state, exc)
    log.error("ledger_unavailable", path=ledger.status().path, error=str(exc))


def _cannot_open(state: State, exc: BaseException) -> str:
    if state.ledger_url is not None:
        return (
            f"cannot open the ledger: {exc}; start the database or fix [ledger] url "
            "(it is tried again; rows wait in the journal meanwhile)"
        )
    return (
        f"cannot open the ledger at {state.ledger_path}: {exc}; free space or fix its "
        "permissions (it is tried again), or set [ledger] path to a writable file"
    )


async def _reopen(state: State, ledger: Ledger) -> None:
    for attempt in itertools.count():
        await asyncio.sleep(REOPEN_S[min(attempt, len(REOPEN_S) - 1)])
        try:
            await ledger.open()
        except (OSError, sqlite3.Error) as exc:
            state.ledger_error = ledger.last_error = _cannot_open(state, exc)
            continue
        state.ledger_error = ledger.last_error = None
        log.info("ledger_available", path=ledger.status().path, rows_waiting=ledger.queue.qsize())
        if state.ledger_path is not None:  # budgets and sessions from what it holds
            await asyncio.to_thread(_seed, state.snapshot, state.ledger_path, state.ledger_url)
        return


def _seed(snapshot: Snapshot, path: Path, url: str | None) -> None:
    """Budgets, sessions and latency start from what the ledger already knows."""
    now = time.time()
    try:
        db = open_read_only(path, url)
    except sqlite3.Error as exc:
        log.warning("traffic_seed_failed", error=str(exc))
        return
    if db is None:
        return
    try:
        day, month = day_start(now).timestamp(), month_start(now).timestamp()
        seed = traffic_seed(db, day, month, now - snapshot.config.affinity.soft_secs)
        clients = client_spend_since(db, day, month)
    except sqlite3.Error as exc:
        log.warning("traffic_seed_failed", error=str(exc))
        return
    finally:
        db.close()
    snapshot.traffic.seed(seed.today, seed.month, seed.sessions, seed.ttft)
    snapshot.traffic.budgets.spend.seed_clients(*clients)


async def _upstreams(app: web.Application) -> AsyncIterator[None]:
    """The config watcher while the app runs; the upstream connection pool closed at shutdown."""
    state = app[STATE]
    watcher = asyncio.create_task(config_reload.watch_config(state), name="config-watcher")
    if any(p.url.startswith("https://") for p in state.loaded.config.providers.values()):
        state.upstreams.warm_tls()
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await state.upstreams.close()


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
    config = loaded.config
    server = config.server
    app = web.Application(client_max_size=server.max_body_bytes, middlewares=[errors_middleware])
    health = Health(config.cascade.cooldown_secs, config.cascade.max_cooldown_secs)
    upstreams = Upstreams(keepalive=KEEPALIVE_S)
    learned_path = (ledger_path or default_ledger_path()).with_name(learned.FILE_NAME)
    traffic = Traffic(config, health)
    snapshot = snapshot_for(loaded, upstreams, environ, traffic, health, learned_path)
    state = app[STATE] = State(snapshot, recorder, environ, health, upstreams, ledger_path)
    state.learned_path = learned_path
    state.ledger_url = config.ledger.url if ledger_path is not None else None
    request_log = bound_logger("pirouter")  # bound once: a proxy binds on every call
    if request_log.is_enabled_for(logging.INFO):
        state.request_lines = RequestLines(request_log)
    state.keys, state.operator_keys = scope.load(server, environ)
    listen = host if host is not None else (parse_bind(server.bind) or ("127.0.0.1", 0))[0]
    if is_loopback(listen):  # beyond loopback, client keys are the protection
        state.hosts = access.allowed_hosts(listen, server.allowed_hosts)
    if server.metrics:
        state.metrics = Metrics(
            in_flight=lambda: state.in_flight,
            ledger_backlog=lambda: state.ledger.status().backlog if state.ledger else 0,
            ledger_unsaved=lambda: len(state.ledger.journal.unsaved) if state.ledger else 0,
            shared_state=lambda: None if state.shared is None else float(state.shared.ok),
        )
    app.cleanup_ctx.append(_ledger)
    if config.state.url is not None:
        app.cleanup_ctx.append(_shared)
    app.on_cleanup.append(_last_lines)
    app.cleanup_ctx.append(_upstreams)
    app.cleanup_ctx.append(probes.background)  # stops before the upstream pool closes
    app.on_shutdown.append(_drain)
    # always: a reload that adds cors_origins takes effect at once (each call reads them)
    app.on_response_prepare.append(on_prepare)
    add = app.router
    add.add_get("/healthz", ops.healthz)
    add.add_get("/health", ops.health)
    if state.metrics is not None:
        add.add_get("/metrics", ops.metrics)
    add.add_get("/v1/models", catalog.list_models)
    add.add_post("/v1/chat/completions", chat_handler(codecs.OPENAI))
    add.add_post("/v1/messages", chat_handler(codecs.ANTHROPIC))
    add.add_post("/v1/messages/count_tokens", count_tokens)
    add.add_post("/api/chat", chat_handler(codecs.OLLAMA))
    add.add_post("/v1/responses", chat_handler(codecs.RESPONSES))
    add.add_post("/v1/responses/compact", chat_handler(codecs.RESPONSES_COMPACT))
    add.add_post("/v1/feedback", feedback.post)
    add.add_post("/v1/completions", textgen.completions)
    add.add_post("/api/generate", textgen.completions)
    add.add_post("/v1/embeddings", textgen.embeddings)
    add.add_post("/api/embed", textgen.embeddings)
    add.add_post("/api/embeddings", textgen.embeddings)
    add.add_get("/api/tags", catalog.ollama_tags)
    add.add_get("/api/ps", catalog.ollama_ps)
    add.add_get("/api/version", catalog.ollama_version)
    add.add_post("/api/show", catalog.ollama_show)
    dashboard.routes(app)
    return app
