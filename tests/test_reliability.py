"""Reliability, round two (#27): what a probe from outside found, each reproduced here against the
real daemon: cross-site requests, message roles that are objects, a config file written in
steps, a reloaded `cors_origins`. (Streams without events and wrong-typed upstream JSON are in
test_faults.py, with the other upstream faults.)"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import Daemon, FakeUpstream, Reply
from tests.test_reload import BASE, PIN_MID, ask, wait_for

CHAT = {"model": "auto", "stream": False, "messages": [{"role": "user", "content": "hi"}]}


def call(
    daemon: Daemon, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


@pytest.fixture
def plain(fake: FakeUpstream, tmp_path: Path) -> Iterator[Daemon]:
    fake.reset()
    path = tmp_path / "config.toml"
    path.write_text(BASE.replace("{url}", fake.url))
    path.chmod(0o600)
    daemon = Daemon(path).start()
    yield daemon
    daemon.stop()


@pytest.mark.parametrize(
    "kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions", "/v1/messages"])
def test_a_cross_site_post_is_refused_whatever_its_content_type(
    plain: Daemon, fake: FakeUpstream, kind: str, path: str
) -> None:
    """What a browser sends cross-site without a preflight: no upstream call, a 403 in the
    endpoint's own error format."""
    body = json.dumps({**CHAT, "max_tokens": 8}).encode()
    status, _, raw = call(
        plain, "POST", path, {"Origin": "http://evil.example", "Content-Type": kind}, body
    )
    assert status == 403, raw
    error = json.loads(raw)
    message = error["error"] if isinstance(error["error"], str) else error["error"]["message"]
    assert "cross-site request refused: a page at http://evil.example" in message
    assert fake.seen == []


def test_cross_site_reads_are_refused_and_the_own_origin_and_a_link_are_not(
    plain: Daemon, fake: FakeUpstream
) -> None:
    evil = {"Origin": "http://evil.example"}
    assert call(plain, "GET", "/v1/models", evil)[0] == 403
    assert call(plain, "GET", "/ui/api/summary", evil)[0] == 403
    fetch = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    assert call(plain, "GET", "/v1/models", fetch)[0] == 403
    # a person following a link to the dashboard from another site gets the page (no data)
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert call(plain, "GET", "/", link)[0] == 200
    assert call(plain, "GET", "/ui/api/summary", link)[0] == 403
    # the daemon's own page, and clients that send no Origin
    own = {"Origin": plain.url, "Content-Type": "application/json"}
    status, _, raw = call(plain, "POST", "/v1/chat/completions", own, json.dumps(CHAT).encode())
    assert status == 200, raw
    assert call(plain, "GET", "/v1/models", {"Sec-Fetch-Site": "same-origin"})[0] == 200
    assert len(fake.seen) == 1


@pytest.mark.parametrize("role", [{"x": 1}, ["user"], 7, None])
@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/chat/completions", "openai"),
        ("/v1/messages", "anthropic"),
        ("/api/chat", "ollama"),
    ],
)
def test_a_role_that_is_not_a_string_is_a_400(
    plain: Daemon, fake: FakeUpstream, role: Any, path: str, shape: str
) -> None:
    body = {"model": "auto", "max_tokens": 8, "stream": False}
    body["messages"] = [{"role": role, "content": "hi"}]
    status, _, raw = call(
        plain, "POST", path, {"Content-Type": "application/json"}, json.dumps(body).encode()
    )
    assert status == 400, raw
    error = json.loads(raw)
    message = error["error"] if shape == "ollama" else error["error"]["message"]
    assert "role" in message and "Traceback" not in raw.decode()
    assert fake.seen == []


def test_a_config_written_in_two_steps_is_loaded_whole(plain: Daemon, tmp_path: Path) -> None:
    """The first step is a valid file without the rule; the second, 2.5 s later, adds it. The
    watcher waits for the file to settle: one reload, with the rule, never one without."""
    path = tmp_path / "config.toml"
    first = path.read_text() + '[models.spare]\nprovider = "fake"\nmodel_id = "m-spare"\n'
    path.write_text(first)
    time.sleep(2.5)
    path.write_text(first + PIN_MID)
    (line,) = wait_for(plain, "config_reloaded", timeout=10)
    assert line["rules"] == 1 and line["models"] == 3
    assert ask(plain)[0] == "mid"
    time.sleep(2.0)
    assert len(plain.log_lines("config_reloaded")) == 1


