"""Feedback on answers: `POST /v1/feedback` on a running daemon and `pirouter feedback` both land
in the ledger's `feedback` table beside the request's row; bad scores are refused clearly."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.ledger.feedback import parse_score
from tests.fakes import Daemon, FakeUpstream

CONFIG = """
[ledger]
path = "{ledger}"
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.cheap]
provider = "fake"
model_id = "m-cheap"
quality = "basic"
"""


def feedback_rows(book: Path) -> list[tuple[str, float, str | None, str]]:
    db = sqlite3.connect(book)
    try:
        return db.execute(
            "SELECT request_id, score, comment, source FROM feedback ORDER BY ts"
        ).fetchall()
    finally:
        db.close()


@pytest.mark.parametrize(
    ("given", "score"), [("good", 1.0), ("BAD", 0.0), ("0.25", 0.25), (1, 1.0), (0.5, 0.5)]
)
def test_scores_accepted(given: object, score: float) -> None:
    assert parse_score(given) == score


@pytest.mark.parametrize("given", ["great", "1.5", -0.1, True, None, [1]])
def test_scores_refused(given: object) -> None:
    with pytest.raises(ValueError, match="from 0 to 1, or good or bad"):
        parse_score(given)


def test_http_and_cli_feedback_land_beside_the_request(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reset()
    book = tmp_path / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("{url}", fake.url).replace("{ledger}", str(book)))
    daemon = Daemon(config).start()
    try:
        status, headers, _ = daemon.post(
            {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert status == 200
        rid = headers["x-pirouter-request-id"]
        status, _, answer = daemon.post(
            {"request_id": rid, "score": "bad", "comment": "wrong file"}, "/v1/feedback"
        )
        assert (status, answer) == (200, {"request_id": rid, "score": 0.0, "recorded": True})
        # refused in the OpenAI error format, naming the field; nothing is written
        status, _, error = daemon.post({"request_id": rid, "score": 7}, "/v1/feedback")
        assert status == 400
        assert error["error"]["param"] == "score"
        assert "from 0 to 1" in error["error"]["message"]
        status, _, error = daemon.post({"score": 1}, "/v1/feedback")
        assert (status, error["error"]["param"]) == (400, "request_id")
        # the CLI writes to the same ledger while the daemon holds it open
        result = CliRunner().invoke(
            app, ["feedback", rid, "0.75", "--comment", "fine after all", "-c", str(config)]
        )
        assert result.exit_code == 0, result.output
        assert f"feedback 0.75 on {rid}" in result.stdout
        refused = CliRunner().invoke(app, ["feedback", rid, "great", "-c", str(config)])
        assert refused.exit_code == 2 and "good or bad" in refused.output
        time.sleep(0.5)  # the request's row reaches the file within a quarter second
        # the newest feedback, not the answer's "returned, so good", is the answering model's label
        exported = CliRunner().invoke(app, ["ledger", "labels", "-c", str(config)])
        assert exported.exit_code == 0, exported.output
        [line] = [json.loads(x) for x in exported.stdout.splitlines()]
        assert (line["request_id"], line["labels"]) == (rid, {"cheap": 0.75})
        # `last`: the newest request, named on stderr
        last = CliRunner().invoke(app, ["feedback", "last", "good", "-c", str(config)])
        assert last.exit_code == 0, last.output
        assert f"the newest request: {rid} (cheap, " in last.stderr
        assert f"feedback 1 on {rid}" in last.stdout
    finally:
        assert daemon.stop() == 0
    assert feedback_rows(book) == [
        (rid, 0.0, "wrong file", "http"),
        (rid, 0.75, "fine after all", "cli"),
        (rid, 1.0, None, "cli"),
    ]
    db = sqlite3.connect(book)
    try:  # the request it scores is there too, so the two join
        joined = db.execute(
            "SELECT count(*) FROM feedback JOIN requests ON requests.id = feedback.request_id"
        ).fetchone()
    finally:
        db.close()
    assert joined == (3,)


def test_no_ledger_means_no_feedback(fake: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("{url}", fake.url).replace("{ledger}", str(tmp_path / "l.db")))
    daemon = Daemon(config, extra_args=("--no-ledger",)).start()
    try:
        status, _, error = daemon.post({"request_id": "x", "score": 1}, "/v1/feedback")
    finally:
        assert daemon.stop() == 0
    assert status == 400 and "no ledger" in error["error"]["message"]
    assert not (tmp_path / "l.db").exists()  # the file is never made for it


def test_cli_feedback_through_the_running_daemon_and_straight_into_the_ledger(
    fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a daemon running (found by its run file, or --url) the CLI gives feedback through
    it; with none, into the config's ledger. A made-up id is exit 1 either way, nothing kept."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the daemon's run file
    book = tmp_path / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("{url}", fake.url).replace("{ledger}", str(book)))
    runner = CliRunner()

    def feedback(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["feedback", *args, "-c", str(config)])
        return result.exit_code, result.stdout, result.stderr

    daemon = Daemon(config).start()
    try:
        status, headers, _ = daemon.post(
            {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert status == 200
        rid = headers["x-pirouter-request-id"]
        assert feedback(rid, "good") == (
            0,
            f"feedback 1 on {rid} kept by the daemon at {daemon.url}\n",
            "",
        )
        assert feedback("made-up", "bad") == (
            1,
            "",
            f"Error: no request made-up at the daemon {daemon.url}; its id is the answer's "
            "x-pirouter-request-id, as `pirouter ledger tail` shows\n",
        )
        assert feedback(rid, "0.5", "--url", "http://127.0.0.1:9") == (
            1,
            "",
            "Error: pirouter is not answering at http://127.0.0.1:9 "
            "([Errno 111] Connection refused)\n",
        )
    finally:
        assert daemon.stop() == 0
    # `ledger tail` shows the id whole, to copy into `feedback`
    tail = runner.invoke(app, ["ledger", "tail", "-n", "1", "-c", str(config)])
    assert tail.exit_code == 0 and tail.stdout.splitlines()[1].split()[2] == rid
    # no daemon: straight into the ledger, which knows the request, and not the made-up id
    assert feedback(rid, "bad", "--comment", "on second thought") == (
        0,
        f"feedback 0 on {rid} kept in {book}\n",
        "",
    )
    code, out, err = feedback("made-up", "good")
    assert (code, out) == (1, "")
    assert err.startswith(f"Error: no request made-up in the ledger {book}; its id is the ")
    assert feedback_rows(book) == [(rid, 1.0, None, "http"), (rid, 0.0, "on second thought", "cli")]
    # a ledger not there yet holds no request, and asking does not make one
    empty = tmp_path / "none.db"
    config.write_text(config.read_text().replace(str(book), str(empty)))
    assert feedback("made-up", "good") == (
        1,
        "",
        f"Error: no request made-up in the ledger {empty}: it holds no requests yet\n",
    )
    assert not empty.exists()
