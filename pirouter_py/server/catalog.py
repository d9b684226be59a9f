"""What a client can ask for: `/v1/models` (OpenAI's list, with Anthropic's fields, each alias's
context window and capabilities) and Ollama's `/api/tags`, `/api/show`, `/api/ps`,
`/api/version`. `auto` and every configured alias."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from pirouter_py import __version__
from pirouter_py.config import ModelConfig
from pirouter_py.errors import RequestError, UnknownModel
from pirouter_py.server.state import JSON, STATE
from pirouter_py.wire import ollama as ollama_wire


def capabilities(model: ModelConfig) -> list[str]:
    """What an alias can serve, in Ollama's words (`/api/show`), also in `/v1/models`."""
    if model.kind == "embedding":
        return ["embedding"]
    return (
        ["completion"]
        + (["tools"] if model.supports_tools else [])
        + (["vision"] if model.supports_vision else [])
        + (["insert"] if model.supports_fim else [])
    )


def _entry(alias: str, owner: str, created: int, context: int | None, can: list[str]) -> Any:
    """One model in OpenAI's list shape, with Anthropic's `type`/`display_name`/`created_at`
    (Claude Code reads that API's list) and what agents need: the context window and
    capabilities."""
    return {
        "id": alias,
        "object": "model",
        "created": created,
        "owned_by": owner,
        "type": "model",
        "display_name": alias,
        "created_at": datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z"),
        "context_window": context,
        "max_input_tokens": context,
        "capabilities": can,
    }


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cfg = state.loaded.config
    created = int(state.started)
    chat = [cfg.models[a] for a in cfg.aliases if cfg.models[a].kind == "chat"]
    # `auto` may reach any enabled chat model: its window is the smallest of theirs
    windows = [m.context_window for m in chat if m.enabled and m.context_window]
    auto = _entry(
        "auto", "pirouter", created, min(windows) if windows else None, ["completion", "tools"]
    )
    data = [auto] + [
        _entry(a, m.provider, created, m.context_window, capabilities(m))
        for a in cfg.aliases
        for m in (cfg.models[a],)
    ]
    body = {
        "object": "list",
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"],
        "last_id": data[-1]["id"],
    }
    return web.Response(body=orjson.dumps(body), content_type=JSON)


async def ollama_ps(request: web.Request) -> web.Response:
    """`GET /api/ps`: what Ollama clients ask to see what is loaded; for pirouter, every enabled
    alias is ready (Open WebUI probes it)."""
    cfg = request.app[STATE].loaded.config
    expires = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat().replace("+00:00", "Z")
    models = [
        {
            "name": alias,
            "model": alias,
            "size": 0,
            "digest": "",
            "expires_at": expires,
            "size_vram": 0,
            "context_length": m.context_window or 0,
        }
        for alias in cfg.aliases
        for m in (cfg.models[alias],)
        if m.enabled
    ]
    return web.Response(body=orjson.dumps({"models": models}), content_type=JSON)


async def ollama_tags(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cfg = state.loaded.config
    aliases = [("auto", "pirouter")] + [(a, cfg.models[a].provider) for a in cfg.aliases]
    return web.Response(body=ollama_wire.tags(aliases, state.started), content_type=JSON)


async def ollama_version(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps({"version": __version__}), content_type=JSON)


async def ollama_show(request: web.Request) -> web.Response:
    cfg = request.app[STATE].loaded.config
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise RequestError("request body is not valid JSON") from None
    name = data.get("model") or data.get("name") if isinstance(data, dict) else None
    if name == "auto":
        body = ollama_wire.show("auto", "pirouter", ["completion", "tools", "vision"], None)
    elif isinstance(name, str) and name in cfg.models:
        m = cfg.models[name]
        body = ollama_wire.show(name, m.provider, capabilities(m), m.context_window)
    else:
        raise UnknownModel(
            f"model '{name}' not found; pirouter serves auto and the aliases of its config"
        )
    return web.Response(body=body, content_type=JSON)
