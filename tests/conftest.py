"""Shared fixtures: real config files in temp dirs, and an isolated user environment.

Tests that drive a program pytest does not install (Chromium, PostgreSQL, Redis, the agent CLIs,
llama-server, groff, systemd-analyze) are marked with `need`: where it is missing they skip,
saying how to install it. With PIROUTER_REQUIRE_ALL set (`.ci/run` sets it), nothing may skip:
a skip of any test is a failure, so CI runs every test or fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from pirouter_py.config import Config, LoadedConfig, load_config
from tests.fakes import Daemon, FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
REQUIRE_ALL = "PIROUTER_REQUIRE_ALL"  # set by .ci/run: every test runs, a skip fails


def need(program: str, found: object, install: str) -> pytest.MarkDecorator:
    """Mark tests that drive `program`; `found` is where it is (None or empty when missing).
    Missing, they skip with `install`, the command that installs it (fail, under REQUIRE_ALL)."""
    why = f"needs {program}, not found here; install: {install}"
    return pytest.mark.skipif(not found, reason=why)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under REQUIRE_ALL, a skipped test (a missing program, a mount refused) is a failure."""
    report = yield
    if report.skipped and os.environ.get(REQUIRE_ALL) and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        why = str(reason).removeprefix("Skipped: ")
        report.longrepr = f"{REQUIRE_ALL} is set, so no test may skip: {why}"
    return report


# The mini config of v0.1's tests/routing_smoke.rs (reference §2.11).
MINI = """
[providers.anthropic]
api_key = "x"
base_url = "https://api.anthropic.com"

[models.haiku]
provider = "anthropic"
model_id = "claude-haiku-4-5-20251001"

[models.sonnet]
provider = "anthropic"
model_id = "claude-sonnet-4-6"

[models.opus]
provider = "anthropic"
model_id = "claude-opus-4-6"

[[rules]]
name = "tool-use"
when = { has_tools = true }
then = { primary = "sonnet", cascade = ["opus"] }

[[rules]]
name = "long-context"
when = { tokens_in_gt = 1000 }
then = { primary = "sonnet", cascade = ["opus"] }

[[rules]]
name = "default"
when = { always = true }
then = { primary = "haiku", cascade = ["sonnet"] }
"""


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No test sees the developer's config, data dir or API keys."""
    home = tmp_path_factory.mktemp("home")
    for name in (
        "PIROUTER_CONFIG",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "PIROUTER_LOG",
        "RUST_LOG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))  # the run file
    return home


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write TOML text to a config.toml in a temp dir and return its path."""

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def example() -> LoadedConfig:
    return load_config(EXAMPLE)


@pytest.fixture
def example_config(example: LoadedConfig) -> Config:
    return example.config


@pytest.fixture
def mini_config(write_config: Callable[[str], Path]) -> Iterator[Config]:
    yield load_config(write_config(MINI)).config


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    """A scripted upstream speaking all three formats, one per test module."""
    upstream = FakeUpstream()
    upstream.start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def daemon(
    fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Daemon]:
    """The real daemon on the module's CONFIG ({url} is the fake, {key} the module's KEY)."""
    text = request.module.CONFIG.replace("{url}", fake.url)
    path = tmp_path_factory.mktemp("daemon") / "config.toml"
    path.write_text(text.replace("{key}", getattr(request.module, "KEY", "")))
    process = Daemon(path).start()
    yield process
    assert process.stop() == 0


@pytest.fixture
def clean_fake(fake: FakeUpstream) -> None:
    """Each test starts with no scripts and no recorded requests."""
    fake.reset()
