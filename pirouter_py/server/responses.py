"""The Responses API's memory: answers a client asks to keep (`store: true`) and the
`previous_response_id` that continues from one.

A kept answer is the whole conversation as input items, its own output items included: the
instructions are not carried over, as OpenAI's API does. It is written to the ledger's
`responses` table (so it outlives a restart, and is pruned with the ledger's retention) and held
in memory for the most recent ones (so a follow-up does not wait for the ledger's next batch).
`store` defaults to off here: a kept conversation is prompt text, which pirouter keeps only
when asked.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from pirouter_py.errors import RequestError
from pirouter_py.ledger.read import open_read_only, stored_response
from pirouter_py.server.request import Ctx
from pirouter_py.server.state import STATE, State
from pirouter_py.types import ChatRequest
from pirouter_py.wire import responses as wire


def _read(path: Path | None, response_id: str) -> list[Any] | None:
    if path is None:
        return None
    db = open_read_only(path)
    if db is None:
        return None
    try:
        found = stored_response(db, response_id)
    finally:
        db.close()
    return None if found is None else list(orjson.loads(found))


async def resolve(state: State, chat: ChatRequest) -> ChatRequest:
    """The request with the conversation its `previous_response_id` names put before its input."""
    raw = chat.raw or {}
    previous = raw.get("previous_response_id")
    if previous is None:
        return chat
    if not isinstance(previous, str):
        raise RequestError("`previous_response_id` must be a string", "previous_response_id")
    items = state.kept.items.get(previous)
    if items is None:
        items = await asyncio.to_thread(_read, state.ledger_path, previous)
    if items is None:
        raise RequestError(
            f"no kept response {previous!r}: pirouter keeps a response only when it was asked "
            "with `store: true`, for the ledger's retention period; send the whole "
            "conversation in `input` instead",
            "previous_response_id",
        )
    given = raw.get("input")
    asked = [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])
    body = {**raw, "input": [*items, *asked]}
    body.pop("previous_response_id")
    return replace(wire.decode_request(orjson.dumps(body)), stream=chat.stream)


def keep(ctx: Ctx, output: list[Any] | None) -> tuple[str, str] | None:
    """Remember this answer when the client asked to (`store: true`): the record's
    `stored_response`, also held in memory."""
    raw = ctx.chat.raw
    if ctx.chat.protocol != "responses" or raw is None or raw.get("store") is not True:
        return None
    if output is None:
        return None
    given = raw.get("input")
    asked = [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])
    items = [*asked, *output]
    response_id = f"resp_{ctx.rid}"
    ctx.request.app[STATE].kept.add(response_id, items)
    return response_id, orjson.dumps(items).decode()
