"""Provider adapters, one module per kind, and `build()` which makes one per configured provider."""

from __future__ import annotations

from collections.abc import Mapping

from pirouter_py.config import Config
from pirouter_py.providers.anthropic import AnthropicProvider
from pirouter_py.providers.base import HTTPProvider, Provider
from pirouter_py.providers.ollama import OllamaProvider
from pirouter_py.providers.openai import OpenAIProvider
from pirouter_py.providers.transport import Upstreams

KINDS: dict[str, type[HTTPProvider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "ollama": OllamaProvider,
}


def build(
    config: Config, upstreams: Upstreams, environ: Mapping[str, str] | None = None
) -> dict[str, Provider]:
    """One adapter per configured provider, sharing the daemon's connection pool."""
    return {
        name: KINDS[p.kind](name, p, upstreams, environ)  # type: ignore[misc]
        for name, p in config.providers.items()
    }
