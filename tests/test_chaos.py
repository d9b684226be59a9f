"""Faults injected by an independent tool: PyPI's llmock, scripted over its chaos admin API, plays
the first model (OpenAI and Anthropic formats); our own fake plays the next. Each fault, streamed
and whole: the client gets the next model's answer, the ledger has the row with the failed attempt,
and the daemon stays up. (Ollama's format, which llmock does not speak, is covered by
`test_faults.py` with our own fakes.)"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes import Daemon, FakeUpstream, LLMock
from tests.test_faults import send, streamed_text

CONFIG = """
[ledger]
path = "{ledger}"
[providers.mock-openai]
type = "openai"
base_url = "{mock}/v1"
api_key = "k"
request_timeout_secs = 1
[providers.mock-anthropic]
type = "anthropic"
base_url = "{mock}/anthropic"
api_key = "k"
request_timeout_secs = 1
[providers.fake]
type = "openai"
base_url = "{fake}"
api_key = "k"
[models.first-openai]
provider = "mock-openai"
model_id = "gpt-4o-mini"
[models.first-anthropic]
provider = "mock-anthropic"
model_id = "claude-sonnet-4-5"
[models.next]
provider = "fake"
model_id = "next"
[[rules]]
name = "first-then-next"
when = { header = { name = "x-first", any_value = true } }
then = { primary = "$header:x-first", cascade = ["next"] }
[cascade]
on_truncated = true
max_cooldown_secs = 0  # every case starts on the first model again
"""
# Faults of the whole response (either mode), then faults of a stream (stream mode only).
HTTP_FAULTS: dict[str, dict[str, Any]] = {
    "429-retry-after": {"type": "fail", "status": 429, "retry_after": 1},
    "500": {"type": "fail", "status": 500},
    "502": {"type": "fail", "status": 502},
    "503": {"type": "fail", "status": 503},
    "529-overloaded": {"type": "fail", "status": 529},
    "delay-past-timeout": {"type": "delay", "seconds": 1.5},
}
STREAM_FAULTS: dict[str, dict[str, Any]] = {
    "slow-first-token": {"type": "slow_first_token", "seconds": 1.5},
    "disconnect": {"type": "stream_fault", "kind": "disconnect", "after_chunks": 1},
    "truncate": {"type": "stream_fault", "kind": "truncate", "after_chunks": 1},
    "stall": {"type": "stream_fault", "kind": "stall", "after_chunks": 1, "stall_seconds": 1.5},
    "malformed": {"type": "stream_fault", "kind": "malformed", "after_chunks": 1},
}
CASES = [
    (fault, stream, kind)
    for kind in ("openai", "anthropic")
    for fault, stream in [(f, False) for f in HTTP_FAULTS]
    + [(f, True) for f in HTTP_FAULTS]
    + [(f, True) for f in STREAM_FAULTS]
]
INBOUND = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


@pytest.fixture(scope="module")
def mock() -> Iterator[LLMock]:
    server = LLMock().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(
    mock: LLMock, fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    folder = tmp_path_factory.mktemp("chaos")
    path = folder / "config.toml"
    text = CONFIG.replace("{ledger}", str(folder / "ledger.db"))
    path.write_text(text.replace("{mock}", mock.url).replace("{fake}", fake.url))
    process = Daemon(path).start()
    process.ledger = folder / "ledger.db"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10  # the start-up probe's listings are not the tests' requests
    while sum("  provider " in line for line in process.stderr) < 3:
        assert time.monotonic() < deadline, process.stderr
        time.sleep(0.05)
    yield process
    assert process.stop() == 0


@pytest.mark.usefixtures("clean_fake")
@pytest.mark.parametrize(
    ("fault", "stream", "kind"),
    CASES,
    ids=[f"{k}-{f}-{'stream' if s else 'whole'}" for f, s, k in CASES],
)
def test_llmock_fault(daemon: Daemon, mock: LLMock, fault: str, stream: bool, kind: str) -> None:
    mock.reset()
    mock.script({**HTTP_FAULTS, **STREAM_FAULTS}[fault])
    # the client speaks the other format half the time: the fault crosses a translation too
    inbound = kind if fault in HTTP_FAULTS else ("anthropic" if kind == "openai" else "openai")
    conn, response = send(daemon, f"first-{kind}", stream=stream, path=INBOUND[inbound])
    body = response.read()
    conn.close()
    assert response.status == 200, body
    assert response.getheader("x-pirouter-model") == "next"
    text = streamed_text(body) if stream else body.decode()
    assert "Hello from the fake upstream." in text
    assert len(mock.requests()) == 1  # the fault really fired upstream
    line = daemon.wait_log(response.getheader("x-pirouter-request-id") or "")
    assert line["chain"][-1] == "next:ok" and len(line["chain"]) == 2
    assert line["chain"][0].startswith(f"first-{kind}:escalated_")


def test_every_chaos_case_left_a_ledger_row_and_the_daemon_is_up(daemon: Daemon) -> None:
    deadline = time.monotonic() + 10
    rows: list[Any] = []
    while time.monotonic() < deadline:
        db = sqlite3.connect(daemon.ledger)  # type: ignore[attr-defined]
        rows = db.execute("SELECT status, final_model, cascade_path FROM requests").fetchall()
        db.close()
        if len(rows) >= len(CASES):
            break
        time.sleep(0.1)
    assert len(rows) == len(CASES)
    assert {(status, final) for status, final, _ in rows} == {("ok", "next")}
    assert daemon.proc is not None and daemon.proc.poll() is None
