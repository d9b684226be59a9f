"""`pirouter route --batch FILE`: one JSON decision per request line, as the daemon decides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.cli.inspect import route_lines
from pirouter_py.config import load_config
from pirouter_py.routing.decide import decide
from pirouter_py.types import ChatRequest, text_message
from tests.conftest import EXAMPLE

runner = CliRunner()
HARD = "debug this distributed SQL migration and its race condition"


def lines(*requests: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in requests)


def test_each_line_gets_the_decision_route_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the example's cloud models callable (unset keys leave them out: test_keys.py)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    batch = tmp_path / "requests.jsonl"
    batch.write_text(
        lines(
            {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
            {
                "protocol": "anthropic",
                "headers": {"X-Pirouter-Difficulty": "hard"},
                "body": {
                    "model": "auto",
                    "max_tokens": 9,
                    "messages": [{"role": "user", "content": "x"}],
                },
            },
            "",
            "not json",
            {"protocol": "responses", "body": {"model": "auto", "input": HARD}},
            {"model": "auto", "messages": "nope"},
            {"protocol": "grpc", "body": {}},
        )
    )
    result = runner.invoke(app, ["route", "--config", str(EXAMPLE), "--batch", str(batch)])
    assert result.exit_code == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["line"] for o in out] == [1, 2, 4, 5, 6, 7]  # the blank line is skipped
    config = load_config(EXAMPLE).config
    for o, text in ((out[0], "hi"), (out[3], HARD)):
        d = decide(config, ChatRequest("auto", (text_message("user", text),)), {})
        assert (o["rule"], o["primary"], o["chain"], o["difficulty"]) == (
            d.rule,
            d.primary,
            list(d.chain),
            d.difficulty,
        )
    assert out[1]["difficulty"] == "hard"  # the header, read lower-cased
    assert "error" in out[2] and "error" in out[4]
    assert "grpc" in out[5]["error"]


def test_prompt_or_batch_one_of_them() -> None:
    result = runner.invoke(app, ["route", "--config", str(EXAMPLE)])
    assert result.exit_code == 2 and "--prompt or --batch" in result.stderr


def test_a_large_batch_is_decided_line_by_line() -> None:
    """Lines stream through (a generator): 3,000 take ~0.1 s here, measured, not asserted."""
    config = load_config(EXAMPLE).config
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": HARD}]})
    decided = [json.loads(line) for line in route_lines(config, [body] * 3000)]
    assert len(decided) == 3000 and {d["difficulty"] for d in decided} == {"hard"}
