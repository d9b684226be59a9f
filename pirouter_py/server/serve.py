"""Serving: listen, announce, and on SIGINT or SIGTERM drain and return; SIGHUP reloads.

On shutdown new requests get 503 while those in flight finish, bounded by `[server]
shutdown_timeout_secs`; a repeated signal does not cut the drain short.

The Host check needs the port the daemon listens on, known here once the listener has bound
(`--port 0`): serving installs it (`access.host_check`), refusing every request until then.
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
from pirouter_py.ledger import journal
from pirouter_py.observe.log import get_logger
from pirouter_py.server import access, guard, probes
from pirouter_py.server import reload as config_reload
from pirouter_py.server.app import create_app
from pirouter_py.server.loop import settle_gc
from pirouter_py.server.state import DRAIN, STATE, State

log = get_logger("pirouter")
CUT_S = 1.0  # how long requests cut at the drain's end have to write their error and finish


async def serve(
    loaded: LoadedConfig,
    host: str,
    port: int,
    *,
    announce: Callable[[str], None],
    ledger_path: Path | None,
    report: Callable[[str], None] | None = None,
) -> None:
    """Listen until SIGINT or SIGTERM, then drain and return. With `report`, each provider is
    probed once after the daemon listens, and `report` gets one line each."""
    if ledger_path is not None and loaded.config.ledger.url is not None:
        journal_folder(ledger_path)
    app = create_app(loaded, ledger_path=ledger_path, host=host)
    server = loaded.config.server
    # loopback only (create_app's Host names): beyond it, client keys are the protection
    listener = access.Listener(frozenset() if app[STATE].hosts else None)
    app.middlewares.append(access.host_check(listener))
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=CUT_S,  # `drain` below has waited shutdown_timeout_secs already
        keepalive_timeout=server.idle_timeout_secs,
    )
    await runner.setup()
    # every connection through the gate: header deadline, connection cap (server/guard.py)
    cap = guard.connection_cap(server.max_connections)
    runner._server = guard.Gate(runner._server, cap, server.header_timeout_secs)  # type: ignore[assignment]
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
        if listener.allowed is not None:
            listener.allowed = access.allowed_authorities(host, server.allowed_hosts, bound[1])
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, config_reload.reload_config, app[STATE])
        settle_gc()
        # Only now say where we listen: a supervisor may signal as soon as it reads this line.
        announce(f"http://{shown}:{bound[1]}")
        probing = asyncio.create_task(probes.at_start(app[STATE], report)) if report else None
        await stop.wait()
        if probing is not None:
            probing.cancel()
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
        await drain(app[STATE], server.shutdown_timeout_secs)
    finally:
        await runner.cleanup()


def journal_folder(ledger_path: Path) -> None:
    """With the ledger in PostgreSQL, the local folder holds only the journal and the spill,
    which keep answered rows through a crash: one that cannot be made or written stops the
    start. A full disk does not (the ledger's reserve and retries are for that)."""
    try:
        journal.make_folder(ledger_path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            log.warning("journal_folder_full", path=str(ledger_path.parent), error=str(exc))
            return
        raise PirouterError(
            f"cannot write the ledger's journal in {ledger_path.parent}: "
            f"{exc.strerror or exc}; it keeps answered rows through a crash. Make that folder "
            "writable, or set [ledger] path to a file in one that is"
        ) from None


async def drain(state: State, timeout: float) -> None:
    """New requests get 503 from now; those in flight have `timeout` to finish; any still
    running are then cancelled with DRAIN, and each ends with an error in its client's protocol
    (within CUT_S). The whole stop takes at most `timeout` plus about 2 × CUT_S."""
    state.draining = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while state.working and loop.time() < deadline:
        await asyncio.sleep(0.02)
    if not state.working:
        return
    cut = list(state.working)
    log.warning("drain_cut_short", requests=len(cut), timeout_s=timeout)
    for task in cut:
        task.cancel(DRAIN)
    await asyncio.wait(cut, timeout=CUT_S)
