"""`pirouter replay`: a ledger of known requests re-decided under candidate configs; what moves
and the cost estimate worked out by hand, the text report and --json agreeing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.config import load_config
from pirouter_py.ledger import rows as ledger_rows
from pirouter_py.ledger import schema
from tests.test_stats import CONFIG, attempt, record

runner = CliRunner()
RULE = '\n[[rules]]\nname = "all"\nwhen = {{ stream = false }}\nthen = {{ primary = "{alias}" }}\n'
OPENAI_BODY = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC_BODY = {"model": "x", "max_tokens": 100, "messages": [{"role": "user", "content": "yo"}]}


@pytest.fixture
def book(tmp_path: Path, write_config: Callable[[str], Path]) -> Path:
    path = tmp_path / "ledger.db"
    config = write_config(CONFIG.replace("{ledger}", str(path)))
    now = time.time() - 60
    r1 = record("r1", now, "ok", "cheap", 10, attempt("cheap", "ok", (1000, 500), True))
    r2 = record(
        "r2",
        now + 1,
        "ok",
        "strong",
        10,
        attempt("cheap", "escalated_short_response", (1000, 2)),
        attempt("strong", "ok", (1000, 400), True),
    )
    records = [
        replace(r1, prompt=json.dumps(OPENAI_BODY)),
        replace(r2, protocol="anthropic", prompt=json.dumps(ANTHROPIC_BODY)),
        # answered, but its text was not kept
        record("r3", now + 2, "ok", "cheap", 10, attempt("cheap", "ok", (5, 5), True)),
        # not answered: not replayed at all
        record("r4", now + 3, "exhausted", None, 10, attempt("cheap", "escalated_http_error")),
    ]
    db = schema.connect(path)
    schema.migrate(db)
    ledger_rows.write_batch(db, records, load_config(config).config.models)
    db.close()
    return path


def candidate(tmp_path: Path, book: Path, alias: str) -> Path:
    path = tmp_path / f"candidate-{alias}.toml"
    path.write_text(CONFIG.replace("{ledger}", str(book)) + RULE.format(alias=alias))
    return path


def test_everything_to_strong(book: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["replay", "--json", "-c", str(candidate(tmp_path, book, "strong"))]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # r1: $0.002 recorded (cheap: 1000 x 1 + 500 x 2), strong would be 1000 x 10 + 500 x 30: $0.025
    # r2: $0.023004 recorded (both attempts), strong answering first: 1000 x 10 + 400 x 30: $0.022
    assert report == {
        "requests": 3,
        "replayed": 2,
        "without_text": 1,
        "not_routable": 0,
        "without_headers": 2,  # recorded without the headers routing read
        "moved": [{"from": "cheap", "to": "strong", "requests": 2}],
        "recorded_cost_usd": pytest.approx(0.025004),
        "estimated_cost_usd": pytest.approx(0.047),
        "difference_usd": pytest.approx(0.021996),
    }
    text = runner.invoke(app, ["replay", "-c", str(candidate(tmp_path, book, "strong"))]).stdout
    assert "replayed 2 of 3 answered requests (1 without their text ([ledger] store" in text
    assert "cheap -> strong: 2" in text
    assert "$0.0250, estimated under this config $0.0470 (+0.0220)" in text


def test_everything_to_cheap_moves_nothing(book: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["replay", "-c", str(candidate(tmp_path, book, "cheap"))])
    assert result.exit_code == 0, result.output
    assert "no request would move" in result.stdout
    # r1 as recorded ($0.002); r2's answer on cheap: 1000 x 1 + 400 x 2 = $0.0018
    assert "estimated under this config $0.0038 (-0.0212)" in result.stdout


def test_since_and_other_ledger(book: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text(
        CONFIG.replace("{ledger}", str(tmp_path / "none.db")) + RULE.format(alias="strong")
    )

    def report(since: float) -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since))
        args = ["replay", "--json", "--ledger", str(book), "--since", stamp, "-c", str(other)]
        return dict(json.loads(runner.invoke(app, args).stdout))

    assert (report(time.time() - 3600)["replayed"], report(time.time() + 3600)["requests"]) == (
        2,
        0,
    )
    empty = json.loads(runner.invoke(app, ["replay", "--json", "-c", str(other)]).stdout)
    assert (empty["requests"], empty["moved"]) == (0, [])


GOLD = (
    '\n[[rules]]\nname = "gold"\nwhen = {{ header = {{ name = "x-team", equals = "gold" }} }}\n'
    'then = {{ primary = "strong" }}\n'
    '[[rules]]\nname = "else"\nwhen = {{ always = true }}\nthen = {{ primary = "cheap" }}\n'
)


def test_rows_are_re_decided_with_the_headers_kept(tmp_path: Path) -> None:
    """A rule on a header moves the row whose kept headers match it, and only that one; a row
    recorded before headers were kept is re-decided without them, and counted."""
    path = tmp_path / "ledger.db"
    config = tmp_path / "candidate.toml"
    config.write_text(CONFIG.replace("{ledger}", str(path)) + GOLD.format())
    now = time.time() - 60
    answered = attempt("cheap", "ok", (10, 10), True)
    body = json.dumps(OPENAI_BODY)
    records = [
        replace(
            record(f"h{i}", now + i, "ok", "cheap", 10, answered), prompt=body, route_headers=kept
        )
        for i, kept in enumerate(
            ('{"x-team": "gold", "user-agent": "curl/8"}', '{"x-team": "silver"}', "{}", None)
        )
    ]
    db = schema.connect(path)
    schema.migrate(db)
    ledger_rows.write_batch(db, records, load_config(config).config.models)
    db.close()
    result = runner.invoke(app, ["replay", "--json", "-c", str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["replayed"], report["without_headers"], report["moved"]) == (
        4,
        1,
        [{"from": "cheap", "to": "strong", "requests": 1}],
    )
    text = runner.invoke(app, ["replay", "-c", str(config)]).stdout
    assert "1 re-decided without their headers" in text
