"""Endpoints for whoever runs the daemon: `/healthz`, `/health` and `/metrics`."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import orjson
from aiohttp import web

from pirouter_py import __version__
from pirouter_py.server.state import JSON, STATE


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
    snapshot = state.snapshot
    body: dict[str, Any] = {
        "status": "draining" if state.draining else "ok",
        "version": __version__,
        "uptime_s": round(time.time() - state.started, 3),
        "requests": state.served,
        "in_flight": state.in_flight,
        "config": snapshot.loaded.source,
    }
    if state.ledger is not None:
        body["ledger"] = asdict(state.ledger.status())
        if snapshot.config.ledger.require:
            body["ledger"]["refusing"] = not state.ledger.room(more=1)
    elif state.ledger_error is not None:
        body["ledger"] = {
            "path": str(state.ledger_path) if state.ledger_url is None else "[ledger] url",
            "failing": True,
            "last_error": state.ledger_error,
            "written": 0,
            "backlog": 0,
        }
    body["models"] = state.health.snapshot()
    if not state.draining and (why := _degraded(snapshot, body["models"])) is not None:
        body["status"], body["reason"] = "degraded", why
    if body["status"] == "ok" and (why := _ledger_short(body.get("ledger"))) is not None:
        body["status"], body["reason"] = "degraded", why
    if state.shared is not None:
        body["state"] = state.shared.status()
        if not state.shared.ok and body["status"] == "ok":
            body["status"] = "degraded"
            body["reason"] = (
                f"shared state unreachable ({state.shared.error}): this instance uses its own "
                "budgets, limits and session pins"
            )
    if limits := snapshot.traffic.limits.snapshot():
        body["limits"] = limits
    # keys resting after a 401/403/429, by variable name only
    providers = snapshot.cascade.providers.items()
    rested = {n: p.rested.snapshot() for n, p in providers if hasattr(p, "rested")}
    body["keys"] = {n: r for n, r in rested.items() if r}
    return web.Response(body=orjson.dumps(body), content_type=JSON)


def _ledger_short(ledger: dict[str, Any] | None) -> str | None:
    """Why answered rows are at risk now (the ledger's disk is full), or None."""
    if ledger is None:
        return None
    if ledger.get("refusing"):
        return (
            "the ledger cannot keep more rows on disk (it is full or unwritable): [ledger] "
            "require = true refuses new requests with 503 until it can"
        )
    if ledger.get("unsaved"):
        return (
            f"{ledger['unsaved']} answered rows are on no disk (it is full): they are written "
            "once it has room, and a stop before then loses them"
        )
    return None


def _degraded(snapshot: Any, models: dict[str, dict[str, Any]]) -> str | None:
    """Why no chat model can answer now (every one cooling after failures, down until its
    provider answers again, or without its key), or None while one can."""
    config = snapshot.config
    chat = [a for a, m in config.models.items() if m.enabled and m.kind == "chat"]
    why = {}
    for alias in chat:
        if alias in snapshot.unavailable:
            why[alias] = snapshot.unavailable[alias]
        elif models.get(alias, {}).get("cooling"):
            why[alias] = f"cooling after: {models[alias].get('last_error') or 'failures'}"
        elif models.get(alias, {}).get("down"):
            why[alias] = f"down until it answers: {models[alias].get('last_error') or 'refused'}"
        else:
            return None
    if not why:
        return None
    return "no model can answer now: " + "; ".join(f"{a} ({w})" for a, w in sorted(why.items()))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of requests, attempts, latency, tokens, cost, in flight, backlog."""
    state = request.app[STATE]
    assert state.metrics is not None  # the route exists only when metrics are on
    body, content_type = state.metrics.render()
    response = web.Response(body=body)
    response.headers["content-type"] = content_type
    return response
