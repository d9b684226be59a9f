"""One `Codec` per inbound protocol: how the server reads a request and writes answers and errors.

The server picks a codec by route and never branches on the protocol itself, so every endpoint
shares the same routing, cascade and recording. Error bodies take the OpenAI error type pirouter's
errors carry; each codec maps it and the HTTP status to its own protocol's shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pirouter_py.types import ChatRequest, ChatResponse, StreamEvent
from pirouter_py.types import Protocol as WireProtocol
from pirouter_py.wire import Envelope, anthropic, ollama, openai, responses


class StreamEncoder(Protocol):
    """Turns StreamEvents into one protocol's stream bytes."""

    def encode(self, event: StreamEvent) -> bytes: ...

    def end(self) -> bytes: ...

    def error(self, message: str, kind: str = ...) -> bytes:
        """An error event; `kind` is the OpenAI error type, mapped as in error bodies."""
        ...


@dataclass(frozen=True, slots=True)
class Codec:
    protocol: WireProtocol
    decode_request: Callable[[bytes], ChatRequest]
    encode_response: Callable[[ChatResponse, Envelope], bytes]
    stream_encoder: Callable[[Envelope], StreamEncoder]
    stream_content_type: str
    error_body: Callable[[int, str, str, str | None], bytes]  # (status, message, kind, param)
    keepalive: bytes  # what a held-back stream sends while it waits; b"": nothing safe to send
    requires_json_content_type: bool = True


def _openai_error(status: int, message: str, kind: str, param: str | None) -> bytes:
    return openai.encode_error(message, kind, param)


def _anthropic_error(status: int, message: str, kind: str, param: str | None) -> bytes:
    return anthropic.encode_error(status, message)


def _ollama_error(status: int, message: str, kind: str, param: str | None) -> bytes:
    return ollama.encode_error(status, message)


OPENAI = Codec(
    "openai",
    openai.decode_request,
    openai.encode_response,
    openai.StreamEncoder,
    "text/event-stream",
    _openai_error,
    b": keep-alive\n\n",
)
ANTHROPIC = Codec(
    "anthropic",
    anthropic.decode_request,
    anthropic.encode_response,
    anthropic.StreamEncoder,
    "text/event-stream",
    _anthropic_error,
    b'event: ping\ndata: {"type": "ping"}\n\n',
)
RESPONSES = Codec(
    "responses",
    responses.decode_request,
    responses.encode_response,
    responses.StreamEncoder,
    "text/event-stream",
    _openai_error,
    b": keep-alive\n\n",
)
RESPONSES_COMPACT = Codec(
    "responses",
    responses.decode_compact,
    responses.encode_compact,
    responses.StreamEncoder,
    "text/event-stream",
    _openai_error,
    b": keep-alive\n\n",
)
# Ollama's own server takes bodies without a JSON content type (curl -d sends a form type).
OLLAMA = Codec(
    "ollama",
    ollama.decode_request,
    ollama.encode_response,
    ollama.StreamEncoder,
    "application/x-ndjson",
    _ollama_error,
    b"",  # its clients parse every line as JSON
    requires_json_content_type=False,
)

# The chat codecs by the protocol a request was spoken in (`ChatRequest.protocol`, the ledger's
# `requests.protocol`): how `route --batch` and `replay` read a recorded body back.
BY_PROTOCOL: dict[str, Codec] = {
    "openai": OPENAI,
    "anthropic": ANTHROPIC,
    "ollama": OLLAMA,
    "responses": RESPONSES,
}


def for_path(path: str) -> Codec:
    """The protocol a client speaks, from the path it called (for errors on any route)."""
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.startswith("/api/"):
        return OLLAMA
    if path.startswith("/v1/responses"):
        return RESPONSES
    return OPENAI
