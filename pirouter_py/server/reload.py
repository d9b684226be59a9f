"""Reloading the config while the daemon runs: on SIGHUP, and when the file changes.

A valid file becomes a new snapshot (config, providers on the pooled connections, cascade, and a
live traffic view that carries on what was learned), swapped in with one assignment: requests in
flight keep the snapshot they started with. Health, the ledger and metrics carry on. An invalid
file is refused with one log line naming each problem, and the running config keeps serving.
Settings that need a new listener are reported as such.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pirouter_py.config import load_config
from pirouter_py.errors import ConfigError
from pirouter_py.observe.log import get_logger
from pirouter_py.server.state import State, snapshot_for

log = get_logger("pirouter")

RESTART_KEYS = (
    "bind",
    "api_keys_env",
    "api_keys_file",
    "allowed_hosts",
    "max_body_bytes",
    "cors_origins",
    "metrics",
)
WATCH_EVERY_S = 2.0  # how often the config file is checked for changes


def reload_config(state: State) -> bool:
    """Load the config file again and serve with it; an invalid file keeps the old one."""
    old = state.snapshot
    if old.loaded.path is None:
        log.info("config_reload_skipped", reason="running on the built-in default, no file")
        return False
    try:
        loaded = load_config(old.loaded.path)
    except ConfigError as exc:
        log.error(
            "config_reload_rejected",
            path=str(old.loaded.path),
            problems=[str(p) for p in exc.problems],
            keeping="the running config",
        )
        return False
    traffic = old.traffic.reconfigured(loaded.config)
    state.snapshot = snapshot_for(
        loaded, state.upstreams, state.environ, traffic, state.health, state.learned_path
    )
    state.config_loaded_at = time.time()
    if state.ledger is not None:
        state.ledger.models = loaded.config.models
    changed = [
        k for k in RESTART_KEYS if getattr(old.config.server, k) != getattr(loaded.config.server, k)
    ]
    log.info(
        "config_reloaded",
        path=str(old.loaded.path),
        models=len(loaded.config.models),
        rules=len(loaded.config.rules),
        needs_restart=changed or None,
    )
    return True


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime, info.st_size


async def watch_config(state: State) -> None:
    """Reload when the config file changes (its mtime or size), or the learned router's file
    does (`pirouter learn` wrote a new one)."""
    path = state.loaded.path
    if path is None:
        return
    stamp = _stamp(path)
    model = state.learned_path
    model_stamp = _stamp(model) if model is not None else None
    while True:
        await asyncio.sleep(WATCH_EVERY_S)
        now = _stamp(path)
        model_now = _stamp(model) if model is not None else None
        if (now is not None and now != stamp) or model_now != model_stamp:
            stamp, model_stamp = now or stamp, model_now
            reload_config(state)
