"""Shadow checks: a request answered by a strong model is asked of the cheapest local model after
the answer went out; its answer, judged by the answer checks and by a judge model, becomes a label
in the ledger's `shadow` table and in `pirouter ledger labels`, never touching the request's
own row. Off by default."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from typer.testing import CliRunner

from pirouter_py.cli import app
from tests.fakes import Daemon, FakeUpstream, Reply

CONFIG = """
[ledger]
path = "{ledger}"
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.local]
provider = "fake"
model_id = "m-local"
quality = "basic"
local = true
[models.big]
provider = "fake"
model_id = "m-big"
quality = "strong"
input_per_m = 3.0
output_per_m = 15.0
[models.judge]
provider = "fake"
model_id = "m-judge"
quality = "basic"
enabled = false
[cascade]
on_empty = true
{learning}
"""
HARD = {"x-pirouter-difficulty": "hard"}  # the policy sends it to big


def shadow_rows(book: Path) -> list[tuple[str, str, float, str]]:
    try:
        db = sqlite3.connect(book)
        try:
            return db.execute(
                "SELECT request_id, alias, score, outcome FROM shadow ORDER BY ts"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []


def wait_rows(book: Path, n: int) -> list[tuple[str, str, float, str]]:
    deadline = time.monotonic() + 10
    while len(rows := shadow_rows(book)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows


def ask(daemon: Daemon, text: str) -> str:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    status, headers, _ = daemon.post(body, **HARD)
    assert status == 200 and headers["x-pirouter-model"] == "big"
    return headers["x-pirouter-request-id"]


def test_shadow_checks_label_the_local_model(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reset()
    book = tmp_path / "ledger.db"
    learning = '[learning]\nshadow_rate = 1.0\nshadow_judge = "judge"\n'
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.replace("{url}", fake.url)
        .replace("{ledger}", str(book))
        .replace("{learning}", learning)
    )
    fake.default("m-big", Reply(text="The capital of France is Paris."))
    fake.script("m-local", Reply(text="Paris."), Reply(text="Lyon."), Reply(text=""))
    fake.script("m-judge", Reply(text="YES"), Reply(text="NO, it names another city"))
    daemon = Daemon(config).start()
    try:
        agreed = ask(daemon, "What is the capital of France?")
        assert wait_rows(book, 1) == [(agreed, "local", 1.0, "ok")]
        differs = ask(daemon, "And the capital of France, again?")
        assert wait_rows(book, 2)[1] == (differs, "local", 0.0, "disagrees")
        empty = ask(daemon, "Once more: the capital of France?")  # the answer check fails
        assert wait_rows(book, 3)[2] == (empty, "local", 0.0, "escalated_empty")
    finally:
        daemon.stop()
    # the judge was asked twice (not for the empty answer), and saw both answers
    judged = [s for s in fake.seen if s.model == "m-judge"]
    assert len(judged) == 2
    assert "The capital of France is Paris." in json.dumps(judged[0].body)
    assert "Paris." in json.dumps(judged[0].body) and "Lyon." in json.dumps(judged[1].body)
    # the requests' own rows know nothing of it: one attempt each, on big
    db = sqlite3.connect(book)
    attempts = db.execute("SELECT DISTINCT alias FROM attempts").fetchall()
    db.close()
    assert attempts == [("big",)]
    result = CliRunner().invoke(app, ["ledger", "labels", "-c", str(config)])
    assert result.exit_code == 0, result.output
    labels = {
        line["request_id"]: line["labels"] for line in map(json.loads, result.stdout.splitlines())
    }
    assert labels[agreed] == {"big": 1.0, "local": 1.0}
    assert labels[differs] == {"big": 1.0, "local": 0.0}
    assert labels[empty] == {"big": 1.0, "local": 0.0}


def test_shadow_checks_are_off_by_default(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reset()
    book = tmp_path / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.replace("{url}", fake.url).replace("{ledger}", str(book)).replace("{learning}", "")
    )
    daemon = Daemon(config).start()
    try:
        ask(daemon, "What is the capital of France?")
        time.sleep(0.5)
    finally:
        daemon.stop()
    assert fake.models_called() == ["m-big"]
    assert shadow_rows(book) == []


def test_an_unknown_judge_is_a_config_error(tmp_path: Path, write_config: object) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.replace("{url}", "http://127.0.0.1:9")
        .replace("{ledger}", str(tmp_path / "l.db"))
        .replace("{learning}", '[learning]\nshadow_rate = 0.1\nshadow_judge = "judg"\n')
    )
    result = CliRunner().invoke(app, ["check-config", "-c", str(config)])
    assert result.exit_code == 3
    assert "learning.shadow_judge: `judg` is not a declared model alias" in result.output
    assert "judge" in result.output  # did you mean
