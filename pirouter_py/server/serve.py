"""Serving: listen, announce, and on SIGINT or SIGTERM drain and return; SIGHUP reloads.

On shutdown new requests get 503 while those in flight finish, bounded by `[server]
shutdown_timeout_secs`; a repeated signal does not cut the drain short.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from pirouter_py.config import LoadedConfig
from pirouter_py.errors import PirouterError
from pirouter_py.observe.log import get_logger
from pirouter_py.server import reload as config_reload
from pirouter_py.server.app import create_app
from pirouter_py.server.loop import settle_gc
from pirouter_py.server.state import STATE

log = get_logger("pirouter")


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
            # the exception's own text repeats the address; its errno says it once
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            if exc.errno == errno.EADDRINUSE:
                why = "the port is in use (`pirouter status` says whether by a pirouter)"
            raise PirouterError(
                f"cannot listen on {host}:{port}: {why}; change [server] bind or pass --port"
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