def test_a_reloaded_cors_origins_takes_effect_at_once(plain: Daemon, tmp_path: Path) -> None:
    origin = {"Origin": "http://app.test"}
    assert call(plain, "GET", "/v1/models", origin)[0] == 403
    path = tmp_path / "config.toml"
    path.write_text('[server]\ncors_origins = ["http://app.test"]\n' + path.read_text())
    (line,) = wait_for(plain, "config_reloaded", timeout=10)
    assert line.get("needs_restart") is None  # the log does not claim a restart is needed
    status, headers, _ = call(plain, "GET", "/v1/models", origin)
    assert status == 200 and headers["access-control-allow-origin"] == "http://app.test"


# --- client connections (#27.8) -------------------------------------------------------------


@pytest.fixture
def tight(fake: FakeUpstream, tmp_path: Path) -> Iterator[Daemon]:
    fake.reset()
    path = tmp_path / "config.toml"
    path.write_text(
        "[server]\nheader_timeout_secs = 1\nidle_timeout_secs = 1\nmax_connections = 4\n"
        + BASE.replace("{url}", fake.url)
    )
    daemon = Daemon(path).start()
    yield daemon
    daemon.stop()


def _connect(daemon: Daemon) -> socket.socket:
    host, port = daemon.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing, or None if it is still open after `seconds`."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return got


def test_slow_headers_idle_connections_and_too_many_are_closed(tight: Daemon) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: " + tight.url.removeprefix("http://").encode()
    drip = _connect(tight)
    drip.sendall(head + b"\r\n")  # never finished
    started = time.monotonic()
    assert _closed_within(drip, 5) == b""
    assert time.monotonic() - started < 3
    idle = _connect(tight)
    idle.sendall(head + b"\r\n\r\n")
    answer = _closed_within(idle, 5)  # answered, then closed after 1 s of keep-alive
    assert answer is not None and answer.startswith(b"HTTP/1.1 200")
    held = [_connect(tight) for _ in range(4)]
    for sock in held:
        sock.sendall(head + b"\r\n")
    time.sleep(0.2)
    extra = _connect(tight)
    refused = _closed_within(extra, 5)
    for sock in [drip, idle, *held, extra]:
        sock.close()
    assert refused is not None and refused.startswith(b"HTTP/1.1 503"), refused
    assert b"too many connections" in refused
    deadline = time.monotonic() + 5
    while not tight.log_lines("client_connections_refused") and time.monotonic() < deadline:
        time.sleep(0.05)
    (line, *_) = tight.log_lines("client_connections_refused")
    assert line["over_cap"] >= 1 or line["slow_headers"] >= 1


# --- answer size (#27.9) -------------------------------------------------------------------


