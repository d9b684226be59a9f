"""Client keys and Host checks: unit level, and end to end against the daemon."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

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
    assert access.load_keys(server, {"K1": "one"}) == (b"one", b"alpha", b"beta")
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
    assert access.key_ok((b"alpha", b"beta"), headers) is ok


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:11435", "127.0.0.1"),
        ("localhost", "localhost"),
        ("[::1]:8080", "::1"),
        ("LocalHost:1", "localhost"),
        ("evil.example:11435", "evil.example"),
        ("::1", "::1"),
    ],
)
def test_host_names(header: str, name: str) -> None:
    assert access.host_name(header) == name


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
        ("evil.example", 403),
        ("127.0.0.1.nip.io:8080", 403),
        ("localhost:1", 200),
        ("pirouter.internal", 200),
        ("[::1]:9", 200),
    ],
)
def test_foreign_host_headers_are_refused(guarded: Daemon, host: str, status: int) -> None:
    code, body = call(guarded, "GET", "/v1/models", {"host": host, "x-api-key": KEY})
    assert code == status
    if status == 403:
        assert json.loads(body)["error"]["type"] == "permission_error"


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
