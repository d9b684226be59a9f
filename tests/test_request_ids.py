"""Request ids: unique, and random enough (64 bits after the second they were made) that one
request's id tells nothing of another's (feedback and kept responses are found by them); in
time order, so the ledger's indexes on them grow at their end; safe in headers, logs, the ledger
and the ids derived from them (`chatcmpl-<id>`, `msg_<id>`, `resp_<id>`)."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from pirouter_py.server.middleware import new_request_id
from tests.fakes import Daemon, FakeUpstream

ID = re.compile(r"[0-9a-f]{24}")  # the second (32 bits), then 64 random bits; lower-case hex


def sequential(ids: list[str]) -> int:
    """How many ids' random parts are the one before plus a small step (a counter's, however
    offset)."""
    numbers = [int(i[8:], 16) for i in ids]
    return sum(0 < b - a < 1 << 20 for a, b in itertools.pairwise(numbers))


def test_ids_are_unique_random_hex_in_time_order() -> None:
    before = int(time.time())
    ids = [new_request_id() for _ in range(20_000)]
    after = int(time.time())
    assert all(ID.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert sequential(ids) == 0
    # the first 8 digits are the second it was made, so ids made later sort after
    assert all(before <= int(i[:8], 16) <= after for i in ids)
    assert new_request_id()[:8] >= max(ids)[:8]
    # no part of the random 16 digits is shared by all: every digit of every position varies
    for position in range(8, 24):
        assert len({i[position] for i in ids}) == 16, position


def test_a_forked_process_draws_ids_of_its_own() -> None:
    """Ids drawn in batches: a child process must not hand out the ids its parent will."""
    new_request_id()  # a batch in the parent, taken in part
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, json.dumps([new_request_id() for _ in range(50)]).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        theirs = json.loads(pipe.read())
    os.waitpid(child, 0)
    ours = [new_request_id() for _ in range(50)]
    assert not set(theirs) & set(ours)


CONFIG = """
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.m]
provider = "fake"
model_id = "m"
"""


@pytest.fixture(scope="module")
def daemon(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("ids")
    path = folder / "config.toml"
    ledger = folder / "ledger.db"
    path.write_text(f'[ledger]\npath = "{ledger}"\n' + CONFIG.replace("{url}", fake.url))
    process = Daemon(path).start()
    process.ledger = ledger  # type: ignore[attr-defined]
    yield process
    assert process.stop() == 0


@pytest.mark.usefixtures("clean_fake")
def test_the_daemon_gives_every_request_an_unguessable_id(daemon: Any) -> None:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    ids, bodies = [], []
    paths = ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/api/chat", "/nowhere"]
    for n in range(100):
        path = paths[n % len(paths)]
        body: dict[str, Any] = {"model": "auto", "stream": False, "max_tokens": 16}
        if path == "/v1/responses":
            body["input"] = "hi"
        else:
            body["messages"] = [{"role": "user", "content": "hi"}]
        conn.request(
            "POST", path, body=json.dumps(body), headers={"content-type": "application/json"}
        )
        response = conn.getresponse()
        bodies.append((path, response.status, json.loads(response.read())))
        ids.append(response.getheader("x-pirouter-request-id") or "")
    conn.close()
    assert all(ID.fullmatch(i) for i in ids), ids[:3]  # errors (the 404s) have one too
    assert len(set(ids)) == len(ids) and sequential(ids) == 0
    derived = {  # (an OpenAI upstream's own id passes through to an OpenAI client)
        "/v1/chat/completions": lambda b: b["pirouter"]["request_id"] in ids,
        "/v1/messages": lambda b: b["id"] == f"msg_{b['pirouter']['request_id']}",
        "/v1/responses": lambda b: b["id"] == f"resp_{b['pirouter']['request_id']}",
    }
    for path, status, body in bodies:
        if path in derived:
            assert status == 200 and derived[path](body), body
    answered = {b["pirouter"]["request_id"] for p, s, b in bodies if p in derived}
    deadline, rows = time.monotonic() + 10, set()
    while time.monotonic() < deadline and not answered <= rows:
        db = sqlite3.connect(Path(daemon.ledger))
        rows = {r for (r,) in db.execute("SELECT id FROM requests")}
        db.close()
        time.sleep(0.05)
    assert answered <= rows  # the ledger keeps them as the client saw them
