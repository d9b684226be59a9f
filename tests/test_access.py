"""Client keys and Host checks: unit level, and end to end against the daemon."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pirouter_py.config import ServerConfig, load_config
from pirouter_py.errors import PirouterError
from pirouter_py.server import access
from tests.fakes import Daemon, FakeUpstream

KEY = "client-key-0123456789"
CONFIG = """
[server]
api_keys_env = ["PIROUTER_TEST_CLIENT_KEY"]
allowed_hosts = ["pirouter.internal"]
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.m]
provider = "fake"
model_id = "m"
"""


def test_keys_from_environment_and_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# clients\nalpha\n\n  beta  \n")
    server = ServerConfig(api_keys_env=["K1"], api_keys_file=str(keys))
    assert access.load_keys(server, {"K1": "one"}) == (
        (b"one", "K1"),
        (b"alpha", "keys:2"),
        (b"beta", "keys:4"),
    )
    keys.write_text("alice: sk-alice\nbob:sk-bob\nanon-key\n")
    assert access.load_keys(ServerConfig(api_keys_file=str(keys)), {}) == (
        (b"sk-alice", "alice"),
        (b"sk-bob", "bob"),
        (b"anon-key", "keys:3"),
    )
    keys.write_text("# clients\nalpha\n\n  beta  \n")
    with pytest.raises(PirouterError, match="names K1, which is not set"):
        access.load_keys(server, {})
    keys.write_text("# nothing\n")
    with pytest.raises(PirouterError, match="holds no key"):
        access.load_keys(ServerConfig(api_keys_file=str(keys)), {})


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        ({"authorization": "Bearer beta"}, True),
        ({"authorization": "bearer beta"}, True),
        ({"x-api-key": "alpha"}, True),
        ({"authorization": "Bearer gamma"}, False),
        ({"x-api-key": ""}, False),
        ({}, False),
        ({"authorization": "Basic beta"}, False),
    ],
)
def test_key_check(headers: dict[str, str], ok: bool) -> None:
    keys = ((b"alpha", "a"), (b"beta", "b"))
    assert access.key_ok(keys, headers) is ok
    assert access.key_name(keys, headers) == (
        None if not ok else "a" if "alpha" in str(headers) else "b"
    )


@pytest.mark.parametrize(
    ("header", "authority"),
    [
        ("127.0.0.1:11435", ("127.0.0.1", 11435)),
        ("localhost", ("localhost", 80)),  # no port: http's
        ("[::1]:8080", ("::1", 8080)),
        ("LocalHost:1", ("localhost", 1)),
        ("evil.example:11435", ("evil.example", 11435)),
        ("127.0.0.1:11435@evil.example", None),  # userinfo: not a Host header
        ("user@127.0.0.1:11435", None),
        ("127.0.0.1:11435/x", None),
        ("::1", None),  # an IPv6 address needs its brackets
        ("[::1", None),
        ("[evil.example]:1", None),
        ("localhost:", None),
        ("localhost:0", None),
        ("localhost:65536", None),
        ("local host:1", None),
        ("", None),
    ],
)
def test_host_authorities(header: str, authority: tuple[str, int] | None) -> None:
    assert access.authority(header) == authority
    assert access.host_name(header) == ("" if authority is None else authority[0])


def test_allowed_authorities_hold_the_port_the_daemon_listens_on() -> None:
    allowed = access.allowed_authorities("127.0.0.1", ["Pirouter.Internal", "proxy.lan:80"], 11435)
    assert allowed == {
        ("localhost", 11435),
        ("127.0.0.1", 11435),
        ("::1", 11435),
        ("pirouter.internal", 11435),
        ("proxy.lan", 80),  # a port given with the name: that one
    }
    assert "proxy.lan" in access.allowed_hosts("127.0.0.1", ["proxy.lan:80"])


def test_literal_key_in_a_readable_file_is_a_warning(write_config: Callable[[str], Path]) -> None:
    path = write_config(
        '[providers.openai]\napi_key = "sk-literal"\n[models.m]\n'
        'provider = "openai"\nmodel_id = "x"\n'
    )
    path.chmod(0o644)
    warnings = [str(w) for w in load_config(path).warnings]
    assert warnings == [
        f"{path}: holds a literal api_key and is readable by others (mode 644); "
        f"run `chmod 600 {path}`, or use api_key_env"
    ]
    path.chmod(0o600)
    assert load_config(path).warnings == ()


@pytest.fixture(scope="module")
def guarded(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    path = tmp_path_factory.mktemp("access") / "config.toml"
    path.write_text(CONFIG.replace("{url}", fake.url))
    process = Daemon(path, env={"PIROUTER_TEST_CLIENT_KEY": KEY}).start()
    yield process
    assert process.stop() == 0


def call(
    daemon: Daemon, method: str, path: str, headers: dict[str, str], body: object = None
) -> tuple[int, bytes]:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    conn.request(
        method,
        path,
        body=json.dumps(body) if body is not None else None,
        headers={"content-type": "application/json", **headers},
    )
    response = conn.getresponse()
    out = response.status, response.read()
    conn.close()
    return out


CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def test_requests_need_a_key(guarded: Daemon) -> None:
    status, body = call(guarded, "POST", "/v1/chat/completions", {}, CHAT)
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
    status, body = call(
        guarded, "POST", "/v1/messages", {"x-api-key": "wrong"}, {**CHAT, "max_tokens": 5}
    )
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
    assert call(guarded, "GET", "/v1/models", {"authorization": "Bearer nope"})[0] == 401
    assert call(guarded, "GET", "/metrics", {})[0] == 401
    assert call(guarded, "GET", "/healthz", {}) == (200, b"ok")  # health stays open


def test_a_right_key_in_either_header_passes(guarded: Daemon) -> None:
    assert (
        call(guarded, "POST", "/v1/chat/completions", {"authorization": f"Bearer {KEY}"}, CHAT)[0]
        == 200
    )
    assert call(guarded, "GET", "/v1/models", {"x-api-key": KEY})[0] == 200


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
        ("LOCALHOST:{port}", 200),
        ("[::1]:{port}", 200),
        ("pirouter.internal:{port}", 200),
        ("evil.example", 403),
        ("evil.example:{port}", 403),
        ("127.0.0.1.nip.io:8080", 403),
        ("127.0.0.1:{port}@evil.example", 403),
        ("127.0.0.1:{port}/x", 403),
        ("localhost:1", 403),  # another port: another daemon's, or a rebound page's
        ("[::1]:9", 403),
        ("localhost", 403),  # no port means 80, where the daemon does not listen
        ("pirouter.internal", 403),
        ("", 403),
    ],
)
def test_foreign_host_headers_are_refused(guarded: Daemon, host: str, status: int) -> None:
    port = guarded.url.rsplit(":", 1)[1]
    code, body = call(
        guarded, "GET", "/v1/models", {"host": host.format(port=port), "x-api-key": KEY}
    )
    assert code == status, body
    if status == 403:
        assert json.loads(body)["error"]["type"] == "permission_error"


def test_a_refused_host_is_told_in_the_client_protocol(guarded: Daemon) -> None:
    bad = {"host": "localhost:1", "x-api-key": KEY}
    code, body = call(guarded, "POST", "/v1/messages", bad, {**CHAT, "max_tokens": 5})
    assert code == 403
    assert json.loads(body)["type"] == "error"  # Anthropic's shape
    assert json.loads(body)["error"]["type"] == "permission_error"
    code, body = call(guarded, "GET", "/healthz", {"host": "localhost:1"})
    assert code == 403


def raw_status(daemon: Daemon, head: bytes) -> bytes:
    """The status line the daemon answers a request head sent as is."""
    host, port = daemon.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head)
        return conn.recv(200).split(b"\r\n", 1)[0]


def test_host_headers_over_a_raw_socket(guarded: Daemon) -> None:
    """Heads no HTTP library would send: an empty Host, none at all (HTTP/1.0: the daemon
    cannot tell which name the client used), two of them."""
    port = guarded.url.rsplit(":", 1)[1].encode()
    key = b"x-api-key: " + KEY.encode() + b"\r\n"
    ok = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:" + port + b"\r\n" + key + b"\r\n"
    assert raw_status(guarded, ok) == b"HTTP/1.1 200 OK"
    for head in (
        b"GET /v1/models HTTP/1.1\r\nHost:\r\n" + key + b"\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: \r\n" + key + b"\r\n",
        b"GET /v1/models HTTP/1.0\r\n" + key + b"\r\n",
    ):
        assert raw_status(guarded, head).split(b" ")[1] == b"403", head
    two = b"GET /v1/models HTTP/1.1\r\nHost: a\r\nHost: 127.0.0.1:" + port + b"\r\n\r\n"
    assert raw_status(guarded, two).split(b" ")[1] == b"400"


def test_missing_client_key_stops_the_start(fake: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.replace("{url}", fake.url))
    env = {k: v for k, v in os.environ.items() if k != "PIROUTER_TEST_CLIENT_KEY"}
    with pytest.raises(
        RuntimeError, match="api_keys_env names PIROUTER_TEST_CLIENT_KEY, which is not set"
    ):
        Daemon(path, env=env).start(timeout=10)


def test_cors_is_off_unless_configured(daemon_plain: Daemon) -> None:
    """A page of another origin gets nothing (not even a read), preflight or not."""
    status, headers = cors_call(daemon_plain, "GET", "/v1/models", {"Origin": "http://a.test"})
    assert status == 403 and "access-control-allow-origin" not in headers
    assert (
        cors_call(
            daemon_plain,
            "OPTIONS",
            "/v1/chat/completions",
            {"Origin": "http://a.test", "Access-Control-Request-Method": "POST"},
        )[0]
        == 403
    )
    assert cors_call(daemon_plain, "GET", "/v1/models", {})[0] == 200  # no Origin: not a page


def test_cors_for_configured_origins(fake: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    text = CONFIG.replace("{url}", fake.url).replace(
        'allowed_hosts = ["pirouter.internal"]',
        'allowed_hosts = ["pirouter.internal"]\ncors_origins = ["http://app.test"]',
    )
    path.write_text(text)
    process = Daemon(path, env={"PIROUTER_TEST_CLIENT_KEY": KEY}).start()
    try:
        status, headers = cors_call(
            process,
            "OPTIONS",
            "/v1/chat/completions",
            {
                "Origin": "http://app.test",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert status == 204  # no key needed for a preflight
        assert headers["access-control-allow-origin"] == "http://app.test"
        assert headers["access-control-allow-headers"] == "authorization, content-type"
        status, headers = cors_call(
            process,
            "POST",
            "/v1/chat/completions",
            {"Origin": "http://app.test", "authorization": f"Bearer {KEY}"},
            CHAT,
        )
        assert status == 200 and headers["access-control-allow-origin"] == "http://app.test"
        assert "x-pirouter-model" in headers["access-control-expose-headers"]
        status, headers = cors_call(
            process, "GET", "/v1/models", {"Origin": "http://evil.test", "x-api-key": KEY}
        )
        assert status == 403 and "access-control-allow-origin" not in headers
    finally:
        process.stop()


@pytest.fixture
def daemon_plain(fake: FakeUpstream, tmp_path: Path) -> Iterator[Daemon]:
    path = tmp_path / "config.toml"
    path.write_text(
        '[providers.fake]\ntype = "openai"\nbase_url = "' + fake.url + '"\n'
        'api_key = "k"\n[models.m]\nprovider = "fake"\nmodel_id = "m"\n'
    )
    process = Daemon(path).start()
    yield process
    process.stop()


def cors_call(
    daemon: Daemon, method: str, path: str, headers: dict[str, str], body: object = None
) -> tuple[int, dict[str, str]]:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    conn.request(
        method,
        path,
        body=json.dumps(body) if body is not None else None,
        headers={"content-type": "application/json", **headers},
    )
    response = conn.getresponse()
    response.read()
    out = response.status, {k.lower(): v for k, v in response.getheaders()}
    conn.close()
    return out


def keyed(fake: FakeUpstream, tmp_path: Path, keys_text: str, extra: str = "") -> Path:
    """A config with client keys from a file (`keys_text`), a ledger, and the fake's model."""
    fake.reset()
    keys = tmp_path / "keys"
    keys.write_text(keys_text)
    keys.chmod(0o600)
    path = tmp_path / "config.toml"
    path.write_text(
        f'[server]\napi_keys_file = "{keys}"\n[ledger]\npath = "{tmp_path / "ledger.db"}"\n'
        + extra
        + CONFIG.split("[providers.fake]", 1)[1]
        .join(["[providers.fake]", ""])
        .replace("{url}", fake.url)
    )
    return path


