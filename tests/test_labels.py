"""Labels from use (`pirouter ledger labels`): scores per model worked out by hand from recorded
attempts, feedback and stored prompts in a real ledger file, including a v0.1 row."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.config import load_config
from pirouter_py.ledger import feedback, schema
from pirouter_py.ledger import rows as ledger_rows
from pirouter_py.ledger.labels import attempt_labels
from tests.test_stats import CONFIG, attempt, record

runner = CliRunner()


def test_attempt_labels_by_outcome() -> None:
    attempts = [
        {"alias": "local", "outcome": "escalated_http_error"},  # says nothing of quality
        {"alias": "cheap", "outcome": "escalated_tool_call"},  # a failed check: 0
        {"alias": "mid", "outcome": "client_cancelled"},
        {"alias": "strong", "outcome": "ok", "returned": 1},
    ]
    assert attempt_labels(attempts, "strong") == {"cheap": 0.0, "strong": 1.0}
    # an ok that was not the answer (v0.1 rows: no `returned`, so the final alias decides)
    assert attempt_labels([{"alias": "cheap", "outcome": "ok"}], None) == {}
    assert attempt_labels([{"alias": "cheap", "outcome": "ok"}], "cheap") == {"cheap": 1.0}


def test_labels_from_a_ledger(tmp_path: Path, write_config: Callable[[str], Path]) -> None:
    path = tmp_path / "ledger.db"
    config = write_config(CONFIG.replace("{ledger}", str(path)) + "store_prompts = true\n")
    now = time.time() - 60
    records = [
        record("r1", now, "ok", "cheap", 10, attempt("cheap", "ok", (100, 5), True)),
        record(
            "r2",
            now + 1,
            "ok",
            "strong",
            10,
            attempt("cheap", "escalated_truncated", (100, 50)),
            attempt("strong", "ok", (100, 80), True),
        ),
        record("r3", now + 2, "exhausted", None, 10, attempt("cheap", "escalated_http_error")),
        record("r4", now + 3, "ok", "cheap", 10, attempt("cheap", "ok", (7, 3), True)),
    ]
    db = schema.connect(path)
    schema.migrate(db)
    ledger_rows.write_batch(db, records, load_config(config).config.models)
    db.execute(
        "INSERT INTO prompts (request_id, messages, answer) VALUES (?, ?, ?)",
        ("r2", json.dumps({"messages": [{"role": "user", "content": "prove it"}]}), "ok"),
    )
    # a v0.1 row: attempts only in cascade_path, no `returned`
    path_json = json.dumps(
        [{"alias": "strong", "outcome": {"kind": "ok", "input_tokens": 9, "output_tokens": 4}}]
    )
    db.execute(
        "INSERT INTO requests (id, ts, requested_model, route_rule, primary_model, final_model,"
        " cascade_path, input_tokens, output_tokens, cost_usd, latency_ms, status)"
        " VALUES ('v1', ?, 'auto', 'r', 'strong', 'strong', ?, 9, 4, 0, 5, 'ok')",
        (int(now) + 4, path_json),
    )
    db.close()
    feedback.record(path, "r4", 0.0, "wrong", "http")  # the user disagrees with r4's answer
    result = runner.invoke(app, ["ledger", "labels", "-c", str(config)])
    assert result.exit_code == 0, result.output
    lines = {x["request_id"]: x for x in map(json.loads, result.stdout.splitlines())}
    assert set(lines) == {"r1", "r2", "r4", "v1"}  # r3 has no label: an error is not a verdict
    assert lines["r1"]["labels"] == {"cheap": 1.0}
    assert lines["r2"]["labels"] == {"cheap": 0.0, "strong": 1.0}
    assert lines["r2"]["tokens"] == {
        "cheap": {"in": 100, "out": 50},
        "strong": {"in": 100, "out": 80},
    }
    assert lines["r2"]["messages"] == [{"role": "user", "content": "prove it"}]
    assert "messages" not in lines["r1"]
    assert lines["r4"]["labels"] == {"cheap": 0.0}
    assert lines["v1"]["labels"] == {"strong": 1.0}
    # --since drops the older ones; -o writes a file
    out = tmp_path / "labels.jsonl"
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now + 2.5))
    result = runner.invoke(
        app, ["ledger", "labels", "--since", since, "-o", str(out), "-c", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["request_id"] for x in out.read_text().splitlines()] == ["r4", "v1"]


def test_labels_without_a_ledger(tmp_path: Path, write_config: Callable[[str], Path]) -> None:
    config = write_config(CONFIG.replace("{ledger}", str(tmp_path / "none.db")))
    result = runner.invoke(app, ["ledger", "labels", "-c", str(config)])
    assert (result.exit_code, result.stdout) == (0, "")
    assert not (tmp_path / "none.db").exists()
