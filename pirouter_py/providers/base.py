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
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Mapping,
)
from contextvars import ContextVar
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any, ClassVar, Protocol, TypeVar

import orjson

from pirouter_py import __version__
from pirouter_py.config import ModelConfig, ProviderConfig
from pirouter_py.errors import UpstreamError, UpstreamHTTPError, UpstreamTransportError
from pirouter_py.live.health import Health
from pirouter_py.providers.transport import (
    BadResponse,
    ConnectFailed,
    Disconnected,
    Response,
    Target,
    TransportError,
    Truncated,
    Upstreams,
)
from pirouter_py.types import (
    ChatRequest,
    ChatResponse,
    Embeddings,
    EmbedRequest,
    StreamEvent,
    TextAnswer,
    TextRequest,
)

USER_AGENT = f"pirouter/{__version__}"
ERROR_BODY_MAX = 1024 * 1024  # an error answer's body is read for its message, up to this
T = TypeVar("T")
CONTEXT_WORDS = ("context", "too many tokens", "maximum token")  # a 400/422 about length retries
# words of an error about the request's input, whatever its status: llama.cpp answers an image
# it has no projector for with a 500 "image input is not supported" (its server.cpp)
UNSUPPORTED_WORDS = ("not supported", "unsupported")
RETRYABLE_STATUS = frozenset((408, 413, 429))
KEY_STATUS = frozenset((401, 403, 429))  # statuses that rest the key that got them
BAD_KEY_REST_S = 300.0  # a key refused with 401/403 rests this long
MAX_ERROR_BODY = 600  # characters of an upstream error body quoted in messages
_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6})[A-Za-z0-9_\-]{6,}")
# What a stream's reader awaits before each read from its upstream, in the task that iterates it:
# the stream relay's flush of the events it has encoded since the last read (server/relay.py), so
# what one read brought goes to the client in one write, as a byte relay does, not one per event.
BEFORE_READ: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "before_read", default=None
)


class Provider(Protocol):
    """One configured upstream."""

    name: str
    kind: str

    async def complete(self, request: ChatRequest, model: ModelConfig) -> ChatResponse: ...

    def stream(
        self, request: ChatRequest, model: ModelConfig
    ) -> AsyncGenerator[StreamEvent, None]: ...

    async def text(self, request: TextRequest, model: ModelConfig) -> TextAnswer: ...

    def text_stream(
        self, request: TextRequest, model: ModelConfig
    ) -> AsyncGenerator[TextAnswer, None]: ...

    async def embed(self, request: EmbedRequest, model: ModelConfig) -> Embeddings: ...


