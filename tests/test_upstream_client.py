"""The upstream HTTP client (providers/transport.py) against real servers on 127.0.0.1: aiohttp
apps for well-behaved answers, raw asyncio servers for the ones that misbehave byte by byte."""

from __future__ import annotations

import asyncio
import errno
import gc
import gzip
import socket
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from pirouter_py.config import load_config
from pirouter_py.providers.transport import (
    HIGH_WATER,
    BadResponse,
    ConnectFailed,
    Disconnected,
    Response,
    Target,
    Truncated,
    Upstreams,
)
from pirouter_py.server import app as server

JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def app_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    *,
    keepalive: float = 75.0,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[str, list[object]]]:
    """An aiohttp app answering every POST with `handler`; yields its URL and the peer address
    of each request (one entry per request, so connections can be counted)."""
    peers: list[object] = []

    async def record(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return await handler(request)

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    runner = web.AppRunner(app, keepalive_timeout=keepalive, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}", peers
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_server(answer: bytes | list[bytes] | None) -> AsyncIterator[str]:
    """A server that reads one request's head, writes `answer` (None: nothing; a list: its pieces
    as separate reads) as it is and closes the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            for piece in [answer] if isinstance(answer, bytes) else answer or []:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass  # the client gave up on a broken answer first
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def post(pool: Upstreams, url: str, **timeouts: float) -> Response:
    return await pool.post(Target(url), "/v1/x", b'{"a":1}', JSON, **timeouts)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


async def ok(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"got": body.decode(), "path": request.path})


def test_the_request_goes_out_whole_and_a_connection_is_reused() -> None:
    async def main() -> None:
        pool = Upstreams()
        async with app_server(ok) as (url, peers):
            for _ in range(3):
                response = await post(pool, url + "/base")
                assert response.status == 200 and response.content_type == "application/json"
                assert await response.read() == b'{"got": "{\\"a\\":1}", "path": "/base/v1/x"}'
                response.release()
            assert len(peers) == 3 and len(set(peers)) == 1  # one connection, kept alive
            assert pool.idle(Target(url)) == 1
        await pool.close()

    run(main())


def test_a_released_answer_is_freed_without_the_collector() -> None:
    # The daemon collects young garbage rarely (server/loop.py): a cycle per call would pile up.
    async def main() -> None:
        pool = Upstreams()
        async with app_server(ok) as (url, _):
            gc.disable()
            try:
                for total in (None, 5.0):  # with and without a timer
                    response = await pool.post(Target(url), "/", b"", {}, total=total)
                    await response.read()
                    response.release()
                    freed = weakref.ref(response)
                    del response
                    assert freed() is None
            finally:
                gc.enable()
        await pool.close()

    run(main())


def test_an_idle_connection_the_upstream_closed_is_not_reused() -> None:
    async def main() -> None:
        pool = Upstreams()
        async with app_server(ok, keepalive=0.1) as (url, peers):
            (await post(pool, url)).release()
            await asyncio.sleep(0.4)  # the server closes the idle connection meanwhile
            assert pool.idle(Target(url)) == 0
            response = await post(pool, url)
            assert response.status == 200
            response.release()
            assert len(set(peers)) == 2
        await pool.close()

    run(main())


def test_an_idle_connection_past_the_keepalive_is_replaced() -> None:
    async def main() -> None:
        pool = Upstreams(keepalive=0.05)
        async with app_server(ok) as (url, peers):
            for _ in range(2):
                response = await post(pool, url)
                await response.read()
                response.release()
                await asyncio.sleep(0.1)
            assert len(set(peers)) == 2
        await pool.close()

    run(main())


def test_a_chunked_body_is_read_whole_and_piece_by_piece() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for piece in (b"one ", b"two ", b"three"):
            await response.write(piece)
            await asyncio.sleep(0.02)
        return response

    async def main() -> None:
        pool = Upstreams()
        async with app_server(chunked) as (url, _):
            response = await post(pool, url)
            assert response.headers["transfer-encoding"] == "chunked"
            assert await response.read() == b"one two three"
            response.release()
            response = await post(pool, url)
            pieces = []
            while piece := await response.readany():
                pieces.append(piece)
            assert b"".join(pieces) == b"one two three" and len(pieces) == 3
            response.release()
            assert pool.idle(Target(url)) == 1
        await pool.close()

    run(main())


def test_an_interim_answer_is_skipped() -> None:
    async def main() -> None:
        pool = Upstreams()
        answer = [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        ]
        async with raw_server(answer) as url:
            response = await post(pool, url)
            assert (response.status, response.headers) == (201, {"content-length": "2"})
            assert await response.read() == b"ok"
            response.release()
        await pool.close()

    run(main())


def test_a_body_that_ends_with_the_connection() -> None:
    async def main() -> None:
        pool = Upstreams()
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=latin-1\r\n\r\ncaf\xe9"
        async with raw_server(answer) as url:
            response = await post(pool, url)
            assert await response.text() == "café"
            response.release()
            assert pool.idle(Target(url)) == 0  # not reusable
        await pool.close()

    run(main())


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", Truncated, "ended early"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", Truncated, "early"),
        (None, Disconnected, "closed before answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", Disconnected, "before answering"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", BadResponse, None),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n", BadResponse, "cannot read \\(br\\)"),
    ],
    ids=["short body", "unfinished chunks", "no answer", "cut in the head", "not http", "br"],
)
def test_broken_answers(answer: bytes | None, error: type[Exception], message: str | None) -> None:
    async def main() -> None:
        pool = Upstreams()
        async with raw_server(answer) as url:
            with pytest.raises(error, match=message):
                response = await post(pool, url)
                try:
                    await response.read()
                finally:
                    response.release()
        await pool.close()

    run(main())


def test_a_refused_connection() -> None:
    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, never listening: refused
            pool = Upstreams()
            with pytest.raises(ConnectFailed) as caught:
                await post(pool, f"http://127.0.0.1:{port}")
            assert caught.value.os_error.errno == errno.ECONNREFUSED
            assert caught.value.reason == "Connection refused"
            await pool.close()

    run(main())


async def slow(request: web.Request) -> web.StreamResponse:
    """Headers after `head` seconds, then `n` pieces `pace` seconds apart (from the query)."""
    head, pace, n = (float(request.query.get(k, 0)) for k in ("head", "pace", "n"))
    await request.read()
    await asyncio.sleep(head)
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(int(n)):
        await response.write(b"x")
        await asyncio.sleep(pace)
    return response


@pytest.mark.parametrize(
    ("query", "timeouts", "times_out"),
    [
        ("head=0.5", {"total": 0.2}, True),
        ("head=0.05&n=8&pace=0.05", {"total": 0.2}, True),  # the total covers the body too
        ("head=0.5", {"total": 5, "first_byte": 0.2}, True),
        ("head=0.05&n=8&pace=0.05", {"total": 5, "first_byte": 0.2}, False),
        ("head=0.05&n=1&pace=0.5", {"gap": 0.2}, True),
        ("n=10&pace=0.05", {"gap": 0.2}, False),  # 0.5 s in all, but no gap over 0.2 s
    ],
)
def test_timeouts(query: str, timeouts: dict[str, float], times_out: bool) -> None:
    async def main() -> None:
        pool = Upstreams()
        async with app_server(slow) as (url, _):
            target = Target(f"{url}")
            try:
                response = await pool.post(target, "/?" + query, b"", {}, **timeouts)
                try:
                    await response.read()
                finally:
                    response.release()
            except TimeoutError:
                assert times_out
                assert pool.idle(target) == 0  # a timed-out connection is not reused
            else:
                assert not times_out
        await pool.close()

    run(main())


def test_a_gzipped_body_is_inflated() -> None:
    async def zipped(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            body=gzip.compress(b"hello " * 100), headers={"content-encoding": "gzip"}
        )

    async def main() -> None:
        pool = Upstreams()
        async with app_server(zipped) as (url, _):
            response = await post(pool, url)
            assert await response.read() == b"hello " * 100
            response.release()
        await pool.close()

    run(main())


def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    async def main() -> None:
        pool = Upstreams()
        async with app_server(ok) as (url, peers):
            with pytest.raises(ValueError, match="line break"):
                await pool.post(Target(url), "/", b"", {"x-key": "k\r\nHost: evil"})
            assert peers == []
        await pool.close()

    run(main())


def test_a_big_stream_read_slowly_pauses_the_socket_and_loses_nothing() -> None:
    piece = bytes(range(256)) * 256  # 64 KiB

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(32):  # 2 MiB, well past the high-water mark
            await response.write(piece)
        return response

    async def main() -> None:
        pool = Upstreams()
        async with app_server(big) as (url, _):
            response = await post(pool, url)
            await asyncio.sleep(0.3)  # let it pile up unread
            # one socket read may bring a few hundred KiB past the mark, not the whole 2 MiB
            assert response.paused and response._buffered < 4 * HIGH_WATER
            got = bytearray()
            while data := await response.readany():
                got += data
            assert got == piece * 32
            response.release()
            assert pool.idle(Target(url)) == 1
        await pool.close()

    run(main())


def test_an_unread_body_closes_its_connection() -> None:
    async def main() -> None:
        pool = Upstreams()
        async with app_server(slow) as (url, _):
            response = await pool.post(Target(url), "/?n=3&pace=0.05", b"", {})
            response.release()
            assert pool.idle(Target(url)) == 0
        await pool.close()

    run(main())


def test_close_fails_a_call_in_flight() -> None:
    async def main() -> None:
        pool = Upstreams()
        async with app_server(slow) as (url, _):
            response = await pool.post(Target(url), "/?n=3&pace=0.5", b"", {})
            reading = asyncio.ensure_future(response.read())
            await asyncio.sleep(0.1)
            await pool.close()
            with pytest.raises(Truncated):
                await reading
            response.release()
            with pytest.raises(Disconnected, match="shutting down"):
                await post(pool, url)

    run(main())


def test_tls_with_the_trusted_ca() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def main() -> None:
        async with app_server(ok, tls=server_context) as (url, peers):
            pool = Upstreams(ssl_context=client_context)
            for _ in range(2):
                response = await post(pool, url)
                assert response.status == 200 and b'"path": "/v1/x"' in await response.read()
                response.release()
            assert len(set(peers)) == 1
            await pool.close()
            untrusting = Upstreams()  # the system's CAs do not know this one
            with pytest.raises(ConnectFailed) as caught:
                await post(untrusting, url)
            assert caught.value.reason == "TLS: CERTIFICATE_VERIFY_FAILED"
            await untrusting.close()

    run(main())


def test_targets() -> None:
    target = Target("https://api.example.com/v1/")
    assert (target.origin, target.prefix) == (("https", "api.example.com", 443), "/v1")
    assert target.request_head == " HTTP/1.1\r\nHost: api.example.com\r\n"
    assert Target("http://[::1]:8080").request_head == " HTTP/1.1\r\nHost: [::1]:8080\r\n"
    with pytest.raises(ValueError, match="not an http"):
        Target("ftp://x")


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_the_daemon_loads_the_ca_store_at_start_only_for_https(scheme: str, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[providers.up]\ntype = "openai"\nbase_url = "{scheme}://127.0.0.1:9"\napi_key_env = "K"\n'
        '[models.m]\nprovider = "up"\nmodel_id = "x"\n'
    )

    async def main() -> None:
        app = server.create_app(load_config(path), recorder=None)
        runner = web.AppRunner(app)
        await runner.setup()  # runs the start-up contexts; nothing listens or calls out
        try:
            pool = app[server.STATE].upstreams
            assert pool is not None
            for _ in range(100 if scheme == "https" else 0):
                if pool._ssl is not None:
                    break
                await asyncio.sleep(0.02)
            assert (pool._ssl is not None) == (scheme == "https")
        finally:
            await runner.cleanup()

    run(main())
