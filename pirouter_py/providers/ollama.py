"""Ollama providers: `POST {base_url}/api/chat` (and `/api/generate`, `/api/embed`), no key;
streams are newline-delimited JSON.

Ollama answers a stream request unless told `"stream": false`, so both modes say which they want.
A stream is read until its `"done": true` line; one that ends before it was cut short.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from pirouter_py.config import ModelConfig
from pirouter_py.errors import UpstreamTransportError
from pirouter_py.providers.base import HTTPProvider
from pirouter_py.types import (
    ChatRequest,
    ChatResponse,
    Embeddings,
    EmbedRequest,
    StreamEvent,
    TextAnswer,
    TextRequest,
)
from pirouter_py.wire import ollama as wire
from pirouter_py.wire import textgen

PATH = "/api/chat"
GENERATE = "/api/generate"
EMBED = "/api/embed"


class OllamaProvider(HTTPProvider):
    kind = "ollama"
    probe_path = "/api/tags"

    async def complete(self, request: ChatRequest, model: ModelConfig) -> ChatResponse:
        body = wire.encode_request(request, model.model_id, stream=False)
        data = await self.post_json(PATH, model.model_id, body, {})
        return self.understood(
            model.model_id, wire.decode_response, data, f"{self.name} ({model.model_id})"
        )

    def stream(self, request: ChatRequest, model: ModelConfig) -> AsyncGenerator[StreamEvent, None]:
        body = wire.encode_request(request, model.model_id, stream=True)
        decoder = wire.StreamDecoder(f"{self.name} ({model.model_id})")
        model_id, decode = model.model_id, decoder.decode

        def line(data: Any) -> StreamEvent:
            return self.understood(model_id, decode, data)

        def end() -> None:
            if not decoder.done:  # the lines end with the done line
                raise UpstreamTransportError(
                    f"{self.name} ({model_id}): the stream ended before its done line",
                    retryable=True,
                )

        return self.ndjson_lines(PATH, model_id, body, {}, line, end)

    async def text(self, request: TextRequest, model: ModelConfig) -> TextAnswer:
        body = textgen.generate_body(request, model.model_id, stream=False)
        data = await self.post_json(GENERATE, model.model_id, body, {})
        return self.understood(
            model.model_id, textgen.generate_answer, data, f"{self.name} ({model.model_id})"
        )

    async def text_stream(
        self, request: TextRequest, model: ModelConfig
    ) -> AsyncGenerator[TextAnswer, None]:
        body = textgen.generate_body(request, model.model_id, stream=True)
        where = f"{self.name} ({model.model_id})"
        async for data in self.ndjson(GENERATE, model.model_id, body, {}):
            answer = self.understood(model.model_id, textgen.generate_answer, data, where)
            yield answer
            if answer.finish_reason is not None:
                return
        raise UpstreamTransportError(f"{where}: the stream ended before done", retryable=True)

    async def embed(self, request: EmbedRequest, model: ModelConfig) -> Embeddings:
        body = textgen.embed_body(request, model.model_id)
        data = await self.post_json(EMBED, model.model_id, body, {})
        return self.understood(
            model.model_id, textgen.embed_result, data, f"{self.name} ({model.model_id})"
        )
