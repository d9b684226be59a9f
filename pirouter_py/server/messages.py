"""Anthropic's `/v1/messages/count_tokens`, answered from pirouter's own estimate (the messages
themselves take the shared path in `chat.py`)."""

from __future__ import annotations

import orjson
from aiohttp import web

from pirouter_py.routing.features import estimate_tokens
from pirouter_py.server.chat import decode
from pirouter_py.server.state import JSON
from pirouter_py.wire import codecs


async def count_tokens(request: web.Request) -> web.Response:
    chat = await decode(request, codecs.ANTHROPIC, count_only=True)
    return web.Response(
        body=orjson.dumps({"input_tokens": estimate_tokens(chat)}), content_type=JSON
    )
