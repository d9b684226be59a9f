"""What a client can ask for: `/v1/models` (OpenAI) and Ollama's `/api/tags`, `/api/show`,
`/api/version`. `auto` and every configured alias."""

from __future__ import annotations

import orjson
from aiohttp import web

from pirouter_py import __version__
from pirouter_py.errors import RequestError, UnknownModel
from pirouter_py.server.state import JSON, STATE
from pirouter_py.wire import ollama as ollama_wire


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cfg = state.loaded.config
    created = int(state.started)
    data = [{"id": "auto", "object": "model", "created": created, "owned_by": "pirouter"}] + [
        {"id": alias, "object": "model", "created": created, "owned_by": cfg.models[alias].provider}
        for alias in cfg.aliases
    ]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=JSON)


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
        body = ollama_wire.show("auto", "pirouter", True, True, None)
    elif isinstance(name, str) and name in cfg.models:
        m = cfg.models[name]
        body = ollama_wire.show(
            name, m.provider, m.supports_tools, m.supports_vision, m.context_window
        )
    else:
        raise UnknownModel(
            f"model '{name}' not found; pirouter serves auto and the aliases of its config"
        )
    return web.Response(body=body, content_type=JSON)
