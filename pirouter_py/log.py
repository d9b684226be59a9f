"""Logging set-up: structlog, pretty on a terminal and JSON lines otherwise.

The level comes from $PIROUTER_LOG, else $RUST_LOG when it is a plain level (v0.1 read RUST_LOG),
else `[server] log_level`. The daemon logs one canonical line per request; never prompt text or
keys.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

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


def level_from(configured: str, environ: Mapping[str, str] | None = None) -> int:
    """The log level to use; an unknown word falls back to info."""
    env = os.environ if environ is None else environ
    for value in (env.get("PIROUTER_LOG"), env.get("RUST_LOG"), configured):
        if value and value.strip().lower() in LEVELS:
            return LEVELS[value.strip().lower()]
    return logging.INFO


def setup(configured: str, *, json: bool | None = None) -> None:
    """Configure structlog for the daemon; output goes to stderr."""
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=True)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_from(configured)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
