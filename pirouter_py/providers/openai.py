"""OpenAI-type providers: OpenAI itself and every compatible server (OpenRouter, vLLM, ...).

`POST {base_url}/v1/chat/completions` (and `/v1/completions`, `/v1/embeddings`) with
`Authorization: Bearer <key>`. Every field of an
OpenAI-format request passes through unchanged; streams ask for the usage chunk so the ledger
sees tokens even when the client did not ask for them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from pirouter_py.config import ModelConfig
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
from pirouter_py.wire import openai as wire
from pirouter_py.wire import textgen

PATH = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"


class OpenAIProvider(HTTPProvider):
    kind = "openai"

    def _headers(self) -> dict[str, str]:
        return {}

    def auth(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    async def complete(self, request: ChatRequest, model: ModelConfig) -> ChatResponse:
        body = wire.encode_request(request, model.model_id, stream=False)
        data = await self.post_json(PATH, model.model_id, body, self._headers())
        return self.understood(
            model.model_id, wire.decode_response, data, f"{self.name} ({model.model_id})"
        )

    def stream(self, request: ChatRequest, model: ModelConfig) -> AsyncGenerator[StreamEvent, None]:
        body = wire.encode_request(request, model.model_id, stream=True)
        decoder = wire.StreamDecoder(f"{self.name} ({model.model_id})")
        model_id, decode = model.model_id, decoder.decode

        def event(_: str, data: Any) -> StreamEvent:
            return self.understood(model_id, decode, data)

        # `finish`: a stream that ended without a finish reason has its calls checked then
        return self.sse_events(
            PATH, model_id, body, self._headers(), event, decoder.finish, until_done=True
        )

    async def text(self, request: TextRequest, model: ModelConfig) -> TextAnswer:
        body = textgen.completion_body(request, model.model_id, stream=False)
        data = await self.post_json(COMPLETIONS, model.model_id, body, self._headers())
        return self.understood(
            model.model_id, textgen.completion_answer, data, f"{self.name} ({model.model_id})"
        )

    async def text_stream(
        self, request: TextRequest, model: ModelConfig
    ) -> AsyncGenerator[TextAnswer, None]:
        body = textgen.completion_body(request, model.model_id, stream=True)
        where = f"{self.name} ({model.model_id})"
        async for _, data in self.sse(
            COMPLETIONS, model.model_id, body, self._headers(), until_done=True
        ):
            yield self.understood(model.model_id, textgen.completion_answer, data, where)

    async def embed(self, request: EmbedRequest, model: ModelConfig) -> Embeddings:
        body = textgen.embeddings_body(request, model.model_id)
        data = await self.post_json(EMBEDDINGS, model.model_id, body, self._headers())
        return self.understood(
            model.model_id, textgen.embeddings_result, data, f"{self.name} ({model.model_id})"
        )
