"""One decision path: `route --prompt`, `route --batch`, the daemon, `replay` and `eval` decide
every request alike.

A few hundred varied requests (tools or not, an image or not, short or long, a system message,
max_tokens, and the headers rules and routing read: User-Agent, a team header, `$header:`
targets, x-pirouter-profile, -difficulty and -turn) under a config with header rules and the
learned router on (an owner's model trained here, beside the ledger, with the shipped prior) are
routed five ways, and every primary compared with the daemon's, as its ledger recorded it.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.cli.inspect import SAMPLE_IMAGE
from pirouter_py.config import load_config
from pirouter_py.learning import data, train
from pirouter_py.routing import learned
from pirouter_py.routing.decide import KEPT_CHARS, KEPT_MOST, kept_headers
from tests.fakes import Daemon, FakeUpstream

runner = CliRunner()
N = 200  # requests routed five ways (`route --prompt`, one run each, takes most of the time)

CONFIG = """
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"

[models.small]
provider = "fake"
model_id = "m-small"
quality = "basic"
local = true
supports_tools = true
input_per_m = 0.1
output_per_m = 0.2

[models.mid]
provider = "fake"
model_id = "m-mid"
quality = "standard"
supports_tools = true
supports_vision = true
input_per_m = 1.0
output_per_m = 2.0

[models.big]
provider = "fake"
model_id = "m-big"
quality = "strong"
supports_tools = true
supports_vision = true
input_per_m = 5.0
output_per_m = 15.0

[ledger]
path = "{ledger}"
store_prompts = true

[routing]
learned = true
quality_bias = 0.6

[[rules]]
name = "aider"
when = { client_matches = "aider" }
then = { primary = "mid", cascade = ["big"] }

[[rules]]
name = "gold-team"
when = { header = { name = "x-team", equals = "gold" } }
then = { primary = "big" }

[[rules]]
name = "named"
when = { header = { name = "x-pirouter-route", any_value = true } }
then = { primary = "$header:x-pirouter-route" }

[[rules]]
name = "subagents-local"
when = { turn = "subagent" }
then = { profile = "local-first" }

[[rules]]
name = "long-tools-hard"
when = { all = [{ has_tools = true }, { tokens_in_gt = 2000 }] }
then = { difficulty = "hard" }
"""

TOOL = {
    "type": "function",
    "function": {
        "name": "tool",
        "description": "synthetic dry-run tool",
        "parameters": {"type": "object", "properties": {}},
    },
}
TOPICS = ("the capital of peru", "a river in spain", "a poem about rain", "integrals by parts")
VERBS = ("tell me about", "debug", "summarize", "write code for", "explain", "refactor")


def requests(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Varied single-turn requests, each as `route --prompt` can state it too."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        text = f"{r.choice(VERBS)} {r.choice(TOPICS)} (case {i})"
        if r.random() < 0.15:
            text += " and more context" * r.choice((400, 2000))  # ~2,700 or ~11,000 tokens
        headers: dict[str, str] = {
            "User-Agent": r.choice(("curl/8.5", "aider/0.80", "claude-cli/2.1", "python-httpx"))
        }
        for name, values, share in (
            ("X-Team", ("gold", "silver"), 0.15),
            ("X-Pirouter-Route", ("mid", "big"), 0.08),
            ("X-Pirouter-Profile", ("local-first", "best-quality", "cloud-only", "bogus"), 0.2),
            ("X-Pirouter-Difficulty", ("easy", "hard", "premium"), 0.15),
            ("X-Pirouter-Turn", ("subagent", "background"), 0.15),
        ):
            if r.random() < share:
                headers[name] = r.choice(values)
        out.append(
            {
                "text": text,
                "system": "You are terse." if r.random() < 0.3 else None,
                "tools": r.random() < 0.35,
                "image": r.random() < 0.2,
                "max_tokens": r.choice((None, None, 300, 4000)),
                "headers": headers,
            }
        )
    return out


def body(req: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat body a client sends for `req`."""
    content: Any = req["text"]
    if req["image"]:
        content = [
            {"type": "text", "text": req["text"]},
            {"type": "image_url", "image_url": {"url": SAMPLE_IMAGE}},
        ]
    messages = [{"role": "system", "content": req["system"]}] if req["system"] else []
    messages.append({"role": "user", "content": content})
    out: dict[str, Any] = {"model": "auto", "messages": messages}
    if req["tools"]:
        out["tools"] = [TOOL]
    if req["max_tokens"] is not None:
        out["max_tokens"] = req["max_tokens"]
    return out


