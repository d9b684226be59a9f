"""Fault injection across provider types: each failure of the first model, in each of the three
upstream formats, streamed and whole: the client gets the next model's answer, the ledger has
the row, the daemon stays up."""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from typing import Any

import pytest

from tests.fakes import Daemon, FakeUpstream, Reply
from tests.test_daemon import EXPECTED_OUTCOME, FAIL

CONFIG = """
[ledger]
path = "{url}"
[providers.up-openai]
type = "openai"
base_url = "{url}"
api_key = "k"
request_timeout_secs = 2
[providers.up-anthropic]
type = "anthropic"
base_url = "{url}"
api_key = "k"
request_timeout_secs = 2
[providers.up-ollama]
type = "ollama"
base_url = "{url}"
request_timeout_secs = 2
[models.first-openai]
provider = "up-openai"
model_id = "f-openai"
[models.first-anthropic]
provider = "up-anthropic"
model_id = "f-anthropic"
[models.first-ollama]
provider = "up-ollama"
model_id = "f-ollama"
[models.next]
provider = "up-openai"
model_id = "next"
[[rules]]
name = "first-then-next"
when = { header = { name = "x-first", any_value = true } }
then = { primary = "$header:x-first", cascade = ["next"] }
[cascade]
on_short_response = true
min_output_tokens = 3
on_marker = "<escalate/>"
on_truncated = true
on_empty = true
max_cooldown_secs = 0
"""
KINDS = ("openai", "anthropic", "ollama")
FAULTS = {
    **FAIL,
    "529": Reply(kind="status", status=529),
    "garbage-stream": Reply(kind="malformed"),
}
OUTCOMES = {
    **EXPECTED_OUTCOME,
    "529": "escalated_http_error",
    "garbage-stream": "escalated_http_error",
}


@pytest.fixture(scope="module")
def daemon(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("faults")
    path = folder / "config.toml"
    text = CONFIG.replace('path = "{url}"', f'path = "{folder / "ledger.db"}"')
    path.write_text(text.replace("{url}", fake.url))
    process = Daemon(path).start()
    process.ledger = folder / "ledger.db"  # type: ignore[attr-defined]
    yield process
    assert process.stop() == 0


@pytest.mark.usefixtures("clean_fake")
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("kind", KINDS)
def test_fault(daemon: Any, fake: FakeUpstream, kind: str, fault: str, stream: bool) -> None:
    fake.script(f"f-{kind}", FAULTS[fault])
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(
            {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        ),
        headers={"content-type": "application/json", "x-first": f"first-{kind}"},
    )
    response = conn.getresponse()
    body = response.read()
    rid = response.getheader("x-pirouter-request-id")
    conn.close()
    assert response.status == 200, body
    assert response.getheader("x-pirouter-model") == "next"
    assert fake.models_called() == [f"f-{kind}", "next"]
    text = body.decode()
    assert "Hello from the fake upstream." in (
        text
        if not stream
        else "".join(
            json.loads(b[6:])["choices"][0]["delta"].get("content") or ""
            for b in body.split(b"\n\n")
            if b.startswith(b"data: {") and json.loads(b[6:])["choices"]
        )
    )
    line = daemon.wait_log(rid)
    assert line["chain"] == [f"first-{kind}:{OUTCOMES[fault]}", "next:ok"]


def test_every_fault_left_a_ledger_row(daemon: Any) -> None:
    expected = len(KINDS) * len(FAULTS) * 2
    deadline = time.monotonic() + 10
    rows: list[Any] = []
    while time.monotonic() < deadline:  # the writer commits in the background (WAL: readable)
        db = sqlite3.connect(daemon.ledger)
        rows = db.execute("SELECT status, final_model FROM requests").fetchall()
        db.close()
        if len(rows) >= expected:
            break
        time.sleep(0.1)
    assert len(rows) == expected
    assert set(rows) == {("ok", "next")}
