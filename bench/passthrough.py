"""The floor: a minimal aiohttp pass-through proxy, what any Python proxy on this machine costs.

Run as its own process: `python bench/passthrough.py PORT UPSTREAM_URL`. It forwards the body to
the upstream's same path on a pooled session and relays the answer (or the stream) back, and
nothing else: on every inbound path pirouter serves (chat completions, Anthropic Messages,
Responses, Ollama's /api/chat, the text completions /v1/completions and /api/generate), so each
path's row has a floor that relays that path's own bytes.
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

PATHS = (
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/responses",
    "/api/chat",
    "/v1/completions",
    "/api/generate",
)


async def proxy(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    session: aiohttp.ClientSession = request.app["session"]
    headers = {"content-type": "application/json"}
    url = request.app["upstream"] + request.path
    async with session.post(url, data=body, headers=headers) as upstream:
        response = web.StreamResponse(
            status=upstream.status, headers={"content-type": upstream.content_type}
        )
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        return response


async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app["session"].close()


def serve(port: int, upstream: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = web.Application()
    app["upstream"] = upstream
    app.cleanup_ctx.append(session_ctx)
    for path in PATHS:
        app.router.add_post(path, proxy)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