def classify(status: int, body: str) -> tuple[bool, bool]:
    """An upstream's error status and body: (may another model be tried, is it about this
    request rather than the model's health: too long for its context, an input it cannot read)."""
    lowered = body.lower()
    too_long = status in (400, 413, 422) and any(w in lowered for w in CONTEXT_WORDS)
    unsupported = status >= 400 and any(w in lowered for w in UNSUPPORTED_WORDS)
    about_request = too_long or unsupported or status == 413
    return status in RETRYABLE_STATUS or status >= 500 or about_request, about_request


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
    """Shared plumbing: the daemon's connection pool, per-provider timeouts, key lookup."""

    kind = ""

    def _unserved(self, what: str, model: ModelConfig) -> UpstreamError:
        return UpstreamError(
            f"{self.name} ({model.model_id}): {self.kind} providers serve no {what}",
            retryable=False,
        )

    async def text(self, request: TextRequest, model: ModelConfig) -> TextAnswer:
        raise self._unserved("text completions", model)

    async def text_stream(
        self, request: TextRequest, model: ModelConfig
    ) -> AsyncGenerator[TextAnswer, None]:
        raise self._unserved("text completions", model)
        yield  # pragma: no cover - makes this an async generator

    async def embed(self, request: EmbedRequest, model: ModelConfig) -> Embeddings:
        raise self._unserved("embeddings", model)

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        upstreams: Upstreams,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.upstreams = upstreams
        self.environ = os.environ if environ is None else environ
        # A whole answer must come within the total; a stream may run past it as long as it
        # keeps moving: the total then bounds each gap between reads.
        self.total = float(config.request_timeout_secs)
        self.connect = config.connect_timeout_secs
        self.first_byte = config.first_byte_timeout_secs
        self.target = Target(config.url)  # load_config has checked that it names a server
        self.rested = Health(5.0, BAD_KEY_REST_S)  # keys (by variable name) that must rest
        self._turn = -1

    def auth(self, key: str) -> dict[str, str]:
        """The headers that carry `key` (providers that need no key send none)."""
        return {}

    probe_path = "/v1/models"  # a listing: free, and it needs the key a completion needs
    probe_headers: ClassVar[dict[str, str]] = {}

    async def probe(self, timeout: float) -> tuple[str, str]:
        """Is the provider there, and does it take our key: ("ok", "N models"), ("refused",
        why), ("unauthorised", status), ("key missing", variables), ("no answer", ...) or
        ("error", ...). One GET of its model listing, never a billed call."""
        envs = self.config.key_envs
        if envs and not any(self.environ.get(e) for e in envs):
            return "key missing", " / ".join(f"${e}" for e in envs) + " not set"
        key = self.api_key()[1] if self.needs_key or self.config.api_key else ""
        headers = {
            "User-Agent": USER_AGENT,
            **self.probe_headers,
            **(self.auth(key) if key else {}),
        }
        try:
            async with asyncio.timeout(timeout):
                response = await self.upstreams.post(
                    self.target, self.probe_path, b"", headers, connect=timeout, method="GET"
                )
                try:
                    raw = await response.read()
                finally:
                    response.release()
        except ConnectFailed as exc:
            return "refused", str(exc)
        except TimeoutError:
            return "no answer", f"within {timeout:g} s"
        except (TransportError, OSError, ValueError) as exc:
            return "error", self.redact(str(exc) or type(exc).__name__)
        if response.status in (401, 403):
            return "unauthorised", f"HTTP {response.status}: check the key"
        if response.status >= 300:
            return "error", f"HTTP {response.status} from {self.probe_path}"
        try:
            data = orjson.loads(raw)
            listed = data.get("data", data.get("models")) if isinstance(data, dict) else None
        except orjson.JSONDecodeError:
            listed = None
        return "ok", f"{len(listed)} models listed" if isinstance(listed, list) else "answering"

    @property
    def needs_key(self) -> bool:
        return self.kind != "ollama"

    def api_key(self) -> tuple[str | None, str]:
        """(the variable's name, the key), read at each request (v0.1), so a changed variable
        needs no restart; (None, "") when none is configured, and then none is sent. Several
        variables rotate: each request takes the next whose key is not resting (after a 401,
        403 or 429); when all rest, the one that recovers first."""
        envs = self.config.key_envs
        if not envs:  # no key configured: a keyless server (LM Studio, vLLM, llama.cpp)
            return None, self.config.api_key or ""
        usable = [e for e in envs if self.environ.get(e)]
        if not usable:
            names = ", ".join(envs)
            raise UpstreamError(
                f"provider `{self.name}`: environment variable{'s' if len(envs) > 1 else ''} "
                f"{names} {'are' if len(envs) > 1 else 'is'} not set; export "
                f"{'them' if len(envs) > 1 else 'it'}, or fix api_key_env",
                retryable=False,
            )
        self._turn += 1
        order = usable[self._turn % len(usable) :] + usable[: self._turn % len(usable)]
        env = next((e for e in order if not self.rested.cooling(e)), None)
        if env is None:
            env = min(order, key=lambda e: self.rested.states[e].until)
        return env, self.environ[env]

    def redact(self, text: str) -> str:
        keys = [self.config.api_key, *(self.environ.get(e) for e in self.config.key_envs)]
        for key in keys:
            if key:
                text = text.replace(key, "***")
        return _KEYLIKE.sub(r"\1***", text)

    def _http_error(
        self, model_id: str, status: int, body: str, headers: Mapping[str, str]
    ) -> UpstreamHTTPError:
        retryable, about_request = classify(status, body)
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "<unknown status code>"
        text = self.redact(body.strip())[:MAX_ERROR_BODY]
        return UpstreamHTTPError(
            f"{self.name} ({model_id}): {status} {phrase}: {text}",
            status=status,
            retryable=retryable,
            retry_after=retry_after(headers.get("retry-after")),
            about_request=about_request,
        )

    def _transport_error(self, model_id: str, exc: BaseException) -> UpstreamTransportError:
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            what = "timed out"
        elif isinstance(exc, ConnectFailed):
            what = f"connection failed ({exc.reason})"
        elif isinstance(exc, Disconnected):
            what = "closed the connection"
        elif isinstance(exc, Truncated):
            what = "sent a truncated body"
        elif isinstance(exc, BadResponse):
            what = f"sent a malformed answer ({exc})"
        else:
            what = f"request failed ({type(exc).__name__})"
        return UpstreamTransportError(
            f"{self.name} ({model_id}): {what}",
            retryable=True,
            unreachable=isinstance(exc, ConnectFailed),
        )

    def _next_key(self, env: str | None, response: Response) -> bool:
        """Key rotation after an answer to the key in `env`: True when that key was refused or
        throttled (it now rests) and another key can take the request at once."""
        if env is None or len(self.config.key_envs) < 2:
            return False
        if response.status not in KEY_STATUS:
            self.rested.succeeded(env)
            return False
        wait = retry_after(response.headers.get("retry-after"))
        self.rested.failed(env, wait if response.status == 429 else BAD_KEY_REST_S)
        envs = self.config.key_envs
        return not all(self.rested.cooling(e) for e in envs if self.environ.get(e))

    async def _send(
        self,
        path: str,
        model_id: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        stream: bool,
    ) -> Response:
        """POST JSON, with the next key after a key was refused; the response, whatever its
        status. The caller releases it."""
        base = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
        data = orjson.dumps(body)
        for _ in range(max(1, len(self.config.key_envs))):
            env, key = self.api_key() if self.needs_key else (None, "")
            try:
                response = await self.upstreams.post(
                    self.target,
                    path,
                    data,
                    {**base, **self.auth(key)} if key else base,
                    connect=self.connect,
                    total=None if stream else self.total,
                    gap=self.total if stream else None,
                    first_byte=self.first_byte,
                    limit=None if stream else self.config.max_answer_bytes,
                )
            except (TransportError, TimeoutError) as exc:
                raise self._transport_error(model_id, exc) from None
            except ValueError as exc:  # a header that would split the request
                raise UpstreamError(f"{self.name} ({model_id}): {exc}", retryable=False) from None
            if not self._next_key(env, response):
                break
            response.release()
        return response

    async def _refuse(self, model_id: str, response: Response) -> None:
        """Raise the UpstreamError for an answer that is not 2xx; return for one that is."""
        if response.status < 300:
            return
        if response.limit is None or response.limit > ERROR_BODY_MAX:
            response.limit = ERROR_BODY_MAX  # what has not arrived yet of an error's body
        try:
            text = await response.text(errors="replace")
        except (TransportError, TimeoutError):
            text = ""
        raise self._http_error(model_id, response.status, text, response.headers)

    def _post(
        self,
        path: str,
        model_id: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        stream: bool,
    ) -> _Call:
        """`async with self._post(...) as response`: a 2xx response; UpstreamError otherwise."""
        return _Call(self, model_id, self._send(path, model_id, body, headers, stream=stream))

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

    def sse(
        self,
        path: str,
        model_id: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        until_done: bool,
        last: str | None = None,
    ) -> AsyncIterator[tuple[str, Any]]:
        """POST and yield (event name, decoded data) for each server-sent event. With
        `until_done`, a stream that ends without `data: [DONE]` was cut short: an error.
        `last`: the event (by name, or by its data's `type`) after which the stream is over."""
        return self.sse_events(
            path, model_id, body, headers, _named, until_done=until_done, last=last
        )

    async def sse_events(
        self,
        path: str,
        model_id: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        decode: Callable[[str, Any], T],
        end: Callable[[], None] | None = None,
        *,
        until_done: bool,
        last: str | None = None,
    ) -> AsyncGenerator[T, None]:
        """`sse`, yielding `decode(event name, data)` of each event, and calling `end()` once the
        stream is over (it raises for a stream that is not complete): a provider returns this
        generator as its stream, with no generator of its own between it and the relay (one
        less step for every event)."""
        async with self._post(path, model_id, body, headers, stream=True) as response:
            response.events_only = True  # comments and pings do not keep a stream alive
            if response.content_type != "text/event-stream":
                raise UpstreamTransportError(
                    f"{self.name} ({model_id}): answered a stream request with "
                    f"{response.content_type or 'no content type'}, not an event stream",
                    retryable=True,
                )
            event, data = "", []
            reader = _Lines(response, self.config.max_answer_bytes)
            while (lines := await reader.next()) is not None:
                for line in lines:
                    if line:
                        if line.startswith(b"data:"):
                            data.append(line[5:].lstrip(b" "))
                        elif line.startswith(b"event:"):
                            event = line[6:].strip().decode()
                        continue
                    if data:
                        payload = data[0] if len(data) == 1 else b"\n".join(data)
                        if payload == b"[DONE]":
                            response.ended = True
                            if end is not None:
                                end()
                            return
                        if event != "ping":
                            response.moved()
                        decoded = self._decode(model_id, payload)
                        yield decode(event, decoded)
                        if last is not None and (
                            event == last
                            or (isinstance(decoded, dict) and decoded.get("type") == last)
                        ):
                            response.ended = True
                            if end is not None:
                                end()
                            return
                    event, data = "", []
            if data != [b"[DONE]"]:  # (a [DONE] the body's end cut from its blank line)
                if data:
                    yield decode(event, self._decode(model_id, b"\n".join(data)))
                if until_done:
                    raise UpstreamTransportError(
                        f"{self.name} ({model_id}): the stream ended before [DONE]",
                        retryable=True,
                    )
            if end is not None:
                end()

    def ndjson(
        self, path: str, model_id: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> AsyncIterator[Any]:
        """POST and yield each decoded line of a newline-delimited JSON stream."""
        return self.ndjson_lines(path, model_id, body, headers, _same)

    async def ndjson_lines(
        self,
        path: str,
        model_id: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        decode: Callable[[Any], T],
        end: Callable[[], None] | None = None,
    ) -> AsyncGenerator[T, None]:
        """`ndjson`, yielding `decode(line's data)`, and calling `end()` once the lines are over
        (as `sse_events`)."""
        async with self._post(path, model_id, body, headers, stream=True) as response:
            response.events_only = True  # a line is an event; bytes without one are not
            reader = _Lines(response, self.config.max_answer_bytes)
            while (lines := await reader.next()) is not None:
                for line in lines:
                    if line.strip():
                        response.moved()
                        data = self._decode(model_id, line)
                        yield decode(data)
                        if isinstance(data, dict) and data.get("done") is True:  # the last line
                            response.ended = True
                            if end is not None:
                                end()
                            return
            if end is not None:
                end()

    def understood(self, model_id: str, decode: Callable[..., T], *args: Any) -> T:
        """`decode(*args)` of an upstream body; a body of the right JSON but the wrong shape
        (a number where text belongs, `"many"` tokens) is a malformed answer, which escalates
        like malformed JSON, never a 500."""
        try:
            return decode(*args)
        except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
            raise UpstreamTransportError(
                f"{self.name} ({model_id}): answered with a body pirouter cannot understand "
                f"({type(exc).__name__}: {self.redact(str(exc))[:200]})",
                retryable=True,
            ) from None

    def _decode(self, model_id: str, payload: bytes) -> Any:
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamTransportError(
                f"{self.name} ({model_id}): sent a malformed stream line", retryable=True
            ) from None


class _Call:
    """One upstream call as an async context: entering sends it and raises for an answer that is
    not 2xx; a transport failure inside becomes an UpstreamTransportError; leaving releases the
    connection. A class rather than `@asynccontextmanager`, which costs an async generator and
    its frames on every request."""

    __slots__ = ("model_id", "provider", "response", "send")

    def __init__(
        self,
        provider: HTTPProvider,
        model_id: str,
        send: Coroutine[Any, Any, Response],
    ) -> None:
        self.provider, self.model_id, self.send = provider, model_id, send
        self.response: Response | None = None

    async def __aenter__(self) -> Response:
        self.response = response = await self.send
        try:
            await self.provider._refuse(self.model_id, response)
        except BaseException:
            response.release()
            raise
        return response

    async def __aexit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        assert self.response is not None
        self.response.release()
        if isinstance(exc, TransportError | TimeoutError):
            raise self.provider._transport_error(self.model_id, exc) from None


class _Lines:
    """A streamed body as lists of whole lines (no `\\n`, no trailing `\\r`), one list per read
    (`await next()`; None at the end); a last line without its `\\n` at the end. A stream event is
    usually one read: split here it costs one step, where a `readline` takes two calls and their
    buffer bookkeeping. A coroutine per read, not an async generator: a generator left before its
    end (a stream's reader returns at its last event) is closed by a task of its own. A line
    longer than `most` bytes is a malformed stream (the stream passes through; a line is held).
    Before each read it awaits `BEFORE_READ`'s flush, when the task set one."""

    __slots__ = ("content", "most", "pending")

    def __init__(self, content: Response, most: int) -> None:
        self.content = content
        self.most = most
        self.pending = b""

    async def next(self) -> list[bytes] | None:
        before = BEFORE_READ.get()
        if before is not None:
            await before()
        piece = await self.content.readany()
        pending = self.pending
        if not piece:
            self.pending = b""
            return [pending.rstrip(b"\r")] if pending else None
        lines = (pending + piece).split(b"\n") if pending else piece.split(b"\n")
        self.pending = pending = lines.pop()
        if len(pending) > self.most:
            raise BadResponse(f"sent a stream line over {self.most:,} bytes (max_answer_bytes)")
        return [line.rstrip(b"\r") for line in lines]


def _named(event: str, data: Any) -> tuple[str, Any]:
    return event, data


def _same(data: Any) -> Any:
    return data
