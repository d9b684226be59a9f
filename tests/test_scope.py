"""The authorization model, walked whole: every endpoint that reads or scores recorded requests, by
every kind of caller (server/scope.py; the README's table).

Two client keys (alice, bob) and an operator key on one daemon with `store_prompts` on: alice and
bob each make requests, then each caller reads the dashboard's data and live feed, scores answers
and continues stored Responses. A client sees and scores its own alone; the operator, everyone's;
a caller without a key, nothing.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import Daemon, FakeUpstream

KEYS = {"alice": "key-alice-1111", "bob": "key-bob-2222", "ops": "key-operator-3333"}
CONFIG = """
[server]
api_keys_file = "{keys}"
admin_keys_env = ["PIROUTER_OPS_KEY"]
[ledger]
path = "{ledger}"
store_prompts = true
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.m]
provider = "fake"
model_id = "m"
"""
CALLERS = ("alice", "bob", "ops", "nobody")


@pytest.fixture(scope="module")
def daemon(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    where = tmp_path_factory.mktemp("scope")
    keys = where / "keys"
    keys.write_text(f"alice: {KEYS['alice']}\nbob: {KEYS['bob']}\n")
    keys.chmod(0o600)
    config = where / "config.toml"
    text = CONFIG.format(keys=keys, ledger=where / "ledger.db", url=fake.url)
    config.write_text(text)
    config.chmod(0o600)
    started = Daemon(config, env={"PIROUTER_OPS_KEY": KEYS["ops"]}).start()
    yield started
    started.stop()


def call(
    daemon: Daemon, method: str, path: str, who: str, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    headers = {"content-type": "application/json"}
    if who in KEYS:
        headers["authorization"] = f"Bearer {KEYS[who]}"
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        raw = response.read()
        found = {k.lower(): v for k, v in response.getheaders()}
        return response.status, found, json.loads(raw) if raw else None
    finally:
        conn.close()


def ask(daemon: Daemon, who: str, text: str) -> str:
    """A chat request as `who`; its request id."""
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    status, headers, _ = call(daemon, "POST", "/v1/chat/completions", who, body)
    assert status == 200
    return headers["x-pirouter-request-id"]


@pytest.fixture(scope="module")
def made(daemon: Daemon) -> dict[str, list[str]]:
    """alice's two requests and bob's one, written to the ledger."""
    ids = {
        "alice": [ask(daemon, "alice", "alice's secret one"), ask(daemon, "alice", "alice two")],
        "bob": [ask(daemon, "bob", "bob's secret plan")],
    }
    deadline = time.monotonic() + 10
    while True:  # the writer commits a quarter second after the answers
        _, _, found = call(daemon, "GET", "/ui/api/requests", "ops")
        if len(found["requests"]) >= 3:
            return ids
        assert time.monotonic() < deadline, found
        time.sleep(0.1)


# caller -> the clients whose requests it may see
SEES = {"alice": {"alice"}, "bob": {"bob"}, "ops": {"alice", "bob"}, "nobody": set()}


@pytest.mark.parametrize("who", CALLERS)
def test_newest_requests_with_prompts(daemon: Daemon, made: dict[str, list[str]], who: str) -> None:
    status, _, body = call(daemon, "GET", "/ui/api/requests", who)
    if who == "nobody":
        assert status == 401
        return
    assert status == 200
    seen = {r["id"] for r in body["requests"]}
    assert seen == {rid for client in SEES[who] for rid in made[client]}
    prompts = " ".join(r["prompt"] or "" for r in body["requests"])
    for client, secret in (("alice", "alice's secret"), ("bob", "bob's secret")):
        assert (secret in prompts) == (client in SEES[who]), prompts


@pytest.mark.parametrize("who", CALLERS)
def test_summary_counts_and_breakdowns(
    daemon: Daemon, made: dict[str, list[str]], who: str
) -> None:
    status, _, body = call(daemon, "GET", "/ui/api/summary?window=24h", who)
    if who == "nobody":
        assert status == 401
        return
    assert status == 200
    expected = {client: len(made[client]) for client in SEES[who]}
    assert body["stats"]["requests"] == sum(expected.values())
    assert {k["key"]: k["requests"] for k in body["by_client"]} == expected


@pytest.mark.parametrize("who", CALLERS)
def test_state(daemon: Daemon, who: str) -> None:
    status, _, body = call(daemon, "GET", "/ui/api/state", who)
    if who == "nobody":
        assert status == 401
        return
    assert status == 200 and "m" in body["catalog"]
    if who == "ops":
        assert body["scope"] is None and {"config", "ledger", "requests", "keys"} <= set(body)
    else:  # nothing of the daemon's other clients, nor where its files are
        assert body["scope"] == who
        assert not {"config", "ledger", "requests", "in_flight", "keys", "sessions"} & set(body)


def live_lines(daemon: Daemon, who: str, during: Any, wait_s: float = 3.0) -> list[dict[str, Any]]:
    """The live feed's rows `who` receives while `during()` runs."""
    host, port = daemon.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=wait_s)
    try:
        sock.sendall(
            f"GET /ui/api/live HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {KEYS[who]}\r\n\r\n".encode()
        )
        got = b""
        while b": connected" not in got:
            got += sock.recv(65536)
        during()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                got += sock.recv(65536)
            except TimeoutError:
                break
    finally:
        sock.close()
    return [json.loads(line[6:]) for line in got.decode().splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("who", ["alice", "ops"])
def test_the_live_feed(daemon: Daemon, made: dict[str, list[str]], who: str) -> None:
    fresh: dict[str, str] = {}

    def during() -> None:
        fresh["bob"] = ask(daemon, "bob", "bob live")
        fresh["alice"] = ask(daemon, "alice", "alice live")

    rows = live_lines(daemon, who, during, wait_s=1.5)
    assert {r["id"] for r in rows} == {fresh[c] for c in SEES[who] if c in fresh}


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("whose", ["alice", "bob", "none"])
def test_feedback(daemon: Daemon, made: dict[str, list[str]], who: str, whose: str) -> None:
    """Scored by its own client or the operator; anyone else, and an id that does not exist,
    get a 404 and nothing is recorded."""
    rid = made[whose][0] if whose != "none" else "0" * 24
    status, _, body = call(daemon, "POST", "/v1/feedback", who, {"request_id": rid, "score": 1})
    if who == "nobody":
        assert status == 401
    elif whose in SEES[who]:
        assert status == 200 and body["recorded"] is True
    else:
        assert status == 404, body
        assert body["error"]["type"] == "not_found_error"


def test_feedback_refused_is_not_recorded(
    daemon: Daemon, made: dict[str, list[str]], tmp_path: Path
) -> None:
    """bob's answer scored by alice: nothing reaches the ledger (the operator reads its labels)."""
    rid = made["bob"][0]
    status, _, _ = call(daemon, "POST", "/v1/feedback", "alice", {"request_id": rid, "score": 0})
    assert status == 404
    import sqlite3

    book = Path(daemon.config).parent / "ledger.db"
    db = sqlite3.connect(book)
    try:
        scores = [
            s for (s,) in db.execute("SELECT score FROM feedback WHERE request_id = ?", (rid,))
        ]
    finally:
        db.close()
    assert 0.0 not in scores, scores


@pytest.mark.parametrize("who", ["bob", "ops"])
def test_a_stored_response_is_its_keys_alone(daemon: Daemon, who: str) -> None:
    """Stored Responses were already scoped per key; the table says so, and this keeps it: to any
    other key, the operator's too (reading is not continuing another's conversation), the id is
    unknown, a 400 as OpenAI answers an unknown previous_response_id."""
    body = {"model": "auto", "input": "remember: blue", "store": True}
    status, _, first = call(daemon, "POST", "/v1/responses", "alice", body)
    assert status == 200
    follow = {"model": "auto", "input": "colour?", "previous_response_id": first["id"]}
    status, _, _ = call(daemon, "POST", "/v1/responses", "alice", follow)
    assert status == 200
    status, _, error = call(daemon, "POST", "/v1/responses", who, follow)
    assert status == 400 and error["error"]["param"] == "previous_response_id", error


def test_a_client_key_named_as_the_operator_key_is_refused(tmp_path: Path) -> None:
    """A keys-file line whose name is the operator key's variable would share its records."""
    from pirouter_py.config import ServerConfig
    from pirouter_py.errors import PirouterError
    from pirouter_py.server import scope

    keys = tmp_path / "keys"
    keys.write_text("alice: key-alice\nOPS: key-impostor\n")
    server = ServerConfig(api_keys_file=str(keys), admin_keys_env=["OPS"])
    with pytest.raises(PirouterError, match=r"OPS names a client key .* and an operator key"):
        scope.load(server, {"OPS": "key-operator"})
    fine = ServerConfig(api_keys_file=str(keys), admin_keys_env=["ADMIN"])
    every, operators = scope.load(fine, {"ADMIN": "key-operator"})
    assert operators == ((b"key-operator", "ADMIN"),) and len(every) == 3
    with pytest.raises(PirouterError, match="admin_keys_env names ADMIN, which is not set"):
        scope.load(fine, {})
