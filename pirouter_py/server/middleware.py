"""What every request passes through: its id, the drain, access control, and errors.

Every failure becomes an error body in the client's protocol with a request id; a traceback
never reaches a client (a bug is logged with it and answered 500).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from pirouter_py.errors import CrossSite, ForbiddenHost, PirouterError, Unauthorized
from pirouter_py.observe.log import get_logger
from pirouter_py.server import access, dashboard
from pirouter_py.server.state import DRAIN, JSON, STATE, drained
from pirouter_py.wire import codecs
from pirouter_py.wire.codecs import Codec

log = get_logger("pirouter")

ROUTES_HELP = (
    "POST /v1/chat/completions, POST /v1/responses, POST /v1/messages, POST /api/chat, "
    "GET /v1/models, GET /api/tags, GET /healthz"
)
INTERNAL = "internal error in pirouter (request {rid}); it was logged"
# The request id the errors middleware gave a request: a typed key where this aiohttp has them
# (a string key warns there)
RID: Any = web.RequestKey("rid", str) if hasattr(web, "RequestKey") else "rid"
# set when the request's response is prepared (its status and headers sent)
BEGUN: Any = web.RequestKey("begun", bool) if hasattr(web, "RequestKey") else "begun"
# the name of the client key the request came with (only when keys are configured)
CLIENT: Any = web.RequestKey("client", str) if hasattr(web, "RequestKey") else "client"

_STATUS_TEXT = {
    404: "no route for {method} {path}; pirouter serves " + ROUTES_HELP,
    405: "method {method} is not allowed on {path}",
    413: "request body is larger than the {limit}-byte limit ([server] max_body_bytes)",
}
_STATUS_KIND = {404: "not_found_error", 503: "service_unavailable"}

# Request ids: 24 lower-case hex digits (safe in headers, logs, the ledger and the answer ids made
# from them): the second the id was made (8 digits), then 64 random bits from the system's CSPRNG.
# An id is not to be guessed from another one (feedback and kept responses are found by them), so
# no counter and no `random`. The second comes first so that new rows go to the end of the
# ledger's indexes on the id (requests, attempts, prompts): with ids random throughout, each row
# went to a random page, and in a ledger of 300,000 requests writing a request and its attempt
# cost 45 µs of CPU (70 of the writer's time); in time order, 9.5 (10).
# The random part is drawn ID_BATCH at a time: one `os.urandom` per request was most of the id's
# cost (uuid4, which reads it each time, was 3% of the daemon's CPU under load).
ID_RANDOM_BYTES = 8
ID_BATCH = 256
_ids: list[str] = []
# a forked child must not hand out the ids its parent will
os.register_at_fork(after_in_child=_ids.clear)


def new_request_id() -> str:
    """A fresh request id: the unix second in 8 hex digits, then 16 random ones (64 bits)."""
    if not _ids:
        drawn = os.urandom(ID_RANDOM_BYTES * ID_BATCH).hex()
        step = 2 * ID_RANDOM_BYTES
        _ids.extend(drawn[i : i + step] for i in range(0, len(drawn), step))
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{_ids.pop()}"


def error_response(
    codec: Codec,
    status: int,
    message: str,
    kind: str,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=codec.error_body(status, message, kind, param),
        content_type=JSON,
        headers=headers,
    )


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes an error body in the client's protocol, with a request id."""
    state = request.app[STATE]
    codec = codecs.for_path(request.path)
    rid = new_request_id()
    request[RID] = rid
    ids = {"x-pirouter-request-id": rid}
    if state.draining and request.path not in ("/healthz", "/health"):
        return error_response(
            codec,
            503,
            "pirouter is shutting down; retry shortly",
            "service_unavailable",
            headers=ids | {"retry-after": "1"},
        )
    server = state.loaded.config.server
    try:
        if state.hosts and request.host and access.host_name(request.host) not in state.hosts:
            raise ForbiddenHost(
                f"pirouter does not answer for host {request.host!r}; add it to "
                "[server] allowed_hosts if it is yours"
            )
        origin = request.headers.get("Origin")
        if origin is not None or request.headers.get("Sec-Fetch-Site") == "cross-site":
            cross_site(request, origin, server.cors_origins)
        if request.method == "OPTIONS" and access.cors_origin(server.cors_origins, origin):
            # browsers send no keys with a preflight
            return web.Response(
                status=204,
                headers=access.preflight_headers(
                    request.headers.get("Access-Control-Request-Headers", "")
                ),
            )
        # the page holds no data: it asks for a key
        if state.keys and request.path != "/healthz" and not dashboard.is_shell(request.path):
            client = access.key_name(state.keys, request.headers)
            if client is None:
                raise Unauthorized(
                    "a client key is required: send `Authorization: Bearer <key>` "
                    "or `x-api-key: <key>` ([server] api_keys_env / api_keys_file)"
                )
            request[CLIENT] = client
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        template = _STATUS_TEXT.get(exc.status)
        message = (
            template.format(method=request.method, path=request.path, limit=server.max_body_bytes)
            if template
            else exc.reason
        )
        return error_response(
            codec,
            exc.status,
            message,
            _STATUS_KIND.get(exc.status, "invalid_request_error"),
            headers=ids,
        )
    except web.RequestPayloadError as exc:  # the body could not be read as it was labelled
        return error_response(
            codec, 400, _unreadable(request, exc), "invalid_request_error", headers=ids
        )
    except PirouterError as exc:
        return error_response(
            codec,
            exc.http_status,
            exc.message,
            exc.openai_type,
            param=getattr(exc, "param", None),
            headers=ids,
        )
    except (asyncio.CancelledError, ConnectionResetError) as exc:
        if drained(exc) and not request.get(BEGUN):  # before its response began: a 503
            return error_response(
                codec, 503, DRAIN, "service_unavailable", headers=ids | {"retry-after": "1"}
            )
        raise
    except Exception:
        log.exception("internal_error", request_id=rid, path=request.path)
        return error_response(codec, 500, INTERNAL.format(rid=rid), "server_error", headers=ids)


