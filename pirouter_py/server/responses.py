"""The Responses API's memory: answers a client asks to keep (`store: true`) and the
`previous_response_id` that continues from one.

A kept answer is the whole conversation as input items, its own output items included: the
instructions are not carried over, as OpenAI's API does. It is written to the ledger's
`responses` table (so it outlives a restart, and is pruned with the ledger's retention) and held
in memory for the most recent ones (so a follow-up does not wait for the ledger's next batch).
A kept conversation is prompt text: pirouter keeps one only when the client asks (`store`
defaults to off here) and the config keeps prompts ([ledger] store_prompts); only the client key
that kept it may continue from it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
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


def owner(headers: Mapping[str, str]) -> str:
    """Who kept a response: a hash of the client key it was asked with ("" without one)."""
    key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest() if key else ""


def _read(path: Path | None, url: str | None, response_id: str) -> tuple[str, list[Any]] | None:
    if path is None:
        return None
    db = open_read_only(path, url)
    if db is None:
        return None
    try:
        found = stored_response(db, response_id)
    finally:
        db.close()
    return None if found is None else (found[0], list(orjson.loads(found[1])))


async def resolve(state: State, chat: ChatRequest, headers: Mapping[str, str]) -> ChatRequest:
    """The request with the conversation its `previous_response_id` names put before its input
    (only for the client key that kept it)."""
    raw = chat.raw or {}
    previous = raw.get("previous_response_id")
    if previous is None:
        return chat
    if not isinstance(previous, str):
        raise RequestError("`previous_response_id` must be a string", "previous_response_id")
    found = state.kept.items.get(previous)
    if found is None:
        found = await asyncio.to_thread(_read, state.ledger_path, state.ledger_url, previous)
    if found is None or found[0] != owner(headers):
        raise RequestError(
            f"no kept response {previous!r}: pirouter keeps a response only when it was asked "
            "with `store: true` and [ledger] store_prompts is on, for the ledger's retention "
            "period, and only for the client key that asked; send the whole conversation in "
            "`input` instead",
            "previous_response_id",
        )
    items = found[1]
    given = raw.get("input")
    asked = [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])
    body = {**raw, "input": [*items, *asked]}
    body.pop("previous_response_id")
    return replace(wire.decode_request(orjson.dumps(body)), stream=chat.stream)


def keeping(ctx: Ctx) -> bool:
    """Is this answer to be kept: the client asked (`store: true`) and the config keeps prompt
    text ([ledger] store_prompts)? (Asked first, so an answer not kept is not read back.)"""
    raw = ctx.chat.raw
    if ctx.chat.protocol != "responses" or raw is None or raw.get("store") is not True:
        return False
    return ctx.snapshot.config.ledger.store_prompts


def keep(ctx: Ctx, output: list[Any] | None) -> tuple[str, str, str] | None:
    """Remember this answer when the client asked to (`store: true`) and the config keeps prompt
    text ([ledger] store_prompts): the record's `stored_response`, also held in memory."""
    if not keeping(ctx) or output is None:
        return None
    raw = ctx.chat.raw
    assert raw is not None
    if any(isinstance(i, dict) and i.get("type") == "compaction" for i in output):
        items = list(output)  # the summary stands for everything before it
    else:
        given = raw.get("input")
        asked = [{"role": "user", "content": given}] if isinstance(given, str) else given or []
        items = [*asked, *output]
    response_id = f"resp_{ctx.rid}"
    who = owner(ctx.request.headers)
    ctx.request.app[STATE].kept.add(response_id, who, items)
    return response_id, who, orjson.dumps(items).decode()
