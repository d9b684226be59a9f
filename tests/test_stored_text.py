"""What `store_prompts` keeps of a prompt and an answer: at most `[ledger] max_stored_chars` each,
with a marker saying how much was left out; the client still gets the whole answer, streamed."""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from pathlib import Path

import pytest

from pirouter_py import record as rec
from tests.fakes import Daemon, FakeUpstream, Reply

CONFIG = """
[ledger]
path = "{ledger}"
store_prompts = true
max_stored_chars = 2048
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.m]
provider = "fake"
model_id = "m"
"""
WORD = "lorem "  # the fake streams an answer a word a chunk


@pytest.mark.parametrize(
    ("pieces", "most", "kept"),
    [
        (["abc", "def"], 10, "abcdef"),
        (["abcdef", "ghij"], 8, "abcdefgh" + rec.left_out(2)),
        (["abcdefgh", "ij", "kl"], 8, "abcdefgh" + rec.left_out(4)),
        (["a" * 20], 5, "aaaaa" + rec.left_out(15)),
    ],
)
def test_kept_holds_at_most_its_share(pieces: list[str], most: int, kept: str) -> None:
    text = rec.Kept(most)
    for piece in pieces:
        text.add(piece)
    assert text.text() == kept == rec.capped("".join(pieces), most)
    assert sum(len(p) for p in text.parts) <= most


def stored(book: Path, rid: str) -> tuple[str, str]:
    deadline = time.monotonic() + 10
    while True:
        db = sqlite3.connect(book)
        try:
            row = db.execute(
                "SELECT messages, answer FROM prompts WHERE request_id = ?", (rid,)
            ).fetchone()
        except sqlite3.OperationalError:  # the ledger is still being made
            row = None
        finally:
            db.close()
        if row is not None:
            return row
        assert time.monotonic() < deadline, f"no prompt row for {rid}"
        time.sleep(0.1)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_long_answer_reaches_the_client_whole_and_the_ledger_cut(
    fake: FakeUpstream, tmp_path: Path, stream: bool
) -> None:
    fake.reset()
    answer = WORD * 5_000  # 30,000 characters
    fake.default("m", Reply(text=answer))
    book = tmp_path / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(ledger=book, url=fake.url))
    daemon = Daemon(config).start()
    try:
        prompt = "x" * 10_000
        body = {"model": "auto", "messages": [{"role": "user", "content": prompt}]}
        host, port = daemon.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body | {"stream": stream}),
            headers={"content-type": "application/json"},
        )
        response = conn.getresponse()
        raw = response.read().decode()
        rid = response.getheader("x-pirouter-request-id") or ""
        conn.close()
        if stream:
            chunks = [json.loads(x[6:]) for x in raw.splitlines() if x.startswith("data: {")]
            got = "".join(
                c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
            )
        else:
            got = json.loads(raw)["choices"][0]["message"]["content"]
        assert got == answer  # the client's answer is whole
        messages, kept = stored(book, rid)
    finally:
        daemon.stop()
    assert kept == answer[:2048] + rec.left_out(len(answer) - 2048)
    sent = json.dumps(body | ({"stream": True} if stream else {}), separators=(",", ":"))
    assert messages[:2048] == sent[:2048]  # the prompt's JSON as received, cut the same way
    assert messages[2048:].startswith("\n[pirouter: ") and len(messages) < 2048 + 100