def _unreadable(request: web.Request, exc: web.RequestPayloadError) -> str:
    """Why a request body could not be read: compressed data that is not what its
    `Content-Encoding` says (aiohttp decompresses bodies as it reads them), or a body cut short."""
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if isinstance(exc.__cause__, ContentEncodingError) and coding:
        return (
            f"request body is not valid {coding} data (Content-Encoding: {coding}); send it "
            "compressed as labelled, or without the header"
        )
    return f"request body could not be read: {getattr(exc.__cause__, 'message', None) or exc}"


# What Ollama lets in by default besides localhost: origins of desktop apps and editor views,
# which no web page can take
APP_ORIGINS = ("app://", "file://", "tauri://", "vscode-webview://", "vscode-file://")


def cross_site(request: web.Request, origin: str | None, allowed: list[str]) -> None:
    """Refuse a request a web page of another origin made, whatever its content type (a
    `text/plain` or form POST needs no preflight, so CORS alone does not stop it): allowed are
    the daemon's own origin, `[server] cors_origins`, and a person following a link to the
    dashboard's page (a navigation, which holds no data)."""
    if origin is not None:
        if origin in (f"http://{request.host}", f"https://{request.host}"):
            return
        if origin.startswith(APP_ORIGINS):  # desktop apps and editors, not web pages
            return
        if access.cors_origin(allowed, origin) is not None:
            return
        who = f"a page at {origin}"
    else:
        navigation = request.headers.get("Sec-Fetch-Mode") == "navigate"
        if navigation and request.method == "GET" and dashboard.is_shell(request.path):
            return
        who = "a page of another site"
    raise CrossSite(
        f"cross-site request refused: {who} may not call pirouter (it could spend your "
        "money); add its origin to [server] cors_origins if it is yours"
    )


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """CORS headers on every response to an allowed origin (streams included); and the mark
    that the request's response began (the drain must not start another)."""
    request[BEGUN] = True
    allowed = request.app[STATE].loaded.config.server.cors_origins
    origin = access.cors_origin(allowed, request.headers.get("Origin"))
    if origin is not None:
        response.headers.update(access.cors_headers(origin))