def route_args(req: dict[str, Any], config: Path) -> list[str]:
    args = ["route", "--json", "--config", str(config), "--prompt", req["text"]]
    if req["system"]:
        args += ["--system", req["system"]]
    if req["tools"]:
        args.append("--tools")
    if req["image"]:
        args.append("--image")
    if req["max_tokens"] is not None:
        args += ["--max-tokens", str(req["max_tokens"])]
    for name, value in req["headers"].items():
        args += ["--header", f"{name}: {value}"]
    return args


def train_model(path: Path) -> None:
    """The owner's model, from labelled prompts other than the ones routed here: the small
    model good on questions of fact, not on code and proofs."""
    r = random.Random(3)
    lines = []
    for i in range(300):
        hard = r.random() < 0.5
        topic = r.choice(("debug the parser", "prove the lemma") if hard else ("capital", "river"))
        lines.append(
            {
                "prompt": f"training {topic} {i}",
                "labels": {
                    "small": int(r.random() < (0.2 if hard else 0.9)),
                    "mid": int(r.random() < (0.6 if hard else 0.95)),
                    "big": int(r.random() < 0.95),
                },
            }
        )
    train.write(path, train.train(data.examples(lines)))


def ledger_rows(book: Path) -> list[tuple[str, str, str | None, str]]:
    db = sqlite3.connect(book)
    try:
        return list(
            db.execute(
                "SELECT id, primary_model, route_headers, route_rule FROM requests ORDER BY ts_ms"
            )
        )
    except sqlite3.Error:
        return []
    finally:
        db.close()


