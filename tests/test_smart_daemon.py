"""Smarter routing end to end: the real daemon, real clients, a real fake upstream and ledger.

Budgets refusing in each client's format, rpm limits under concurrent load, key rotation past a
refused key, and session affinity across a daemon restart.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes import Daemon, FakeUpstream, Reply

BASE = """
[providers.fake]
type = "openai"
base_url = "{url}"
{auth}
[providers.claude]
type = "anthropic"
base_url = "{url}"
api_key = "k"
[models.cheap]
provider = "fake"
model_id = "m-cheap"
quality = "basic"
input_per_m = 1.0
output_per_m = 1.0
{cheap}
[models.other]
provider = "claude"
model_id = "m-other"
quality = "basic"
input_per_m = 2.0
output_per_m = 2.0
{extra}
"""


@pytest.fixture
def fresh(fake: FakeUpstream) -> Iterator[FakeUpstream]:
    fake.reset()
    yield fake
    fake.reset()


def start(
    fake: FakeUpstream,
    tmp_path: Path,
    *,
    auth: str = 'api_key = "k"',
    cheap: str = "",
    extra: str = "",
    env: dict[str, str] | None = None,
) -> Daemon:
    path = tmp_path / "config.toml"
    path.write_text(BASE.format(url=fake.url, auth=auth, cheap=cheap, extra=extra))
    return Daemon(path, env=env).start()


def hello(text: str = "hi") -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}]}


def ledger_rows(daemon: Daemon, query: str) -> list[tuple[Any, ...]]:
    path = daemon.config.parent / "data" / "pirouter" / "ledger.db"
    db = sqlite3.connect(path)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def test_a_spent_budget_refuses_in_each_clients_format(fresh: FakeUpstream, tmp_path: Path) -> None:
    daemon = start(fresh, tmp_path, extra='[budget]\ndaily_usd = 0.000001\naction = "refuse"')
    try:
        status, _, _ = daemon.post(hello())  # spends more than $0.000001: the budget is spent
        assert status == 200
        client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi"}]
            )
        assert "budget.daily_usd budget of $0.00 is spent" in str(caught.value)
        retry = caught.value.response.headers["retry-after"]
        assert 0 < int(retry) <= 86_400
        claude = anthropic.Anthropic(base_url=daemon.url, api_key="x", max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as refused:
            claude.messages.create(
                model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert "resets at" in refused.value.body["error"]["message"]  # type: ignore[index]
        assert fresh.models_called() == ["m-cheap"]  # nothing more went upstream
    finally:
        daemon.stop()
    rows = ledger_rows(daemon, "SELECT status, http_status FROM requests ORDER BY rowid")
    assert rows == [("ok", 200), ("routing_error", 429), ("routing_error", 429)]


def test_downgrade_routes_around_a_models_spent_budget(fresh: FakeUpstream, tmp_path: Path) -> None:
    daemon = start(fresh, tmp_path, cheap="daily_usd = 0.000001")
    try:
        assert daemon.post(hello())[1]["x-pirouter-model"] == "cheap"
        assert daemon.post(hello())[1]["x-pirouter-model"] == "other"
    finally:
        daemon.stop()
    stats = subprocess.run(
        [sys.executable, "-m", "pirouter_py", "--config", str(daemon.config), "stats"],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    burn = stats.stdout.split("budgets (today and this month, local time):\n")[1]
    assert burn.startswith("  models.cheap.daily_usd  $0.00 of $0.00")
    assert burn.rstrip().endswith("SPENT")


def test_rpm_limit_holds_under_concurrent_load(fresh: FakeUpstream, tmp_path: Path) -> None:
    fresh.default("m-cheap", Reply(delay=0.2))  # slow answers: all requests overlap
    daemon = start(fresh, tmp_path, cheap="rpm = 3")
    try:
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda _: daemon.post(hello()), range(12)))
        assert all(status == 200 for status, _, _ in results)
        served = sorted(headers["x-pirouter-model"] for _, headers, _ in results)
        assert served == ["cheap"] * 3 + ["other"] * 9
        assert sorted(fresh.models_called()) == ["m-cheap"] * 3 + ["m-other"] * 9
    finally:
        daemon.stop()


def test_key_rotation_rests_a_refused_key(fresh: FakeUpstream, tmp_path: Path) -> None:
    env = {"KEY_A": "key-aaaa", "KEY_B": "key-bbbb", "KEY_C": "key-cccc"}
    daemon = start(fresh, tmp_path, auth='api_key_env = ["KEY_A", "KEY_B", "KEY_C"]', env=env)
    try:
        for _ in range(3):
            assert daemon.post(hello())[0] == 200
        used = [s.headers["Authorization"] for s in fresh.seen]
        assert sorted(used) == ["Bearer key-aaaa", "Bearer key-bbbb", "Bearer key-cccc"]
        fresh.seen.clear()
        fresh.refused_keys["key-bbbb"] = 401
        fresh.refused_keys["key-cccc"] = 429
        for _ in range(6):
            status, headers, _ = daemon.post(hello())
            assert status == 200 and headers["x-pirouter-model"] == "cheap"
        with urllib.request.urlopen(daemon.url + "/health", timeout=10) as response:
            rested = json.loads(response.read())["keys"]["fake"]
        assert set(rested) == {"KEY_B", "KEY_C"} and rested["KEY_B"]["cooling"]
        used = [s.headers["Authorization"].removeprefix("Bearer ") for s in fresh.seen]
        # Each refused key is tried once, then rests; every request is answered with key A.
        assert used.count("key-bbbb") == 1 and used.count("key-cccc") == 1
        assert used.count("key-aaaa") == 6
        assert "key-" not in "".join(daemon.stderr) + "".join(daemon.stdout)  # never logged
    finally:
        daemon.stop()


def test_affinity_keeps_a_conversation_across_a_restart(
    fresh: FakeUpstream, tmp_path: Path
) -> None:
    extra = "[affinity]\nenabled = true"
    session = {"x-pirouter-session": "conv-1"}
    daemon = start(fresh, tmp_path, extra=extra)
    try:
        assert daemon.post(hello(), **session)[1]["x-pirouter-model"] == "cheap"
        assert daemon.post(hello())[1]["x-pirouter-model"] == "cheap"  # another conversation
        fresh.script("m-cheap", Reply(kind="status", status=503))  # the pinned model fails:
        assert daemon.post(hello(), **session)[1]["x-pirouter-model"] == "other"  # escalated,
        assert daemon.post(hello(), **session)[1]["x-pirouter-model"] == "other"  # and kept
    finally:
        daemon.stop()
    daemon = start(fresh, tmp_path, extra=extra)
    try:  # a restart: sessions come back from the ledger
        assert daemon.post(hello(), **session)[1]["x-pirouter-model"] == "other"
        assert daemon.post(hello())[1]["x-pirouter-model"] == "cheap"
    finally:
        daemon.stop()
    rows = ledger_rows(daemon, "SELECT final_model, pin, session FROM requests ORDER BY rowid")
    assert [(m, p) for m, p, _ in rows] == [
        ("cheap", None),
        ("cheap", None),
        ("other", "hard"),
        ("other", "hard"),
        ("other", "hard"),
        ("cheap", "hard"),
    ]
    assert len({s for _, _, s in rows}) == 2 and "conv-1" not in str(rows)  # hashed
