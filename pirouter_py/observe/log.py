"""Logging set-up: structlog, pretty on a terminal and JSON lines otherwise.

The level comes from $PIROUTER_LOG, else $RUST_LOG when it is a plain level (v0.1 read RUST_LOG),
else `[server] log_level`. The daemon logs one canonical line per request (`RequestLines`), never
prompt text or keys; past `[server] log_requests_per_sec` routine lines in a second, the rest of
that second's routine requests are counted in one line instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

# structlog's dev module imports rich, when it is installed, for pretty tracebacks: ~60 ms of
# start-up and ~5 MiB the daemon has no use for (its log lines show people no tracebacks). rich
# is hidden while structlog loads; a command that already imported rich (a table) loses nothing,
# and rich imports normally afterwards. Every module takes its logger from here (get_logger).
_HIDE_RICH = "rich" not in sys.modules
if _HIDE_RICH:
    sys.modules["rich"] = None  # type: ignore[assignment]
try:
    import structlog
finally:
    if _HIDE_RICH:
        del sys.modules["rich"]

if TYPE_CHECKING:
    from pirouter_py.record import RequestRecord

LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def bound_logger(name: str) -> Any:
    """A logger made now, with the configuration `setup` set, for a line written on every
    request: each call on `get_logger`'s lazy proxy builds a new bound logger (~1-2 µs)."""
    return structlog.get_logger(name).bind()


def level_from(configured: str, environ: Mapping[str, str] | None = None) -> int:
    """The log level to use; an unknown word falls back to info."""
    env = os.environ if environ is None else environ
    for value in (env.get("PIROUTER_LOG"), env.get("RUST_LOG"), configured):
        if value and value.strip().lower() in LEVELS:
            return LEVELS[value.strip().lower()]
    return logging.INFO


def _utc_now(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The line's time as a datetime, which orjson writes in ISO 8601 (`OPT_UTC_Z`: the same
    text as structlog's `TimeStamper(fmt="iso", utc=True)`, for ~0.4 µs where that took ~2.8)."""
    event["timestamp"] = datetime.now(UTC)
    return event


def setup(configured: str, *, json: bool | None = None) -> None:
    """Configure structlog for the daemon; output goes to stderr.

    JSON lines are made by orjson and written as bytes, one write each (structlog's documented
    fast path): the daemon logs a line per request at info, and with the standard library's
    encoder and a text stream that line cost ~57 µs of CPU per request, ~37 µs this way (daemon
    CPU per request at concurrency 32, same-run A/B; 17 against 10 µs in a loop)."""
    as_json = not sys.stderr.isatty() if json is None else json
    binary = getattr(sys.stderr, "buffer", None)  # a stream replaced by a StringIO has none
    renderer: structlog.typing.Processor
    factory: Any
    stamp: structlog.typing.Processor = structlog.processors.TimeStamper(fmt="iso", utc=True)
    if as_json and binary is not None:
        # Values orjson cannot encode are written by repr() (structlog's fallback, as with the
        # standard encoder); keys that are not strings are allowed as there.
        renderer = structlog.processors.JSONRenderer(
            serializer=orjson.dumps, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
        )
        factory = structlog.BytesLoggerFactory(file=binary)
        stamp = _utc_now
    else:
        renderer = (
            structlog.processors.JSONRenderer()
            if as_json
            else structlog.dev.ConsoleRenderer(colors=True)
        )
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    processors = [structlog.processors.add_log_level, stamp, renderer]
    if as_json:  # an exception's traceback as a string field; ConsoleRenderer prints its own
        processors.insert(0, structlog.processors.format_exc_info)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_from(configured)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


class RequestLines:
    """The canonical line of each finished request, at info.

    A routine request (answered by its first model) gets its line only while fewer than
    `per_sec` routine lines were written in the current one-second window; the rest of the
    window's routine requests are counted, and one `request_lines_skipped` line gives the count
    when the window ends. Anything else (a failure, an escalation, a cancel) always gets its
    line. Each line costs ~25-30 µs of CPU in the daemon, a tenth of what a request costs here
    under load, and journald drops a service's lines past 10,000 in 30 s (its default
    RateLimitBurst), warnings and errors with them; the ledger holds every request regardless.
    `per_sec` 0 writes every line."""

    def __init__(self, logger: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = logger
        self.clock = clock
        self.until = 0.0  # when the current window ends
        self.written = 0  # routine lines written in it
        self.skipped = 0  # routine lines not written in it (reported when it ends)

    def finished(self, record: RequestRecord, per_sec: int) -> None:
        routine = record.status == "ok" and len(record.attempts) == 1  # ok: record.STATUS_OK
        if per_sec and routine and not self._room(per_sec):
            return
        self.log.info(
            "request",
            request_id=record.request_id,
            protocol=record.protocol,
            status=record.status,
            http_status=record.http_status,
            rule=record.rule,
            model=record.final,
            stream=record.streamed,
            chain=[f"{a.alias}:{a.outcome}" for a in record.attempts],
            tokens_in=record.input_tokens,
            tokens_out=record.output_tokens,
            latency_ms=round(record.latency_ms, 1),
            overhead_ms=round(record.overhead_ms, 2),
        )

    def _room(self, per_sec: int) -> bool:
        """Whether a routine line may be written now; counts it either way."""
        now = self.clock()
        if now >= self.until:
            self.report()  # a window ended without its timer having run yet
            self.until, self.written = now + 1.0, 0
        if self.written < per_sec:
            self.written += 1
            return True
        if not self.skipped:  # the first skipped in this window: report when it ends
            asyncio.get_running_loop().call_later(self.until - now, self.report, self.until)
        self.skipped += 1
        return False

    def report(self, window: float | None = None) -> None:
        """The line counting the routine requests skipped, if any: those of the window ending
        at `window` (a timer; nothing if a later window began meanwhile, which reported it),
        or of the current one (a window's end seen by a request, or shutting down)."""
        if self.skipped and (window is None or window == self.until):
            skipped, self.skipped = self.skipped, 0
            self.log.info("request_lines_skipped", skipped=skipped, window_s=1.0)
