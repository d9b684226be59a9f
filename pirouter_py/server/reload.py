"""Reloading the config while the daemon runs: on SIGHUP, and when the file changes.

A daemon started on the built-in default (no file at the platform's config path) watches that
path all the same: the file `pirouter init` writes there is loaded when it appears.

A valid file becomes a new snapshot (config, providers on the pooled connections, cascade, and a
live traffic view that carries on what was learned), swapped in with one assignment: requests in
flight keep the snapshot they started with. Health, the ledger and metrics carry on. An invalid
file is refused with one log line naming each problem, and the running config keeps serving.
Settings that need a new listener are reported as such.
"""

from __future__ import annotations

import asyncio
import time
import tomllib
from pathlib import Path

import orjson

from pirouter_py.config import LoadedConfig, load_config
from pirouter_py.config.schema import BUILTIN_SOURCE
from pirouter_py.errors import ConfigError
from pirouter_py.observe.log import get_logger
from pirouter_py.server.state import State, snapshot_for

log = get_logger("pirouter")

RESTART_KEYS = (
    "bind",
    "api_keys_env",
    "api_keys_file",
    "admin_keys_env",
    "allowed_hosts",
    "max_body_bytes",
    "metrics",
    "header_timeout_secs",
    "idle_timeout_secs",
    "max_connections",
)
WATCH_EVERY_S = 1.0  # how often the config file is checked for changes
# A changed file is loaded once it has not changed for this long, so a file written in steps
# (an editor's save, a script's two writes seconds apart) is loaded whole, never a prefix; one
# that does not parse waits up to UNFINISHED_S more.
SETTLE_S = 3.0
UNFINISHED_S = 30.0


def reload_config(state: State) -> bool:
    """Load the config file again and serve with it; an invalid file keeps the old one."""
    old = state.snapshot
    path = _config_path(old.loaded)
    if path is None or (old.loaded.path is None and not path.exists()):
        log.info(
            "config_reload_skipped",
            reason="running on the built-in default, no file",
            watching=None if path is None else str(path),
        )
        return False
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        log.error(
            "config_reload_rejected",
            path=str(path),
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
        path=str(path),
        was=BUILTIN_SOURCE if old.loaded.path is None else None,
        models=len(loaded.config.models),
        rules=len(loaded.config.rules),
        needs_restart=changed or None,
    )
    return True


def _config_path(loaded: LoadedConfig) -> Path | None:
    """The file the config comes from; on the built-in default, the file that would replace
    it (the platform's config path, where `pirouter init` writes)."""
    return loaded.path if loaded.path is not None else loaded.default_path


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime, info.st_size


class _Watched:
    """One file's last loaded stamp, and a change waiting to settle: a changed file is taken
    once its stamp has stayed the same for SETTLE_S of our own clock (mtimes may be coarse or
    in the future), and it parses (or UNFINISHED_S have passed); a file removed counts too."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.stamp = _stamp(path) if path is not None else None
        self.pending: tuple[tuple[float, int] | None, float] | None = None

    def changed(self) -> bool:
        if self.path is None:
            return False
        now = _stamp(self.path)
        if now == self.stamp:
            self.pending = None
            return False
        clock = time.monotonic()
        if self.pending is None or self.pending[0] != now:
            self.pending = (now, clock)
            return False
        quiet = clock - self.pending[1]
        if quiet < SETTLE_S or (quiet < UNFINISHED_S and not _whole(self.path, now)):
            return False
        self.stamp, self.pending = now, None
        return True


async def watch_config(state: State) -> None:
    """Reload when the config file changes (its mtime or size), or the learned router's file
    does (`pirouter learn` wrote a new one); a file written in steps is loaded whole, once it
    has stopped changing, never a prefix of it."""
    path = _config_path(state.loaded)
    if path is None:
        return
    config, model = _Watched(path), _Watched(state.learned_path)
    while True:
        await asyncio.sleep(WATCH_EVERY_S)
        if config.changed() | model.changed():  # both looked at, every time
            reload_config(state)


def _whole(path: Path, stamp: tuple[float, int] | None) -> bool:
    """The file parses (TOML, or the learned model's JSON), or is gone: not a prefix of one
    still being written."""
    if stamp is None:
        return True  # removed: a change to act on (a learned model deleted, for one)
    try:
        data = path.read_bytes()
    except OSError:
        return True
    try:
        if path.suffix == ".json":
            orjson.loads(data)
        else:
            tomllib.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False  # still being written, or broken: the load says which after UNFINISHED_S
    return True
