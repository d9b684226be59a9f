"""The upstream HTTP/1.1 client: pooled keep-alive connections, answers parsed by httptools.

Why not aiohttp's client: on this path it was most of what a pass-through costs. A bare aiohttp
proxy spent ~330 µs of CPU per request; the same proxy with this client ~130 µs (same run, A/B).
aiohttp still serves the daemon's own endpoints; this module only sends POSTs to upstreams.

What it does: one POST per call on an idle connection to the same origin (or a new one), the
request written in one `write`, the answer parsed by httptools (llhttp) as bytes arrive: status and
headers first, then the body read whole or piece by piece. Chunked and length-delimited bodies,
bodies that end with the connection, gzip/deflate if an upstream compresses anyway (none is asked
to), TLS with the system's CAs.

Invariants:
- A connection is back in the pool only after its answer was read to the end and the upstream
  kept it alive; anything else (an error, an unread body, a timeout) closes it. A stream whose
  reader saw its protocol's last event (`ended`) before the body's end (a chunked body's last,
  empty chunk usually comes in the next read) is released at once and its end read in the
  background, for at most `SETTLE_S`: the connection is kept, and the client is not held.
- A POST is never sent twice: an upstream that closes the connection before answering (even a
  pooled one it timed out as the request left) is a failed attempt, for the cascade to judge, as
  it was with aiohttp. An idle connection the upstream closes is dropped from the pool at once.
- One timer per call: the total deadline, the first-byte deadline until the headers, and the
  longest allowed gap between reads, whichever comes first; a gap re-arms it lazily, not per read.

Exceptions (all `TransportError` but the timeout, which is the builtin `TimeoutError`):
    TransportError
    ├── ConnectFailed    no connection (refused, unreachable, DNS, TLS handshake)
    ├── Disconnected     the upstream closed the connection before the answer's headers
    ├── Truncated        the body stopped short of its length, or its chunks
    └── BadResponse      not HTTP, or an encoding this client cannot read
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohappyeyeballs
import httptools

HIGH_WATER = 1 << 18  # bytes of unread streamed body before reading from the socket pauses
SETTLE_S = 1.0  # how long a stream released after its last event may take to end its body
DEFAULT_PORTS = {"http": 80, "https": 443}
HAPPY_EYEBALLS_S = 0.25  # RFC 8305's connection attempt delay, for hosts with IPv4 and IPv6


class TransportError(Exception):
    """The upstream call failed below HTTP: no answer, or not a whole one."""


class ConnectFailed(TransportError):
    def __init__(self, os_error: OSError) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error
        self.reason = _reason(os_error)


def _reason(error: OSError) -> str:
    """Why a connection failed, in words: an OSError's errno is the C library's only when it is
    neither a TLS error (OpenSSL's code) nor a resolver error (getaddrinfo's, negative)."""
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or error}"
    if isinstance(error, socket.gaierror) or not error.errno or error.errno < 0:
        return error.strerror or str(error) or type(error).__name__
    return os.strerror(error.errno)


class Disconnected(TransportError):
    pass


class Truncated(TransportError):
    pass


class BadResponse(TransportError):
    pass


class Target:
    """Where a provider's calls go, parsed once: origin, request-line prefix, Host header."""

    __slots__ = ("host", "https", "origin", "port", "prefix", "request_head")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.origin = (parts.scheme, self.host, self.port)
        host = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port and parts.port != DEFAULT_PORTS[parts.scheme]:
            host = f"{host}:{parts.port}"
        self.prefix = parts.path.rstrip("/")
        self.request_head = f" HTTP/1.1\r\nHost: {host}\r\n"