def test_a_whole_answer_over_the_cap_escalates_and_a_stream_passes(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.reset()
    path = tmp_path / "config.toml"
    path.write_text(
        f'[providers.small]\ntype = "openai"\nbase_url = "{fake.url}"\napi_key = "k"\n'
        "max_answer_bytes = 4096\n"
        + BASE.replace("{url}", fake.url)
        + '[models.first]\nprovider = "small"\nmodel_id = "m-big"\n'
        '[[rules]]\nname = "big-first"\nwhen = { always = true }\n'
        'then = { primary = "first", cascade = ["cheap"] }\n'
        "[cascade]\nmax_cooldown_secs = 0\n"
    )
    fake.default("m-big", Reply(text="word " * 4000))  # 20 KB of text
    daemon = Daemon(path).start()
    try:
        whole = daemon.post(CHAT)
        streamed = json.dumps({**CHAT, "stream": True}).encode()
        kind = {"Content-Type": "application/json"}
        stream = call(daemon, "POST", "/v1/chat/completions", kind, streamed)
    finally:
        daemon.stop()
    status, headers, body = whole
    assert status == 200 and headers["x-pirouter-model"] == "cheap", body
    (line, *_) = [x for x in daemon.log_lines() if x["chain"][0].startswith("first:")]
    assert line["chain"] == ["first:escalated_http_error", "cheap:ok"]
    status, headers, body = stream
    assert status == 200 and headers["x-pirouter-model"] == "first"
    assert body.count(b"word") == 4000


# --- file modes (#27.10) ---------------------------------------------------------------------


def test_unsafe_modes_are_warned_and_the_ledger_is_private(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("client-key-1\n")
    keys.chmod(0o644)
    path = tmp_path / "config.toml"
    ledger = tmp_path / "book" / "ledger.db"
    path.write_text(
        f'[server]\napi_keys_file = "{keys}"\n[ledger]\npath = "{ledger}"\n'
        + BASE.replace("{url}", fake.url)
    )
    path.chmod(0o666)
    from typer.testing import CliRunner

    from pirouter_py.cli import app

    result = CliRunner().invoke(app, ["check-config", "-c", str(path)])
    assert result.exit_code == 0
    assert "can be changed by other users (mode 666)" in result.stdout
    assert f"chmod 600 {path}" in result.stdout
    assert f"{keys} can be read by other users (mode 644)" in result.stdout
    daemon = Daemon(path).start()
    try:
        status, _, _ = daemon.post(CHAT, Authorization="Bearer client-key-1")
        assert status == 200
    finally:
        daemon.stop()
    assert any("can be changed by other users" in line for line in daemon.stderr)
    made = sorted(p for p in ledger.parent.iterdir())
    assert made and all((p.stat().st_mode & 0o777) == 0o600 for p in made), [
        (p.name, oct(p.stat().st_mode)) for p in made
    ]


# --- the drain (#27.12) ---------------------------------------------------------------------


def test_the_drain_is_bounded_and_cut_clients_get_an_error_in_their_protocol(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.reset()
    path = tmp_path / "config.toml"
    path.write_text(
        "[server]\nshutdown_timeout_secs = 1\n"
        + BASE.replace("{url}", fake.url)
        + '[[rules]]\nname = "to"\nwhen = { header = { name = "x-to", any_value = true } }\n'
        'then = { primary = "$header:x-to" }\n'
    )
    fake.default("m-cheap", Reply(text="tick " * 200, chunk_delay=0.1))  # 20 s of stream
    fake.default("m-mid", Reply(delay=15))  # a whole answer that takes 15 s
    daemon = Daemon(path).start()
    whole: list[Any] = []
    waiting = threading.Thread(target=lambda: whole.append(daemon.post(CHAT, **{"x-to": "mid"})))
    waiting.start()
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps({**CHAT, "stream": True}),
        headers={"content-type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 200
    first = response.readline()  # the stream is under way
    assert first.startswith(b"data: ")
    stopped = time.monotonic()
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    rest = response.read()
    conn.close()
    waiting.join(10)
    code = daemon.stop()
    took = time.monotonic() - stopped
    assert code == 0
    assert took < 1 + 2 * 1.0 + 1.0, took  # the timeout, the cut, and a margin: not 2x
    assert b"shutting down" in rest and rest.rstrip().endswith(b"data: [DONE]"), rest[-400:]
    errors = [json.loads(x[6:]) for x in rest.split(b"\n") if x.startswith(b'data: {"error"')]
    assert errors and "shutdown_timeout_secs" in errors[0]["error"]["message"]
    ((status, headers, body),) = whole  # the whole answer still waited for: a 503, in JSON
    assert status == 503 and headers["retry-after"] == "1"
    assert "shutdown_timeout_secs" in body["error"]["message"]
    ledger = tmp_path / "data" / "pirouter" / "ledger.db"
    db = sqlite3.connect(ledger)
    statuses = sorted(r[0] for r in db.execute("SELECT status FROM requests"))
    db.close()
    assert statuses == ["shutdown", "shutdown"]


# --- continue_on_cut = false -------------------------------------------------------------------


def test_a_rule_that_wants_exactness_ends_a_cut_stream_with_an_error(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.reset()
    path = tmp_path / "config.toml"
    path.write_text(
        BASE.replace("{url}", fake.url) + '[[rules]]\nname = "exact"\nwhen = { always = true }\n'
        'then = { primary = "cheap", cascade = ["mid"], continue_on_cut = false }\n'
    )
    fake.script("m-cheap", Reply(kind="cut", text="one two three four five six", chunks=4))
    daemon = Daemon(path).start()
    try:
        status, _, raw = call(
            daemon,
            "POST",
            "/v1/chat/completions",
            {"Content-Type": "application/json"},
            json.dumps({**CHAT, "stream": True}).encode(),
        )
    finally:
        daemon.stop()
    assert status == 200
    assert b'data: {"error"' in raw and raw.rstrip().endswith(b"data: [DONE]")
    assert fake.models_called() == ["m-cheap"]  # nobody was asked to continue
