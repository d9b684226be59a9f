"""Health-aware routing: cooldowns from live failures, chains reordered, retries of a model."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pirouter_py.config import parse_config
from pirouter_py.live.health import Health
from pirouter_py.live.traffic import Traffic
from pirouter_py.routing.decide import decide
from pirouter_py.types import ChatRequest, ToolSpec, text_message
from tests.fakes import Daemon, FakeUpstream, Reply


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_cooldowns_double_cap_honour_retry_after_and_reset() -> None:
    clock = Clock()
    health = Health(5, 60, clock)
    assert [health.failed("a") for _ in range(6)] == [5, 10, 20, 40, 60, 60]
    assert health.cooling("a") and not health.cooling("b")
    clock.now += 59.9
    assert health.cooling("a")
    clock.now += 0.2
    assert not health.cooling("a")
    assert health.failed("b", retry_after=120) == 120  # never shorter than Retry-After
    health.succeeded("a")
    assert health.failed("a") == 5  # a success ended the streak
    assert health.snapshot()["b"] == {
        "cooling": True,
        "cooldown_left_s": 120.0,
        "failures": 1,
        "last_error": None,
        "down": False,
    }
    assert Health(5, 0, clock).failed("a", retry_after=9) == 0  # max 0: cooldowns off


def test_a_model_down_stays_down_after_its_cooldown_until_it_answers() -> None:
    clock = Clock()
    health = Health(5, 60, clock)
    assert health.failed("a", error="refused", down=True) == 5
    health.failed("a", error="503")  # a later failure of another kind does not end it
    clock.now += 60.1
    assert not health.cooling("a") and health.down("a")
    assert health.snapshot()["a"]["down"] and health.snapshot()["a"]["last_error"] == "503"
    health.succeeded("a")
    assert not health.down("a") and health.snapshot() == {}
    off = Health(5, 0, clock)  # cooldowns off: a model is still reported down, never cooling
    assert off.failed("a", error="refused", down=True) == 0
    assert off.down("a") and not off.cooling("a") and not Health(5, 0, clock).down("a")


CHAIN = """
[providers.p]
type = "openai"
base_url = "http://127.0.0.1:9"
api_key = "k"
[models.a]
provider = "p"
model_id = "a"
[models.b]
provider = "p"
model_id = "b"
[models.c]
provider = "p"
model_id = "c"
[models.d]
provider = "p"
model_id = "d"
[[rules]]
name = "r"
when = { has_tools = false }
then = { primary = "a", cascade = ["b", "c", "d"] }
[[rules]]
name = "ac"
when = { has_tools = true }
then = { primary = "a", cascade = ["c"] }
"""


def test_cooling_models_go_last_never_away() -> None:
    config = parse_config(CHAIN, "t")[0]
    health = Health(5, 60, Clock())
    traffic = Traffic(config, health)
    hi = ChatRequest("auto", (text_message("user", "hi"),))
    tools = ChatRequest("auto", (text_message("user", "hi"),), (ToolSpec("t"),))
    assert decide(config, hi, {}, live=traffic).chain == ("a", "b", "c", "d")
    health.failed("a")
    health.failed("c")
    ordered = decide(config, hi, {}, live=traffic)
    assert ordered.chain == ("b", "d", "a", "c")
    assert ordered.notes == (
        "tried last: a (cooling down after a failure); c (cooling down after a failure)",
    )
    every = decide(config, tools, {}, live=traffic)
    assert every.chain == ("a", "c")  # all cooling: order kept


CONFIG = """
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.cheap]
provider = "fake"
model_id = "m-cheap"
quality = "basic"
[models.mid]
provider = "fake"
model_id = "m-mid"
quality = "standard"
[cascade]
cooldown_secs = 30
retries = {retries}
"""


def start(fake: FakeUpstream, tmp_path: Path, retries: int = 0) -> Daemon:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.replace("{url}", fake.url).replace("{retries}", str(retries)))
    return Daemon(path).start()


def ask(daemon: Daemon) -> tuple[int, dict[str, str], Any]:
    return daemon.post({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
def fresh(fake: FakeUpstream) -> Iterator[FakeUpstream]:
    fake.reset()
    yield fake


def test_a_failing_model_is_skipped_while_it_cools(fresh: FakeUpstream, tmp_path: Path) -> None:
    daemon = start(fresh, tmp_path)
    try:
        fresh.script("m-cheap", Reply(kind="status", status=503))
        status, headers, _ = ask(daemon)
        assert status == 200 and fresh.models_called() == ["m-cheap", "m-mid"]
        status, headers, body = ask(daemon)  # cheap is cooling: mid first, cheap kept last
        assert status == 200 and headers["x-pirouter-model"] == "mid"
        assert fresh.models_called() == ["m-cheap", "m-mid", "m-mid"]
        with __import__("urllib.request").request.urlopen(daemon.url + "/health") as response:
            models = json.loads(response.read())["models"]
        assert models["cheap"]["cooling"] and models["cheap"]["failures"] == 1
        # mid fails now: the cooling model is still the last option, and it answers
        fresh.script("m-mid", Reply(kind="status", status=500))
        status, headers, body = ask(daemon)
        assert status == 200 and headers["x-pirouter-model"] == "cheap"
        assert [a["alias"] for a in body["pirouter"]["attempts"]] == ["mid", "cheap"]
    finally:
        daemon.stop()


def test_retries_try_the_same_model_again_first(fresh: FakeUpstream, tmp_path: Path) -> None:
    daemon = start(fresh, tmp_path, retries=2)
    try:
        fresh.script("m-cheap", Reply(kind="status", status=503), Reply(kind="status", status=502))
        status, _, body = ask(daemon)
        assert status == 200 and fresh.models_called() == ["m-cheap"] * 3
        assert [a["outcome"]["kind"] for a in body["pirouter"]["attempts"]] == [
            "escalated_http_error",
            "escalated_http_error",
            "ok",
        ]
        fresh.seen.clear()  # cheap answered in the end, which ended its cooldown
        fresh.script("m-cheap", Reply(kind="status", status=429, headers={"Retry-After": "0.3"}))
        started = time.monotonic()
        status, _, body = ask(daemon)  # retried after the upstream's (short) Retry-After
        assert status == 200 and fresh.models_called() == ["m-cheap", "m-cheap"]
        assert time.monotonic() - started >= 0.3
    finally:
        daemon.stop()


def test_status_lists_cooling_models(fresh: FakeUpstream, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pirouter_py.cli import app

    daemon = start(fresh, tmp_path)
    try:
        fresh.script("m-cheap", Reply(kind="status", status=503))
        ask(daemon)
        port = daemon.url.rsplit(":", 1)[1]
        config = tmp_path / "status.toml"
        config.write_text(
            f'[server]\nbind = "127.0.0.1:{port}"\n[providers.ollama]\n'
            '[models.m]\nprovider = "ollama"\nmodel_id = "x"\n'
        )
        out = CliRunner().invoke(app, ["status", "-c", str(config)]).stdout
        assert (
            "  cooling:   cheap (30s left, 1 failures)" in out or "  cooling:   cheap (29s" in out
        )
    finally:
        daemon.stop()


def health_of(daemon: Daemon) -> dict[str, Any]:
    with urllib.request.urlopen(daemon.url + "/health", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def wait_health(daemon: Daemon, what: str, check: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not check(body := health_of(daemon)):
        assert time.monotonic() < deadline, f"/health never {what}: {body}"
        time.sleep(0.05)
    return body


def test_health_says_degraded_until_the_provider_answers_then_ok_without_a_request(
    tmp_path: Path,
) -> None:
    """Issue #37: with no Ollama, /health said ok once the start-up probe's cooldown ran out,
    while every request failed."""
    # bound, not listening: connections are refused until the fake listens on it
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    path = tmp_path / "config.toml"
    path.write_text(
        f'[providers.ollama]\nbase_url = "http://127.0.0.1:{sock.getsockname()[1]}"\n'
        '[models.m]\nprovider = "ollama"\nmodel_id = "m-cheap"\n'
        "[cascade]\ncooldown_secs = 1\nmax_cooldown_secs = 1\n"
    )
    upstream = FakeUpstream()
    daemon = Daemon(path).start()
    try:
        wait_health(daemon, "degraded", lambda h: h["status"] == "degraded")
        # the cooldown has run out, and the provider has still not answered
        after = wait_health(daemon, "past the cooldown", lambda h: not h["models"]["m"]["cooling"])
        assert after["status"] == "degraded" and after["models"]["m"]["down"], after
        assert after["reason"].startswith(
            "no model can answer now: m (down until it answers: provider ollama refused: "
        )
        upstream.start(sock)
        ok = wait_health(daemon, "ok", lambda h: h["status"] == "ok")
        assert ok["models"] == {} and "reason" not in ok
        assert "/api/tags" in upstream.listings and upstream.seen == []  # probed, never asked
        assert daemon.log_lines("provider_answering")[0]["provider"] == "ollama"
    finally:
        assert daemon.stop() == 0
        upstream.stop()
        sock.close()


def test_a_refused_connection_puts_the_model_down_at_once(tmp_path: Path) -> None:
    """A request whose provider refuses the connection marks its model down (no probe needed:
    the first background probe comes only after the 30 s cooldown)."""
    upstream = FakeUpstream()
    upstream.start()
    path = tmp_path / "config.toml"
    path.write_text(
        f'[providers.local]\ntype = "openai"\nbase_url = "{upstream.url}"\n'
        '[models.m]\nprovider = "local"\nmodel_id = "m-cheap"\n[cascade]\ncooldown_secs = 30\n'
    )
    daemon = Daemon(path).start()
    try:
        assert ask(daemon)[0] == 200 and health_of(daemon)["models"] == {}
        upstream.stop()
        assert ask(daemon)[0] == 502
        models = health_of(daemon)["models"]
        assert models["m"]["down"] and "connection failed" in models["m"]["last_error"], models
    finally:
        assert daemon.stop() == 0
