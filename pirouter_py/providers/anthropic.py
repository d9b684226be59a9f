"""Anthropic-type providers: `POST {base_url}/v1/messages` with `x-api-key` and `anthropic-version`.

Requests from Anthropic-speaking clients pass through unchanged but for `model`, with their
`anthropic-version` and `anthropic-beta` headers; others are translated by `wire.anthropic`.
Streams are read until `message_stop`; one that ends before it was cut short.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, ClassVar

from pirouter_py.config import ModelConfig
from pirouter_py.errors import UpstreamTransportError
from pirouter_py.providers.base import HTTPProvider
from pirouter_py.types import ChatRequest, ChatResponse, StreamEvent
from pirouter_py.wire import anthropic as wire

PATH = "/v1/messages"
API_VERSION = "2023-06-01"


class AnthropicProvider(HTTPProvider):
    kind = "anthropic"
    probe_headers: ClassVar[dict[str, str]] = {"anthropic-version": API_VERSION}

    def _headers(self, request: ChatRequest) -> dict[str, str]:
        """`anthropic-version` and `anthropic-beta` as the client sent them, else our version."""
        return {"anthropic-version": API_VERSION, **request.headers}

    def auth(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    async def complete(self, request: ChatRequest, model: ModelConfig) -> ChatResponse:
        body = wire.encode_request(
            request,
            model.model_id,
            stream=False,
            default_max_tokens=model.default_max_tokens,
            json_by_tool=model.json_by_tool,
        )
        data = await self.post_json(PATH, model.model_id, body, self._headers(request))
        return self.understood(
            model.model_id, wire.decode_response, data, f"{self.name} ({model.model_id})"
        )

    def stream(self, request: ChatRequest, model: ModelConfig) -> AsyncGenerator[StreamEvent, None]:
        body = wire.encode_request(
            request,
            model.model_id,
            stream=True,
            default_max_tokens=model.default_max_tokens,
            json_by_tool=model.json_by_tool,
        )
        decoder = wire.StreamDecoder(f"{self.name} ({model.model_id})")
        model_id, decode = model.model_id, decoder.decode

        def event(_: str, data: Any) -> StreamEvent:
            return self.understood(model_id, decode, data)

        def end() -> None:
            if not decoder.stopped:  # the events end with message_stop
                raise UpstreamTransportError(
                    f"{self.name} ({model_id}): the stream ended before message_stop",
                    retryable=True,
                )

        return self.sse_events(
            PATH,
            model_id,
            body,
            self._headers(request),
            event,
            end,
            until_done=False,
            last="message_stop",
        )
