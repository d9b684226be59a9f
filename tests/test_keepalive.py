"""Held-back streams keep the client's connection alive: keep-alives in the client's protocol
every `[server] stream_keepalive_secs` until the cascade commits; a client that goes away while
it waits cancels the upstream call at once."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import test_conformance
from tests.fakes import Daemon, FakeUpstream, Reply

KEEPALIVE_S = 0.3
CONFIG = f"[server]\nstream_keepalive_secs = {KEEPALIVE_S}\n" + test_conformance.CONFIG
pytestmark = pytest.mark.usefixtures("clean_fake")

HI = [{"role": "user", "content": "hi"}]
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("/v1/chat/completions", {"model": "auto", "messages": HI, "stream": True}),
    "anthropic": (
        "/v1/messages",
        {"model": "auto", "messages": HI, "max_tokens": 100, "stream": True},
    ),
    "responses": ("/v1/responses", {"model": "auto", "input": "hi", "stream": True}),
    "ollama": ("/api/chat", {"model": "auto", "messages": HI, "stream": True}),
}
KEEPALIVE = {
    "openai": b": keep-alive\n\n",
    "anthropic": b'event: ping\ndata: {"type": "ping"}\n\n',
    "responses": b": keep-alive\n\n",
}


OPEN: list[http.client.HTTPConnection] = []


@pytest.fixture(autouse=True)
def close_connections() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def post(daemon: Daemon, protocol: str, alias: str = "o") -> http.client.HTTPResponse:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    OPEN.append(conn)
    path, body = BODIES[protocol]
    conn.request(
        "POST",
        path,
        body=json.dumps(body),
        headers={"content-type": "application/json", "x-pirouter-route": alias},
    )
    return conn.getresponse()


def timed_chunks(response: http.client.HTTPResponse) -> list[tuple[float, bytes]]:
    start = time.monotonic()
    out = []
    while chunk := response.read1(65536):
        out.append((time.monotonic() - start, chunk))
    return out


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "responses"])
def test_a_slow_upstream_gets_keepalives_to_the_client(
    daemon: Daemon, fake: FakeUpstream, protocol: str
) -> None:
    fake.script("m-o", Reply(text="finally here", delay=1.5))
    started = time.monotonic()
    response = post(daemon, protocol)
    assert response.status == 200 and time.monotonic() - started < 1.0  # begun by a keep-alive
    assert response.getheader("x-pirouter-request-id")
    chunks = timed_chunks(response)
    body = b"".join(c for _, c in chunks)
    before = body.split(b"finally", 1)[0]
    assert before.count(KEEPALIVE[protocol]) >= 3  # 1.5 s of waiting at 0.3 s
    assert b"finally" in body and b"here" in body
    assert chunks[0][1].startswith(KEEPALIVE[protocol])


def test_ollama_clients_get_no_keepalive_lines(daemon: Daemon, fake: FakeUpstream) -> None:
    fake.script("m-o", Reply(text="finally here", delay=1.0))
    lines = post(daemon, "ollama").read().splitlines()
    assert lines and all(json.loads(line) for line in lines)  # every line is JSON
    assert "".join(json.loads(line)["message"]["content"] for line in lines) == "finally here"


def test_a_cascade_that_fails_after_keepalives_ends_with_an_error_event(
    daemon: Daemon, fake: FakeUpstream
) -> None:
    fake.script("m-o", Reply(kind="status", status=500, delay=1.0))
    response = post(daemon, "openai")
    assert response.status == 200
    body = response.read()
    assert body.startswith(KEEPALIVE["openai"])
    events = [line for line in body.split(b"\n\n") if line.startswith(b"data: {")]
    error = json.loads(events[-1].removeprefix(b"data: "))
    assert error["error"]["type"] == "upstream_error" and body.endswith(b"data: [DONE]\n\n")
    line = daemon.wait_log(response.getheader("x-pirouter-request-id") or "")
    assert line["status"] in ("exhausted", "upstream_error")


def test_a_client_that_leaves_a_held_back_stream_cancels_the_upstream_within_a_second(
    daemon: Daemon, fake: FakeUpstream
) -> None:
    fake.script("m-o", Reply(text="too late", delay=10.0))
    response = post(daemon, "anthropic")
    rid = response.getheader("x-pirouter-request-id") or ""
    assert response.read1(64).startswith(b"event: ping")
    OPEN.pop().close()  # the client goes away
    left = time.monotonic()
    while time.monotonic() - left < 3 and not fake.seen[0].finished:
        time.sleep(0.02)
    assert fake.seen[0].cancelled and time.monotonic() - left < 1.0
    line = daemon.wait_log(rid)
    assert line["status"] == "client_cancelled" and line["chain"] == ["o:client_cancelled"]


def test_a_refused_stream_leaves_no_keepalive_behind(daemon: Daemon, fake: FakeUpstream) -> None:
    """A request the chosen model's protocol cannot take (n > 1 for an Anthropic model) is a 400;
    the keep-alive timer set for it must not write into the connection afterwards."""
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    OPEN.append(conn)
    body = {"model": "auto", "messages": HI, "stream": True, "n": 2}
    headers = {"content-type": "application/json", "x-pirouter-route": "a"}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=headers)
    refused = conn.getresponse()
    assert refused.status == 400 and "n > 1" in refused.read().decode()
    time.sleep(3 * KEEPALIVE_S)  # a stray timer would fire now, into this connection
    body = {"model": "auto", "messages": HI}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=headers)
    answer = conn.getresponse()
    assert answer.status == 200
    assert json.loads(answer.read())["choices"][0]["message"]["content"]