def test_each_request_is_attributed_to_its_client_key(fake: FakeUpstream, tmp_path: Path) -> None:
    """Named keys (#28): the ledger records whose key a request came with, and `stats --by
    client` and the dashboard break requests down by it."""
    from typer.testing import CliRunner

    from pirouter_py.cli import app

    path = keyed(fake, tmp_path, "alice: key-alice-0001\nbob: key-bob-0002\nkey-anon-0003\n")
    # the operator's key reads everyone's breakdown (a client key sees its own: tests/test_scope)
    path.write_text(path.read_text().replace("[server]\n", '[server]\nadmin_keys_env = ["OPS"]\n'))
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    daemon = Daemon(path, env={"OPS": "key-operator-0004"}).start()
    try:
        for key in ("key-alice-0001", "key-alice-0001", "key-bob-0002", "key-anon-0003"):
            status, _, _ = daemon.post(body, Authorization=f"Bearer {key}")
            assert status == 200
        status, _, _ = daemon.post({}, "/v1/chat/completions", Authorization="Bearer nope")
        assert status == 401
        host, port = daemon.url.removeprefix("http://").split(":")
        deadline = time.monotonic() + 10
        summary: dict[str, Any] = {"stats": {"requests": 0}}
        while summary["stats"]["requests"] < 4:  # the writer commits a quarter second later
            assert time.monotonic() < deadline, summary
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/ui/api/summary", headers={"x-api-key": "key-operator-0004"})
            summary = json.loads(conn.getresponse().read())
            conn.close()
            time.sleep(0.1)
    finally:
        daemon.stop()
    assert {k["key"]: k["requests"] for k in summary["by_client"]} == {
        "alice": 2,
        "bob": 1,
        "keys:3": 1,
    }
    result = CliRunner().invoke(app, ["stats", "--by", "client", "--json", "-c", str(path)])
    assert result.exit_code == 0, result.output
    groups = {g["key"]: g["requests"] for g in json.loads(result.stdout)["groups"]}
    assert groups == {"alice": 2, "bob": 1, "keys:3": 1}


