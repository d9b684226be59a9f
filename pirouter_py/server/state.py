"""What the app holds: the snapshot requests are served with, and the daemon's own state.

A `Snapshot` is the config in force with what was built from it (the cascade and its providers,
the live traffic view). A reload builds a new one and swaps it in with one assignment; a request
takes the snapshot once, on arrival, and keeps it from decode to its ledger row, so it never sees
two configs. Everything else here lives as long as the app.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from pirouter_py import providers as provider_registry
from pirouter_py.cascade import Cascade
from pirouter_py.config import Config, LoadedConfig
from pirouter_py.ledger.writer import Ledger, Recorder
from pirouter_py.live.health import Health
from pirouter_py.live.traffic import Traffic
from pirouter_py.observe.log import RequestLines, get_logger
from pirouter_py.observe.metrics import Metrics
from pirouter_py.providers.transport import Upstreams
from pirouter_py.routing import prior
from pirouter_py.routing.prior import Router
from pirouter_py.server.loop import StartGate
from pirouter_py.types import frozen

log = get_logger("pirouter.server")
JSON = "application/json"
# The message a request still running at the end of the drain is cancelled with: its client gets
# an error in its own protocol (an error event ending a stream begun, else a 503), not a bare
# disconnect.
DRAIN = "pirouter is shutting down and this request ran past [server] shutdown_timeout_secs"


def drained(exc: BaseException) -> bool:
    """A cancellation by the drain (not a client that went away)."""
    return isinstance(exc, asyncio.CancelledError) and exc.args == (DRAIN,)


RECENT_RESPONSES = 200  # Responses answers kept with `store: true`, held in memory as well


@frozen
class Snapshot:
    """One config and what serves it, swapped as a whole on reload."""

    loaded: LoadedConfig
    cascade: Cascade
    traffic: Traffic
    scorer: Router | None = None  # the learned router, with [routing] learned on
    unavailable: Mapping[str, str] = field(default_factory=dict)  # alias: why it cannot be called

    @property
    def config(self) -> Config:
        return self.loaded.config


def snapshot_for(
    loaded: LoadedConfig,
    upstreams: Upstreams,
    environ: Mapping[str, str] | None,
    traffic: Traffic,
    health: Health,
    learned_path: Path | None = None,
) -> Snapshot:
    """The config with its providers (on the shared connection pool) and cascade, serving with
    the given live traffic view, and the learned router from `learned_path` when [routing]
    learned is on."""
    providers = provider_registry.build(loaded.config, upstreams, environ)
    cascade = Cascade(loaded.config, providers, health=health, limits=traffic.limits)
    scorer = None
    if loaded.config.routing.learned and learned_path is not None:
        scorer = load_scorer(loaded.config, learned_path)
    unavailable = loaded.config.unavailable(os.environ if environ is None else environ)
    return Snapshot(loaded, cascade, traffic, scorer, unavailable)


def load_scorer(config: Config, path: Path) -> Router | None:
    """The learned router: the owner's model at `path` with the shipped prior (prior.build);
    without either (or unreadable), the policy routes by the difficulty ladder and the log says
    why."""
    scorer, problems = prior.build(config, path)
    for problem in problems:
        log.error("learned_model_unreadable", error=problem)
    if scorer is None:
        log.warning(
            "learned_model_missing",
            path=str(path),
            fix="run `pirouter learn`"
            + ("" if config.routing.prior else ", or set [routing] prior = true"),
            routing="difficulty ladder",
        )
        return None
    owner = scorer.owner
    log.info(
        "learned_model_loaded",
        path=str(path) if owner is not None else None,  # the prior alone: no file of the owner's
        source=scorer.source,
        models=sorted(owner.models) if owner is not None else [],
        labels=owner.labels if owner is not None else 0,
        bias=round(scorer.bias, 4),
    )
    return scorer


class Kept:
    """The most recent Responses answers kept with `store: true`, by response id (the ledger
    holds them all; this spares a follow-up the wait for the ledger's next batch)."""

    def __init__(self) -> None:
        self.items: OrderedDict[str, tuple[str, list[Any]]] = OrderedDict()  # id: (owner, items)

    def add(self, response_id: str, owner: str, items: list[Any]) -> None:
        self.items[response_id] = (owner, items)
        if len(self.items) > RECENT_RESPONSES:
            self.items.popitem(last=False)


@dataclass(slots=True)
class State:
    """What the app holds for its whole life."""

    snapshot: Snapshot
    recorder: Recorder | None
    environ: Mapping[str, str] | None
    health: Health
    upstreams: Upstreams
    ledger_path: Path | None = None  # when set, the app opens a Ledger there as its recorder
    ledger_url: str | None = None  # [ledger] url: the ledger is in PostgreSQL (path: journal)
    learned_path: Path | None = None  # the learned router's file (beside the ledger)
    ledger: Ledger | None = None
    ledger_error: str | None = None  # why the ledger could not be opened, if it could not
    keys: tuple[tuple[bytes, str], ...] = ()  # (client key, its name); empty: none required
    operator_keys: tuple[tuple[bytes, str], ...] = ()  # the keys that see every client's records
    # the newest requests' client keys by request id, for feedback before the writer commits
    owners: dict[str, str | None] = field(default_factory=dict)
    hosts: frozenset[str] = frozenset()  # Host names answered; empty: any (keys protect)
    started: float = field(default_factory=time.time)
    metrics: Metrics | None = None
    draining: bool = False
    served: int = 0
    in_flight: int = 0
    working: set[asyncio.Task[Any]] = field(default_factory=set)  # the in-flight requests' tasks
    gate: StartGate = field(default_factory=StartGate)
    request_lines: RequestLines | None = None  # None: the level is above info
    kept: Kept = field(default_factory=Kept)
    # dashboards' live feeds, each with whose requests it may see (None: every client's)
    watchers: dict[asyncio.Queue[bytes], str | None] = field(default_factory=dict)
    config_loaded_at: float = field(default_factory=time.time)
    shadowing: bool = False  # a shadow check is running (one at a time)
    shared: Any = None  # live.shared.Shared with [state] url
    shadow_tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def loaded(self) -> LoadedConfig:
        return self.snapshot.loaded


STATE = web.AppKey("state", State)
