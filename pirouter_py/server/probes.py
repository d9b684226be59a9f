"""Provider probes: one GET of a provider's model listing (never a billed call), once for each
provider at start, and again in the background while one of its models cools or is down.

What a probe finds sets the health of the provider's models (live/health.py): a refused connection
or a refused key puts them in cooldown and `down`, as a failed request would, so /health says
degraded while no chat model is left; an answer ends `down`, so /health says ok again without
any request. A listing that fails otherwise, or comes too late, changes nothing.

The background probe looks each TICK_S (no I/O unless a provider is due) and probes a failing
provider first after `[cascade] cooldown_secs`, then with the wait doubling up to REPROBE_MAX_S
while it does not answer. Probes run beside requests on the event loop, never in their way, each
bounded by PROBE_S; the background probe stops with the app (cleanup_ctx).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from pirouter_py.observe.log import get_logger
from pirouter_py.providers.base import HTTPProvider
from pirouter_py.server.state import STATE, Snapshot, State

log = get_logger("pirouter")

PROBE_S = 3.0  # how long a probe may take (at start, all providers in parallel)
DOWN = ("refused", "unauthorised")  # what a probe finds that puts a provider's models down
TICK_S = 1.0  # how often the background probe looks for a provider that is due
REPROBE_MIN_S = 1.0  # the first wait is [cascade] cooldown_secs, never shorter than this
REPROBE_MAX_S = 60.0  # the waits double up to this while a provider does not answer


async def at_start(state: State, report: Callable[[str], None]) -> None:
    """Each provider once, in parallel: one line each to `report` (ok, refused, unauthorised,
    key missing, no answer, error)."""
    snapshot = state.snapshot
    providers = _http(snapshot)
    found = await asyncio.gather(*(p.probe(PROBE_S) for p in providers.values()))
    for (name, provider), (kind, detail) in zip(providers.items(), found, strict=True):
        report(f"provider {name} ({provider.config.url}): {kind}, {detail}")
        _found(state, snapshot, name, kind, detail)


async def background(app: web.Application) -> AsyncIterator[None]:
    """The background probe while the app runs (a cleanup_ctx)."""
    task = asyncio.create_task(again(app[STATE]), name="provider-probes")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def again(state: State, clock: Callable[[], float] = time.monotonic) -> None:
    """Until cancelled: probe each provider that has a model cooling or down, when it is due."""
    due: dict[str, tuple[float, int]] = {}  # provider -> (next probe at, probes in a row not ok)
    while True:
        await asyncio.sleep(TICK_S)
        snapshot = state.snapshot
        providers = _http(snapshot)
        now = clock()
        first = max(REPROBE_MIN_S, snapshot.config.cascade.cooldown_secs)
        failing = [n for n in providers if _failing(state, snapshot, n)]
        due = {n: due.get(n, (now + first, 0)) for n in failing}
        todo = [n for n, (at, _) in due.items() if at <= now]
        if not todo:
            continue
        found = await asyncio.gather(*(providers[n].probe(PROBE_S) for n in todo))
        for name, (kind, detail) in zip(todo, found, strict=True):
            misses = 0 if kind == "ok" else due[name][1] + 1
            was_down = any(state.health.down(a) for a in _models(snapshot, name))
            _found(state, snapshot, name, kind, detail)
            if was_down and kind == "ok":
                log.info("provider_answering", provider=name, probe=detail)
            elif not was_down and kind in DOWN:
                log.warning("provider_down", provider=name, probe=f"{kind}, {detail}")
            wait = min(REPROBE_MAX_S, first * 2.0 ** min(misses, 16))
            due[name] = (clock() + wait, misses)


def _found(state: State, snapshot: Snapshot, name: str, kind: str, detail: str) -> None:
    """A probe's finding, in the health of the provider's models."""
    if kind in DOWN:
        for alias in _models(snapshot, name):
            state.health.failed(alias, error=f"provider {name} {kind}: {detail}", down=True)
    elif kind == "ok":
        for alias in _models(snapshot, name):
            if state.health.down(alias):
                state.health.succeeded(alias)


def _failing(state: State, snapshot: Snapshot, name: str) -> bool:
    health = state.health
    return any(health.cooling(a) or health.down(a) for a in _models(snapshot, name))


def _models(snapshot: Snapshot, provider: str) -> list[str]:
    return [a for a, m in snapshot.config.models.items() if m.provider == provider]


def _http(snapshot: Snapshot) -> dict[str, HTTPProvider]:
    providers = snapshot.cascade.providers.items()
    return {n: p for n, p in providers if isinstance(p, HTTPProvider)}