def test_a_client_whose_budget_is_spent_is_refused_and_the_others_are_not(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """`[budget.clients.<name>]` (#28): alice's daily budget is spent by her first request; her
    next gets 429 (action = "refuse"), bob's still answer. The spend outlives a restart (seeded
    from the ledger by client)."""
    path = keyed(
        fake,
        tmp_path,
        "alice: key-alice-0001\nbob: key-bob-0002\n",
        '[budget]\naction = "refuse"\n[budget.clients.alice]\ndaily_usd = 0.000001\n',
    )
    path.write_text(path.read_text() + "input_per_m = 1.0\noutput_per_m = 2.0\n")
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    alice, bob = "Bearer key-alice-0001", "Bearer key-bob-0002"
    daemon = Daemon(path).start()
    try:
        assert daemon.post(body, Authorization=alice)[0] == 200
        status, headers, answer = daemon.post(body, Authorization=alice)
        assert status == 429, answer
        assert "budget.clients.alice.daily_usd" in answer["error"]["message"]
        assert int(headers["retry-after"]) > 0
        assert daemon.post(body, Authorization=bob)[0] == 200
    finally:
        daemon.stop()
    again = Daemon(path).start()
    try:
        assert again.post(body, Authorization=alice)[0] == 429
        assert again.post(body, Authorization=bob)[0] == 200
    finally:
        again.stop()