def test_five_paths_decide_every_request_alike(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reset()
    book = tmp_path / "data" / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("{url}", fake.url).replace("{ledger}", str(book)))
    train_model(book.with_name(learned.FILE_NAME))
    reqs = requests(N)

    # the daemon: each request's primary, as its ledger recorded it (by the answer's id)
    daemon = Daemon(config).start()
    try:
        by_id = {}
        for i, req in enumerate(reqs):
            status, headers, answer = daemon.post(body(req), **req["headers"])
            assert status == 200, (i, answer)
            by_id[headers["x-pirouter-request-id"]] = i
        deadline = time.monotonic() + 20
        while len(ledger_rows(book)) < N and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        assert daemon.stop() == 0
    rows = ledger_rows(book)
    assert len(rows) == N
    served: list[str] = [""] * N
    for rid, primary, kept, _ in rows:
        served[by_id[rid]] = primary
        assert kept is not None
        # what routing reads is kept; never a key
        assert "authorization" not in json.loads(kept)
    assert len(set(served)) == 3, served  # every model is somebody's choice
    # each way of deciding had its share: rules on headers (User-Agent, a team header, a
    # `$header:` target) and the learned router (the owner's model with the prior)
    by_rule = Counter(
        rule.split(":")[-1] if rule.startswith("policy:") else rule for *_, rule in rows
    )
    assert all(by_rule[r] for r in ("aider", "gold-team", "named", "learned")), by_rule
    first = json.loads(rows[0][2])
    assert first["user-agent"] == reqs[by_id[rows[0][0]]]["headers"]["User-Agent"]

    # route --prompt, one request at a time
    by_prompt = []
    for req in reqs:
        result = runner.invoke(app, route_args(req, config))
        assert result.exit_code == 0, result.output
        by_prompt.append(json.loads(result.stdout)["primary"])

    # route --batch, every request in one file
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "".join(json.dumps({"body": body(q), "headers": q["headers"]}) + "\n" for q in reqs)
    )
    result = runner.invoke(app, ["route", "--config", str(config), "--batch", str(batch)])
    assert result.exit_code == 0, result.output
    by_batch = [json.loads(line)["primary"] for line in result.stdout.splitlines()]

    # eval, on the same requests labelled (the labels do not change a decision)
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(
        "".join(
            json.dumps(
                {
                    **{k: v for k, v in body(q).items() if k != "model"},
                    "headers": q["headers"],
                    "labels": {"small": i % 2, "mid": 1, "big": 1},
                }
            )
            + "\n"
            for i, q in enumerate(reqs)
        )
    )
    result = runner.invoke(app, ["eval", "--json", "--config", str(config), str(labelled)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["router"] == "learned" and report["evaluated"] == N
    by_eval = report["decisions"]

    for name, got in (
        ("route --prompt", by_prompt),
        ("route --batch", by_batch),
        ("eval", by_eval),
    ):
        differ = [(i, reqs[i], served[i], got[i]) for i in range(N) if got[i] != served[i]]
        assert not differ, f"{name} decides {len(differ)} requests otherwise: {differ[:3]}"

    # replay re-decides every row, with its kept headers, as the daemon decided it
    result = runner.invoke(app, ["replay", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    replayed = json.loads(result.stdout)
    assert (replayed["replayed"], replayed["without_headers"], replayed["moved"]) == (N, 0, [])

    # without the kept headers (rows recorded before they were), the header rules cannot match:
    # replay says so, and the moves it reports are the header-routed requests'
    bare = tmp_path / "bare.db"
    shutil.copy(book, bare)
    db = sqlite3.connect(bare)
    db.execute("UPDATE requests SET route_headers = NULL")
    db.commit()
    db.close()
    args = ["replay", "--config", str(config), "--ledger", str(bare)]
    result = runner.invoke(app, [*args, "--json"])
    blind = json.loads(result.stdout)
    assert blind["without_headers"] == N
    assert sum(m["requests"] for m in blind["moved"]) > N // 10
    text = runner.invoke(app, args).stdout
    assert f"{N} re-decided without their headers" in text


def test_the_ledger_keeps_what_routing_reads_and_never_a_secret(write_config: Any) -> None:
    cfg = load_config(write_config(CONFIG.replace("{url}", "http://127.0.0.1:9"))).config
    sent = CIMultiDict(
        {
            "User-Agent": "aider/0.80",
            "X-Team": "gold",  # a rule names it
            "X-Other": "not read by routing",
            "X-Pirouter-Profile": "x" * 2000,
            "Authorization": "Bearer sk-secret",
            "X-Api-Key": "sk-secret",
            "Cookie": "session=secret",
            "X-Pirouter-Api-Key": "sk-secret",
        }
    )
    assert kept_headers(cfg, sent) == {
        "user-agent": "aider/0.80",
        "x-team": "gold",
        "x-pirouter-profile": "x" * KEPT_CHARS,
    }
    many = {f"x-pirouter-h{i}": "v" for i in range(100)}
    assert len(kept_headers(cfg, many)) == KEPT_MOST


def test_a_labelled_line_carries_what_routing_reads() -> None:
    line = {"prompt": "hi", "labels": {"small": 1}, "tools": [TOOL], "max_tokens": 9}
    ex = data.example({**line, "headers": {"X-Pirouter-Turn": "subagent"}})
    assert ex.headers == {"x-pirouter-turn": "subagent"}
    assert ex.request is not None and ex.request.tools and ex.request.max_tokens == 9
    # the turn a header names is in the learned router's features, as the daemon reads them
    assert ex.ids != data.example(line).ids
    with pytest.raises(ValueError, match='"headers" must be an object'):
        data.example({**line, "headers": {"x-team": 1}})
