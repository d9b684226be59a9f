"""Keys that never surprise: a provider with no key configured sends no credentials (a keyless
LM Studio, vLLM or llama.cpp server just works); a key variable that is unset leaves that
provider's models out of routing, with the reason shown by `route`, warned by `check-config`
and at `run` start, and the request goes to the next model instead of a fatal 502."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.config import parse_config
from tests.fakes import Daemon, FakeUpstream

CONFIG = """
[providers.cloud]
type = "openai"
base_url = "{url}"
api_key_env = "PIROUTER_TEST_CLOUD_KEY"
[providers.lmstudio]
type = "openai"
base_url = "{url}"
[models.strong]
provider = "cloud"
model_id = "m-strong"
quality = "strong"
input_per_m = 3.0
output_per_m = 15.0
[models.local]
provider = "lmstudio"
model_id = "m-local"
quality = "basic"
[[rules]]
name = "hard-to-strong"
when = {{ prompt_matches = "hard" }}
then = {{ primary = "strong", cascade = ["local"] }}
"""


def write(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(url=url))
    return path


def test_unavailable_models_are_named_with_their_reason() -> None:
    cfg, warnings = parse_config(CONFIG.format(url="http://127.0.0.1:9"), "c.toml", {})
    assert cfg.unavailable({}) == {"strong": "key missing: PIROUTER_TEST_CLOUD_KEY is not set"}
    assert cfg.unavailable({"PIROUTER_TEST_CLOUD_KEY": "k"}) == {}
    [warning] = warnings
    assert (warning.line, warning.key) == (5, "providers.cloud.api_key_env")
    assert "PIROUTER_TEST_CLOUD_KEY is not set: the models of provider `cloud` (strong)" in str(
        warning
    )
    assert (
        parse_config(CONFIG.format(url="http://x:1"), "c.toml", {"PIROUTER_TEST_CLOUD_KEY": "k"})[1]
        == ()
    )


def test_route_and_check_config_say_why(tmp_path: Path) -> None:
    config = write(tmp_path, "http://127.0.0.1:9")
    runner = CliRunner()
    checked = runner.invoke(app, ["check-config", "-c", str(config)])
    assert checked.exit_code == 0
    assert (
        "warnings:  1" in checked.stdout and "PIROUTER_TEST_CLOUD_KEY is not set" in checked.stdout
    )
    # the rule names strong, which cannot be called: the chain goes on with local, saying why
    routed = runner.invoke(app, ["route", "-p", "a hard one", "-c", str(config)])
    assert routed.exit_code == 0, routed.output
    lines = routed.stdout.splitlines()
    assert lines[:2] == ["rule:    hard-to-strong", "primary: local"]
    assert "left out: strong (key missing: PIROUTER_TEST_CLOUD_KEY is not set)" in routed.stdout
    assert "warning:" in routed.stderr and "PIROUTER_TEST_CLOUD_KEY" in routed.stderr
    # the policy drops it too, and the explanation names the reason
    policy = runner.invoke(app, ["route", "-p", "debug this", "-c", str(config)])
    assert "primary: local" in policy.stdout
    assert (
        "strong" in policy.stdout
        and "key missing: PIROUTER_TEST_CLOUD_KEY is not set" in policy.stdout
    )


def test_a_keyless_server_is_called_without_credentials_and_a_missing_key_is_skipped(
    fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.reset()
    monkeypatch.delenv("PIROUTER_TEST_CLOUD_KEY", raising=False)
    config = write(tmp_path, fake.url)
    daemon = Daemon(config, env={"XDG_DATA_HOME": str(tmp_path / "data")}).start()
    try:
        status, headers, body = daemon.post(
            {"model": "auto", "messages": [{"role": "user", "content": "a hard one"}]}
        )
    finally:
        daemon.stop()
    assert status == 200, body
    assert headers["x-pirouter-model"] == "local"
    assert fake.models_called() == ["m-local"]  # strong was never tried: no key to send
    assert "authorization" not in {k.lower() for k in fake.seen[0].headers}
    assert any("PIROUTER_TEST_CLOUD_KEY is not set" in line for line in daemon.stderr)


def test_check_config_json_says_whether_a_key_will_be_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    config = write(tmp_path, "http://127.0.0.1:9")
    for value, expected in ((None, False), ("sk-x", True)):
        if value is None:
            monkeypatch.delenv("PIROUTER_TEST_CLOUD_KEY", raising=False)
        else:
            monkeypatch.setenv("PIROUTER_TEST_CLOUD_KEY", value)
        out = CliRunner().invoke(app, ["check-config", "--json", "-c", str(config)]).stdout
        providers = {p["name"]: p for p in json.loads(out)["providers"]}
        assert providers["cloud"]["api_key_set"] is expected
        assert providers["lmstudio"]["api_key_set"] is False
        assert providers["lmstudio"]["key"] == "no key configured: none is sent"
        assert "sk-x" not in out


def test_a_port_in_use_is_said_once_without_guessing(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = tmp_path / "config.toml"
    config.write_text('[providers.ollama]\n[models.m]\nprovider = "ollama"\nmodel_id = "x"\n')
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pirouter_py", "-c", str(config), "run", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**__import__("os").environ, "XDG_DATA_HOME": str(tmp_path / "data")},
        )
    finally:
        taken.close()
    assert done.returncode == 1
    assert done.stderr.count(f"127.0.0.1:{port}") == 1
    assert "the port is in use (`pirouter status` says whether by a pirouter)" in done.stderr
    assert "another pirouter" not in done.stderr and "Traceback" not in done.stderr


def test_health_is_degraded_while_no_model_can_answer(tmp_path: Path) -> None:
    """The only model's server refuses connections (the built-in default with no Ollama): the
    start-up probe says so on stderr, and from then /health and `status` say degraded and why,
    instead of ok; a request fails over nothing and keeps it so."""
    import json
    import socket
    import urllib.request

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    config = tmp_path / "config.toml"
    config.write_text(
        f'[providers.ollama]\nbase_url = "http://127.0.0.1:{port}"\n'
        '[models.m]\nprovider = "ollama"\nmodel_id = "x"\n'
    )
    daemon = Daemon(config).start()
    try:

        def health() -> dict[str, object]:
            with urllib.request.urlopen(daemon.url + "/health", timeout=10) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]

        deadline = time.monotonic() + 10
        while health()["status"] == "ok" and time.monotonic() < deadline:
            time.sleep(0.05)
        first = health()
        assert first["status"] == "degraded", first
        assert "cooling after: provider ollama refused" in str(first["reason"])
        probed = f"  provider ollama (http://127.0.0.1:{port}): refused, "
        assert any(line.startswith(probed) for line in daemon.stderr), daemon.stderr
        status, _, _ = daemon.post(
            {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert status == 502
        now = health()
        assert now["status"] == "degraded"
        assert str(now["reason"]).startswith("no model can answer now: m (cooling after:")
        bound = tmp_path / "bound.toml"
        daemon_port = daemon.url.rsplit(":", 1)[1]
        bound.write_text(config.read_text() + f'[server]\nbind = "127.0.0.1:{daemon_port}"\n')
        out = CliRunner().invoke(app, ["status", "-c", str(bound)]).stdout
        assert f"is degraded at http://127.0.0.1:{daemon_port}" in out
        assert "  reason:    no model can answer now: m (cooling after:" in out
    finally:
        daemon.stop()
