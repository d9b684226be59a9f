"""`POST /v1/feedback`: a client says how good an answer was, by its request id (every response
carries one in `x-pirouter-request-id`). Written to the ledger's `feedback` table at once.

Only the client key that made a request may score it (the operator any): feedback trains the
learned router, so another client's score would poison it. An id that is not one of the
caller's requests is a 404, whether it exists or not, and nothing is recorded."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from pirouter_py.errors import NoSuchRequest, RequestError
from pirouter_py.ledger import feedback
from pirouter_py.server import scope
from pirouter_py.server.chat import read_body
from pirouter_py.server.state import JSON, STATE

MAX_COMMENT = 4_000


async def post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_body(request, require_json=True)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError("request body must be a JSON object")
    rid = data.get("request_id")
    if not isinstance(rid, str) or not rid:
        raise RequestError(
            "`request_id` is required: the x-pirouter-request-id of the answer", "request_id"
        )
    try:
        score = feedback.parse_score(data.get("score"))
    except ValueError as exc:
        raise RequestError(str(exc), "score") from None
    comment = data.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise RequestError("`comment` must be a string", "comment")
    if state.ledger_path is None:
        raise RequestError("the daemon keeps no ledger (--no-ledger): feedback cannot be kept")
    comment = comment[:MAX_COMMENT] if comment else None
    if rid in state.owners:  # finished lately: its row may still be on its way to the ledger
        known, client = True, state.owners[rid]
    else:
        known, client = await asyncio.to_thread(
            feedback.owner, state.ledger_path, rid, state.ledger_url
        )
    if not known or not scope.sees(scope.of(request), client):
        raise NoSuchRequest(f"no request {rid!r} of yours to give feedback on")
    await asyncio.to_thread(
        feedback.record, state.ledger_path, rid, score, comment, "http", state.ledger_url
    )
    answer = {"request_id": rid, "score": score, "recorded": True}
    return web.Response(body=orjson.dumps(answer), content_type=JSON)
