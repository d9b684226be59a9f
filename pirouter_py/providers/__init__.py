"""Provider adapters, one module per kind, and `build()` which makes one per configured provider."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from pirouter_py.config import Config
from pirouter_py.providers.base import Provider
from pirouter_py.providers.openai import OpenAIProvider

KINDS: dict[str, type[OpenAIProvider]] = {"openai": OpenAIProvider}


def unsupported(config: Config) -> list[str]:
    """Providers whose kind this version has no adapter for."""
    return sorted(name for name, p in config.providers.items() if p.kind not in KINDS)


def build(
    config: Config, session: aiohttp.ClientSession, environ: Mapping[str, str] | None = None
) -> dict[str, Provider]:
    """One adapter per configured provider whose kind is supported, sharing the daemon's session."""
    return {
        name: KINDS[p.kind](name, p, session, environ)
        for name, p in config.providers.items()
        if p.kind in KINDS
    }
