"""A team gateway (#28, the part built): two pirouter instances sharing one Redis (a real
`redis-server` the test starts on a loopback port, in its temp dir) share one daily budget, one
rpm limit and one session pin; Redis killed mid-run, both go on with their own state, no request
fails, and `/health` says why it is degraded."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.fakes import Daemon, FakeUpstream, Reply

REDIS = shutil.which("redis-server")
pytestmark = need("redis-server", REDIS, "apt-get install redis-server")

BASE = """
[state]
url = "redis://127.0.0.1:{port}/0"
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.cheap]
provider = "fake"
model_id = "m-cheap"
quality = "standard"
input_per_m = 1.0
output_per_m = 2.0
{cheap}
[models.mid]
provider = "fake"
model_id = "m-mid"
quality = "standard"
input_per_m = 2.0
output_per_m = 4.0
"""
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
CHEAP_FIRST = (
    '[[rules]]\nname = "cheap-first"\nwhen = { always = true }\n'
    'then = { primary = "cheap", cascade = ["mid"] }\n'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Redis:
        assert REDIS is not None
        self.proc = subprocess.Popen(
            [
                REDIS,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(self.folder)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path).start()
    yield server
    server.stop()


def pair(
    tmp_path: Path,
    fake: FakeUpstream,
    redis: Redis,
    extra: str = "",
    cheap: str = "",
    auth: str = 'api_key = "k"',
    env: dict[str, str] | None = None,
) -> tuple[Daemon, Daemon]:
    made = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        path = folder / "config.toml"
        text = BASE.format(port=redis.port, url=fake.url, cheap=cheap)
        text = text.replace('api_key = "k"', auth)
        path.write_text(text + f'[ledger]\npath = "{folder / "ledger.db"}"\n' + extra)
        made.append(Daemon(path, env=env).start())
    return made[0], made[1]


def health(daemon: Daemon) -> dict[str, Any]:
    with urllib.request.urlopen(daemon.url + "/health", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def metrics(daemon: Daemon) -> str:
    with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as response:
        return response.read().decode()  # type: ignore[no-any-return]


def settle() -> None:
    time.sleep(0.5)  # a few syncs (every 0.1 s)


def test_two_instances_share_one_daily_budget(
    fake: FakeUpstream, redis: Redis, tmp_path: Path
) -> None:
    fake.reset()
    a, b = pair(tmp_path, fake, redis, '[budget]\ndaily_usd = 0.000001\naction = "refuse"\n')
    try:
        assert health(a)["state"]["shared"] is True
        assert a.post(CHAT)[0] == 200  # spends past the budget
        settle()
        status, _, body = b.post(CHAT)
        assert status == 429, body  # b never spent a cent itself
        assert "budget.daily_usd" in body["error"]["message"]
        assert a.post(CHAT)[0] == 429
    finally:
        a.stop()
        b.stop()


def test_two_instances_share_one_rpm_limit(
    fake: FakeUpstream, redis: Redis, tmp_path: Path
) -> None:
    fake.reset()
    a, b = pair(tmp_path, fake, redis, CHEAP_FIRST, cheap="rpm = 2")
    try:
        first = a.post(CHAT)[1]["x-pirouter-model"]
        settle()
        second = b.post(CHAT)[1]["x-pirouter-model"]
        settle()
        # each instance took one of cheap's 2 requests a minute: both now route around it
        third = a.post(CHAT)[1]["x-pirouter-model"]
        fourth = b.post(CHAT)[1]["x-pirouter-model"]
    finally:
        a.stop()
        b.stop()
    assert (first, second, third, fourth) == ("cheap", "cheap", "mid", "mid")


def test_two_instances_share_one_tpm_limit_with_the_tokens_really_used(
    fake: FakeUpstream, redis: Redis, tmp_path: Path
) -> None:
    """cheap allows 1,000 tokens a minute. a's request was estimated at a few tokens but used
    1,000 (the upstream's usage): b counts the true-up, not the estimate, and routes around."""
    fake.reset()
    fake.script("m-cheap", Reply(usage=(900, 100)))
    a, b = pair(tmp_path, fake, redis, CHEAP_FIRST, cheap="tpm = 1000")
    try:
        first = a.post(CHAT)[1]["x-pirouter-model"]
        settle()
        second = b.post(CHAT)[1]["x-pirouter-model"]
    finally:
        a.stop()
        b.stop()
    assert (first, second) == ("cheap", "mid")


def test_a_session_stays_on_its_model_across_instances(
    fake: FakeUpstream, redis: Redis, tmp_path: Path
) -> None:
    """The first turn's cheap model fails and mid answers, so the session is pinned to mid; the
    next turns land on the other instance, and then back, and stay on mid."""
    fake.reset()
    fake.script("m-cheap", Reply(kind="status", status=503))
    a, b = pair(
        tmp_path, fake, redis, "[affinity]\nenabled = true\n[cascade]\nmax_cooldown_secs = 0\n"
    )
    turn = {"x-pirouter-session": "team-session-1"}
    try:
        assert a.post(CHAT, **turn)[1]["x-pirouter-model"] == "mid"
        settle()
        assert b.post(CHAT, **turn)[1]["x-pirouter-model"] == "mid"
        settle()
        assert a.post(CHAT, **turn)[1]["x-pirouter-model"] == "mid"
        other = b.post(CHAT, **{"x-pirouter-session": "team-session-2"})
        assert other[1]["x-pirouter-model"] == "cheap"  # a new session: the policy's choice
    finally:
        a.stop()
        b.stop()


def test_redis_killed_mid_run_degrades_to_local_state_without_a_failed_request(
    fake: FakeUpstream, redis: Redis, tmp_path: Path
) -> None:
    fake.reset()
    a, b = pair(tmp_path, fake, redis)
    try:
        statuses = [d.post(CHAT)[0] for d in (a, b, a, b)]
        assert "pirouter_shared_state_reachable 1.0" in metrics(a)
        redis.stop()
        statuses += [d.post(CHAT)[0] for d in (a, b, a, b) for _ in range(3)]
        settle()
        statuses += [d.post(CHAT)[0] for d in (a, b)]
        now = health(a)
        assert "pirouter_shared_state_reachable 0.0" in metrics(a)
    finally:
        a.stop()
        b.stop()
    assert statuses == [200] * len(statuses)
    assert now["status"] == "degraded" and now["state"]["shared"] is False
    assert now["reason"].startswith("shared state unreachable")
    assert a.log_lines("shared_state_unreachable")


def test_a_cooldown_set_on_one_instance_holds_on_the_other(
    fake: FakeUpstream, redis: Redis, tmp_path: Path
) -> None:
    """cheap fails on a (503) and cools there; b, which never saw it fail, tries mid first."""
    fake.reset()
    fake.script("m-cheap", Reply(kind="status", status=503))
    a, b = pair(tmp_path, fake, redis, CHEAP_FIRST)
    try:
        assert a.post(CHAT)[1]["x-pirouter-model"] == "mid"
        settle()
        fake.seen.clear()
        assert b.post(CHAT)[1]["x-pirouter-model"] == "mid"
        assert fake.models_called() == ["m-mid"]  # cheap, cooling, was not asked first
        cooling = health(b)["models"]["cheap"]
        assert cooling["cooling"] and "503" in str(cooling["last_error"])
    finally:
        a.stop()
        b.stop()


def test_a_key_resting_on_one_instance_rests_on_the_other(
    fake: FakeUpstream, redis: Redis, tmp_path: Path
) -> None:
    """Key A is throttled (429) when a uses it; a rests it and answers with key B. b, which
    never used key A, would reach it within two requests, but skips it: A rests on b too."""
    fake.reset()
    env = {"KEY_A": "key-aaaa", "KEY_B": "key-bbbb"}
    auth = 'api_key_env = ["KEY_A", "KEY_B"]'
    a, b = pair(tmp_path, fake, redis, auth=auth, env=env)
    try:
        fake.refused_keys["key-aaaa"] = 429
        for _ in range(2):  # a's rotation reaches key A within two requests
            assert a.post(CHAT)[0] == 200
        used = [s.headers["Authorization"] for s in fake.seen]
        assert used.count("Bearer key-aaaa") == 1  # then it rested
        settle()
        fake.seen.clear()
        for _ in range(2):
            assert b.post(CHAT)[0] == 200
        assert [s.headers["Authorization"] for s in fake.seen] == ["Bearer key-bbbb"] * 2
        assert health(b)["keys"]["fake"]["KEY_A"]["cooling"] is True
    finally:
        fake.refused_keys.clear()
        a.stop()
        b.stop()
