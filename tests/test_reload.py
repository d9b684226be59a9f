"""Reloading the config: SIGHUP or an edited file; an invalid file keeps the old config; requests
in flight finish on the config they started with."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import Daemon, FakeUpstream, Reply

BASE = """
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.cheap]
provider = "fake"
model_id = "m-cheap"
[models.mid]
provider = "fake"
model_id = "m-mid"
"""
PIN_MID = '[[rules]]\nname = "pin-mid"\nwhen = { always = true }\nthen = { primary = "mid" }\n'


def ask(daemon: Daemon) -> tuple[str, Any]:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
        headers={"content-type": "application/json"},
    )
    response = conn.getresponse()
    model = response.getheader("x-pirouter-model") or ""
    body = json.loads(response.read())
    conn.close()
    return model, body


def wait_for(daemon: Daemon, event: str, count: int = 1, timeout: float = 8.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = daemon.log_lines(event)
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"no {event} log line")


@pytest.fixture
def running(fake: FakeUpstream, tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    fake.reset()
    path = tmp_path / "config.toml"
    path.write_text(BASE.replace("{url}", fake.url))
    daemon = Daemon(path).start()
    yield daemon, path
    daemon.stop()


def test_sighup_reloads(running: tuple[Daemon, Path]) -> None:
    daemon, path = running
    assert ask(daemon)[0] == "cheap"
    path.write_text(path.read_text() + PIN_MID)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    (line,) = wait_for(daemon, "config_reloaded")
    assert (line["models"], line["rules"]) == (2, 1)
    assert ask(daemon)[0] == "mid"


def test_an_invalid_file_is_rejected_and_the_old_config_serves(
    running: tuple[Daemon, Path],
) -> None:
    daemon, path = running
    path.write_text(
        path.read_text().replace('model_id = "m-mid"', 'model_id = "m-mid"\nquality = "stronk"')
    )
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    (line,) = wait_for(daemon, "config_reload_rejected")
    assert line["problems"] == [
        f'{path}:12: models.mid.quality: "stronk" is not one of basic, standard, strong, premium'
    ]
    assert ask(daemon)[0] == "cheap"
    assert daemon.proc.poll() is None


def test_an_edited_file_is_picked_up_without_a_signal(running: tuple[Daemon, Path]) -> None:
    daemon, path = running
    path.write_text(path.read_text() + PIN_MID)
    os.utime(path, (time.time() + 5, time.time() + 5))  # a new mtime even on coarse clocks
    wait_for(daemon, "config_reloaded")
    assert ask(daemon)[0] == "mid"


def reload_mid_request(daemon: Daemon, fake: FakeUpstream, path: Path, new_text: str) -> Any:
    """Send a request the upstream answers in 1 s; while it waits, write `new_text` to the config
    and SIGHUP; return the request's (model, body) once it is answered."""
    fake.script("m-cheap", Reply(text="old config answer", delay=1.0))
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(first=ask(daemon)))
    thread.start()
    deadline = time.monotonic() + 5
    while not fake.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    path.write_text(new_text)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(daemon, "config_reloaded")
    thread.join(10)
    return result["first"]


def test_requests_in_flight_finish_on_their_config(
    running: tuple[Daemon, Path], fake: FakeUpstream
) -> None:
    daemon, path = running
    new = path.read_text().replace('model_id = "m-cheap"', 'model_id = "m-cheap-v2"')
    model, body = reload_mid_request(daemon, fake, path, new)
    assert model == "cheap" and body["choices"][0]["message"]["content"] == "old config answer"
    ask(daemon)
    assert fake.models_called() == ["m-cheap", "m-cheap-v2"]


def test_a_request_in_flight_keeps_its_whole_snapshot_to_its_ledger_row(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Config, cascade and live view are swapped as one: the request that started under the old
    config is priced with its catalog and stored under its [ledger] settings, the next one under
    the new config's."""
    import sqlite3

    fake.reset()
    ledger = tmp_path / "ledger.db"
    path = tmp_path / "config.toml"
    old = BASE.replace("{url}", fake.url).replace(
        'model_id = "m-cheap"', 'model_id = "m-cheap"\ninput_per_m = 1.0\noutput_per_m = 1.0'
    )
    pin = PIN_MID.replace("mid", "cheap")  # whatever the prices: the same model both times
    path.write_text(f'[ledger]\npath = "{ledger}"\nstore_prompts = false\n' + old + pin)
    daemon = Daemon(path).start()
    try:
        new = path.read_text().replace("store_prompts = false", "store_prompts = true")
        new = new.replace("input_per_m = 1.0", "input_per_m = 1000.0")
        _, body = reload_mid_request(daemon, fake, path, new)
        assert body["choices"][0]["message"]["content"] == "old config answer"
        ask(daemon)
    finally:
        daemon.stop()
    db = sqlite3.connect(ledger)
    rows = db.execute("SELECT id, input_tokens, cost_usd FROM requests ORDER BY ts_ms").fetchall()
    stored = {r[0] for r in db.execute("SELECT request_id FROM prompts")}
    db.close()
    (first, first_in, first_cost), (second, second_in, second_cost) = rows
    assert first_in > 0 and second_in > 0
    assert first_cost < first_in * 2 / 1e6  # $1/M in, $1/M out: the old catalog
    assert second_cost >= second_in * 1000 / 1e6  # $1000/M in: the new one
    assert first not in stored and second in stored  # store_prompts off, then on


class DefaultDaemon(Daemon):
    """`pirouter run` with no --config: on the built-in default until a file appears at the
    platform's config path (`config`, under $XDG_CONFIG_HOME)."""

    def __init__(self, config: Path) -> None:
        home = config.parent.parent
        super().__init__(config, env={"XDG_CONFIG_HOME": str(home), "PIROUTER_CONFIG": ""})

    def config_args(self) -> tuple[str, ...]:
        return ()


def health(daemon: Daemon) -> Any:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/health")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body


def test_a_daemon_on_the_built_in_default_loads_the_file_when_it_appears(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """`pirouter run` before `pirouter init`: the file init writes at the platform's path is
    picked up without a restart (SIGHUP before it exists changes nothing)."""
    fake.reset()
    path = tmp_path / "xdg" / "pirouter" / "config.toml"
    daemon = DefaultDaemon(path).start()
    try:
        assert health(daemon)["config"] == "<built-in default>"
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        (skipped,) = wait_for(daemon, "config_reload_skipped")
        assert skipped["watching"] == str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BASE.replace("{url}", fake.url))
        (line,) = wait_for(daemon, "config_reloaded", timeout=15)
        assert (line["path"], line["was"], line["models"]) == (
            str(path),
            "<built-in default>",
            2,
        )
        assert health(daemon)["config"] == str(path)
        assert ask(daemon)[0] == "cheap"
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()
