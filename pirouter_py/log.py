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

import structlog

LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}


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