def _head(
    target: Target, path: str, headers: Mapping[str, str], length: int, method: str = "POST"
) -> bytes:
    lines = [f"{method} {target.prefix}{path}{target.request_head}"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise ValueError(f"header {name!r} has a line break in it, or a colon in its name")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode()


class Upstreams:
    """The pool: idle connections per origin (most recent first), shared by every provider."""

    def __init__(self, *, keepalive: float = 90.0, ssl_context: ssl.SSLContext | None = None):
        self.keepalive = keepalive
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._open: set[_Conn] = set()
        self._warming: asyncio.Future[ssl.SSLContext] | None = None
        self.closed = False

    def tls(self) -> ssl.SSLContext:
        """The TLS context, made at first use (see `warm_tls`)."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def warm_tls(self) -> None:
        """Load the system's CAs (~30 ms) in a thread now, not on the loop at the first https
        call; the daemon does at start when a provider is https."""
        if self._ssl is None and self._warming is None:
            self._warming = asyncio.ensure_future(asyncio.to_thread(self.tls))

    def idle(self, target: Target) -> int:
        """How many connections to `target`'s origin wait in the pool (for tests)."""
        return len(self._idle.get(target.origin, ()))

    async def post(
        self,
        target: Target,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect: float | None = None,
        total: float | None = None,
        gap: float | None = None,
        first_byte: float | None = None,
        method: str = "POST",
        limit: int | None = None,
    ) -> Response:
        """Send one POST (or `method`) and return once the answer's status and headers are in.
        The caller reads the body (or not) and must `release()` the response."""
        payload = _head(target, path, headers, len(body), method) + body
        conn = self._reuse(target.origin) or await self._connect(target, connect)
        response = Response(conn, total, gap, first_byte)
        response.limit = limit
        conn.response = response
        assert conn.transport is not None
        conn.transport.write(payload)
        try:
            await response.wait_head()
        except BaseException:
            response.release()
            raise
        return response

    def _reuse(self, origin: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            closing = conn.closed or conn.transport is None or conn.transport.is_closing()
            if not closing and now - conn.idle_since < self.keepalive:
                return conn
            conn.close()
        return None

    async def _connect(self, target: Target, timeout: float | None) -> _Conn:
        if self.closed:
            raise Disconnected("the daemon is shutting down")
        loop = asyncio.get_running_loop()
        context = self.tls() if target.https else None
        try:
            async with asyncio.timeout(timeout):
                # uvloop's create_connection has no happy eyeballs: aiohappyeyeballs (aiohttp's
                # own) races the addresses, the loop wraps the winning socket.
                addresses = await loop.getaddrinfo(
                    target.host, target.port, type=socket.SOCK_STREAM
                )
                sock = await aiohappyeyeballs.start_connection(
                    addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_S, interleave=1
                )
                try:
                    _, conn = await loop.create_connection(
                        lambda: _Conn(self, target.origin),
                        sock=sock,
                        ssl=context,
                        server_hostname=target.host if context else None,
                    )
                except BaseException:
                    sock.close()  # a failed TLS handshake leaves the socket to its owner
                    raise
        except TimeoutError:
            raise
        except OSError as exc:
            raise ConnectFailed(exc) from None
        self._open.add(conn)
        return conn

    def _park(self, conn: _Conn) -> None:
        conn.response = None
        if self.closed:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(conn.origin, []).append(conn)

    def _forget(self, conn: _Conn) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    async def close(self) -> None:
        """Close every connection; calls in flight fail with Disconnected."""
        self.closed = True
        if self._warming is not None:
            with contextlib.suppress(Exception):  # the first https call says what failed
                await self._warming
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports deliver connection_lost


class _Conn(asyncio.Protocol):
    """One TCP (or TLS) connection; hands what it reads to the response being answered on it."""

    def __init__(self, pool: Upstreams, origin: tuple[str, str, int]) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response.done:  # bytes nobody asked for: not to be trusted
            self.close()
            return
        response.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if self.response is not None:
            self.response.lost()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Response:
    """An upstream's answer: `status`, `headers` (lower-case names), then the body through
    `read()`, `text()` or `readany()`. httptools calls the `on_*` methods as it parses."""

    def __init__(
        self, conn: _Conn, total: float | None, gap: float | None, first_byte: float | None
    ) -> None:
        self.conn = conn
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.interim = False  # parsing a 1xx answer that comes before the real one
        self.done = False
        self.error: BaseException | None = None
        self.keep_alive = False
        self.whole = False  # read() is waiting for all of it: never pause the socket
        self.paused = False
        self.released = False
        self.ended = False  # the reader saw the protocol's last event (`release` may settle)
        self._settling = False  # released after its last event: reading the body's end
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._inflate: Any = None
        self._waiter: asyncio.Future[None] | None = None
        self._loop = loop = asyncio.get_running_loop()
        now = loop.time()
        self._total = now + total if total else None
        self._first = now + first_byte if first_byte else None
        self._gap = gap
        self._last = now
        # A stream's gap counts events, not bytes (`moved()`, called by the event reader): an
        # upstream dripping bytes or keep-alive comments without an event is not moving.
        self.events_only = False
        self._evented = False
        # The most body bytes (after decompression) this answer may bring: a whole answer is
        # held in memory, so it is capped; a stream passes through and is not.
        self.limit: int | None = None
        self._received = 0
        self._timer: asyncio.TimerHandle | None = None
        due = self._due()
        if due is not None:
            self._timer = loop.call_at(due, self._expire)

    # --- timeouts: one timer, re-armed only when it fires early -------------------------------

    def _due(self) -> float | None:
        due = self._total
        waiting = not self.head_done or (self.events_only and not self._evented)
        if self._first is not None and waiting and (due is None or self._first < due):
            due = self._first
        if self._gap is not None:
            gap_due = self._last + self._gap
            if due is None or gap_due < due:
                due = gap_due
        return due

    def _expire(self) -> None:
        self._timer = None
        if self.done or self.error is not None:
            return
        due = self._due()
        if due is None:
            return
        if self._loop.time() < due:  # data moved the gap on since the timer was set
            self._timer = self._loop.call_at(due, self._expire)
            return
        self._fail(TimeoutError())
        self.conn.close()

    # --- what the connection hands over ------------------------------------------------------

    def moved(self) -> None:
        """An event arrived: the gap starts again (and the first-byte bound, which holds a
        stream until its first event, is met)."""
        self._last = self._loop.time()
        self._evented = True

    def feed(self, data: bytes) -> None:
        if self._gap is not None and not self.events_only:
            self._last = self._loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("answered with a protocol upgrade"))
            self.conn.close()
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, TransportError) else BadResponse(str(exc)))
            self.conn.close()
        if self._settling and (self.done or self.error is not None):
            self._settled()

    def lost(self) -> None:
        if self._settling:
            self._settled()
            return
        if self.done or self.error is not None:
            return
        if self.head_done and self._until_close():
            self.on_message_complete()  # the body was everything up to the close
        elif self.head_done:
            self._fail(Truncated("the body ended early"))
        else:
            self._fail(Disconnected("closed before answering"))

    def _until_close(self) -> bool:
        return (
            "content-length" not in self.headers
            and "chunked" not in self.headers.get("transfer-encoding", "").lower()
            and self.status not in (204, 304)
        )

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200 and self.status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints: the answer follows
            self.headers = {}
            return
        self.keep_alive = self.parser.should_keep_alive()
        self.head_done = True
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip, by header
        elif encoding != "identity":
            raise BadResponse(f"sent a body in an encoding this client cannot read ({encoding})")
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._settling:  # what follows the last event: not read by anyone
            return
        if self._inflate is not None:
            try:
                body = self._inflate.decompress(body)
            except zlib.error as exc:
                raise BadResponse(f"sent a body that does not decompress ({exc})") from None
        self._received += len(body)
        if self.limit is not None and self._received > self.limit:
            raise BadResponse(
                f"sent an answer over {self.limit:,} bytes (its provider's max_answer_bytes)"
            )
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self.whole and not self.paused:
            self.paused = True
            assert self.conn.transport is not None
            self.conn.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self._inflate is not None:
            rest = self._inflate.flush()
            if rest:
                self._chunks.append(rest)
        self.done = True
        self._wake()

    # --- the caller's side -------------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def wait_head(self) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case; "" when the upstream sent none."""
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()

    async def read(self) -> bytes:
        """The whole body."""
        self.whole = True
        if self.paused:
            self._resume()
        while not self.done:
            if self.error is not None:
                raise self.error
            await self._wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    async def text(self, errors: str = "strict") -> str:
        """The whole body as text, in the charset the content type names (UTF-8 if none)."""
        data = await self.read()
        charset = "utf-8"
        for param in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                charset = value.strip().strip('"')
        try:
            return data.decode(charset, errors)
        except LookupError:
            return data.decode("utf-8", errors)

    async def readany(self) -> bytes:
        """What has arrived of the body since the last call (waiting for some); b"" at its end."""
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self.done:
                return b""
            await self._wait()
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self.paused:
            self._resume()
        return data

    def _resume(self) -> None:
        self.paused = False
        if self.conn.transport is not None and not self.conn.closed:
            self.conn.transport.resume_reading()

    def release(self) -> None:
        """Done with this answer: its connection goes back to the pool if it can, else closes."""
        if self.released:
            return
        self.released = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn = self.conn
        if (
            self.ended
            and not self.done
            and self.keep_alive
            and self.error is None
            and not conn.closed
            and not self._until_close()
        ):
            self._settling = True
            self._chunks.clear()
            self._buffered = 0
            if self.paused:
                self._resume()
            self._timer = self._loop.call_later(SETTLE_S, self._settled)
            return
        self._let_go()

    def _settled(self) -> None:
        """The body's end came after the release (or did not in time, or the connection went)."""
        if not self._settling:
            return
        self._settling = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._let_go()

    def _let_go(self) -> None:
        # The parser holds this response's callbacks: a cycle per call, left to the collector
        # (which runs rarely, server/loop.py) unless broken here. Nothing feeds a released response.
        del self.parser
        conn = self.conn
        if self.done and self.keep_alive and self.error is None and not conn.closed:
            if self.paused:
                self._resume()
            conn.pool._park(conn)
        else:
            conn.response = None
            conn.close()
