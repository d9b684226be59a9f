"""The Provider interface and what every HTTP adapter shares: keys, timeouts, errors, SSE reading.

A provider turns a neutral `ChatRequest` into one upstream call: `complete()` for a whole answer,
`stream()` for StreamEvents as they arrive. Failures are `UpstreamError`s whose `retryable` flag
follows reference §4.2 (408, 413, 429, 5xx, context-length 400/422, timeouts, refused
connections), plus, deliberately, resets and malformed bodies, which a next model may survive.
Messages name the provider, model and status, never a key: keys found in upstream text are masked.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, nullcontext
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any, Protocol

import aiohttp
import orjson

from pirouter_py import __version__
from pirouter_py.config import ModelConfig, ProviderConfig
from pirouter_py.errors import UpstreamError, UpstreamHTTPError, UpstreamTransportError
from pirouter_py.types import ChatRequest, ChatResponse, StreamEvent

USER_AGENT = f"pirouter/{__version__}"
CONTEXT_WORDS = ("context", "too many tokens", "maximum token")  # a 400/422 about length retries
RETRYABLE_STATUS = frozenset((408, 413, 429))
MAX_ERROR_BODY = 600  # characters of an upstream error body quoted in messages
_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6})[A-Za-z0-9_\-]{6,}")


class Provider(Protocol):
    """One configured upstream."""

    name: str
    kind: str

    async def complete(self, request: ChatRequest, model: ModelConfig) -> ChatResponse: ...

    def stream(self, request: ChatRequest, model: ModelConfig) -> AsyncIterator[StreamEvent]: ...


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class HTTPProvider:
    """Shared plumbing: the daemon's pooled session, per-provider timeouts, key lookup."""

    kind = ""

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        session: aiohttp.ClientSession,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.session = session
        self.environ = os.environ if environ is None else environ
        total = float(config.request_timeout_secs)
        self.timeout = aiohttp.ClientTimeout(total=total, connect=config.connect_timeout_secs)
        # A stream may run past the total as long as it keeps moving: the total bounds each gap.
        self.stream_timeout = aiohttp.ClientTimeout(
            connect=config.connect_timeout_secs, sock_read=total
        )
        self.first_byte = config.first_byte_timeout_secs

    def api_key(self) -> str:
        """The key, read at each request (v0.1): a changed variable needs no restart."""
        env = self.config.api_key_env
        if env:
            key = self.environ.get(env)
            if not key:
                raise UpstreamError(
                    f"provider `{self.name}`: environment variable {env} is not "
                    "set; export it, or fix api_key_env",
                    retryable=False,
                )
            return key
        if self.config.api_key:
            return self.config.api_key
        raise UpstreamError(
            f"provider `{self.name}` has no key; set api_key_env (or api_key) in "
            f"[providers.{self.name}]",
            retryable=False,
        )

    def redact(self, text: str) -> str:
        for key in (self.config.api_key, self.environ.get(self.config.api_key_env or "")):
            if key:
                text = text.replace(key, "***")
        return _KEYLIKE.sub(r"\1***", text)

    def _http_error(
        self, model_id: str, status: int, body: str, headers: Mapping[str, str]
    ) -> UpstreamHTTPError:
        lowered = body.lower()
        retryable = (
            status in RETRYABLE_STATUS
            or status >= 500
            or (status in (400, 422) and any(w in lowered for w in CONTEXT_WORDS))
        )
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "<unknown status code>"
        text = self.redact(body.strip())[:MAX_ERROR_BODY]
        return UpstreamHTTPError(
            f"{self.name} ({model_id}): {status} {phrase}: {text}",
            status=status,
            retryable=retryable,
            retry_after=retry_after(headers.get("Retry-After")),
        )

    def _transport_error(self, model_id: str, exc: BaseException) -> UpstreamTransportError:
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            what = "timed out"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            what = f"connection failed ({exc.os_error.strerror or exc.os_error})"
        elif isinstance(exc, aiohttp.ServerDisconnectedError):
            what = "closed the connection"
        elif isinstance(exc, aiohttp.ClientPayloadError):
            what = "sent a truncated body"
        else:
            what = f"request failed ({type(exc).__name__})"
        return UpstreamTransportError(f"{self.name} ({model_id}): {what}", retryable=True)

    @asynccontextmanager
    async def _post(
        self,
        path: str,
        model_id: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        stream: bool,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST JSON; yields a 2xx response, raises UpstreamError for anything else."""
        url = self.config.url + path
        all_headers = {"content-type": "application/json", "user-agent": USER_AGENT, **headers}
        try:
            # Without a first-byte limit the client's total (or, for streams, its per-read)
            # timeout already bounds the wait for headers: no extra timer per request.
            async with asyncio.timeout(self.first_byte) if self.first_byte else nullcontext():
                response = await self.session.post(
                    url,
                    data=orjson.dumps(body),
                    headers=all_headers,
                    timeout=self.stream_timeout if stream else self.timeout,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(model_id, exc) from None
        try:
            if response.status >= 300:
                try:
                    text = await response.text(errors="replace")
                except (aiohttp.ClientError, TimeoutError):
                    text = ""
                raise self._http_error(model_id, response.status, text, response.headers)
            yield response
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(model_id, exc) from None
        finally:
            response.release()

    async def post_json(
        self, path: str, model_id: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> Any:
        """POST and decode the JSON answer."""
        async with self._post(path, model_id, body, headers, stream=False) as response:
            raw = await response.read()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamTransportError(
                f"{self.name} ({model_id}): answered with malformed JSON", retryable=True
            ) from None

    async def sse(
        self,
        path: str,
        model_id: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        until_done: bool,
    ) -> AsyncIterator[tuple[str, Any]]:
        """POST and yield (event name, decoded data) for each server-sent event. With
        `until_done`, a stream that ends without `data: [DONE]` was cut short: an error."""
        async with self._post(path, model_id, body, headers, stream=True) as response:
            if response.content_type != "text/event-stream":
                raise UpstreamTransportError(
                    f"{self.name} ({model_id}): answered a stream request with "
                    f"{response.content_type or 'no content type'}, not an event stream",
                    retryable=True,
                )
            event, data = "", []
            async for raw_line in response.content:
                line = raw_line.rstrip(b"\r\n")
                if line:
                    if line.startswith(b"data:"):
                        data.append(line[5:].lstrip(b" "))
                    elif line.startswith(b"event:"):
                        event = line[6:].strip().decode()
                    continue
                if data:
                    payload = b"\n".join(data)
                    if payload == b"[DONE]":
                        return
                    yield event, self._decode(model_id, payload)
                event, data = "", []
            if data == [b"[DONE]"]:
                return
            if data:
                yield event, self._decode(model_id, b"\n".join(data))
            if until_done:
                raise UpstreamTransportError(
                    f"{self.name} ({model_id}): the stream ended before [DONE]", retryable=True
                )

    async def ndjson(
        self, path: str, model_id: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> AsyncIterator[Any]:
        """POST and yield each decoded line of a newline-delimited JSON stream."""
        async with self._post(path, model_id, body, headers, stream=True) as response:
            async for raw_line in response.content:
                line = raw_line.strip()
                if line:
                    yield self._decode(model_id, line)

    def _decode(self, model_id: str, payload: bytes) -> Any:
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamTransportError(
                f"{self.name} ({model_id}): sent a malformed stream line", retryable=True
            ) from None
