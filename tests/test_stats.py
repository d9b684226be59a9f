"""`pirouter stats` and `pirouter ledger`: golden output on a real ledger file, every dimension,
JSON, v0.1's empty message, export and tail. Expected numbers are worked out by hand below."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.config import load_config
from pirouter_py.ledger import rows as ledger_rows
from pirouter_py.ledger import schema
from pirouter_py.record import Attempt, RequestRecord
from pirouter_py.reports.stats import percentile

runner = CliRunner()

CONFIG = """
[ledger]
path = "{ledger}"
[providers.openai]
[models.cheap]
provider = "openai"
model_id = "c"
input_per_m = 1.0
output_per_m = 2.0
[models.strong]
provider = "openai"
model_id = "s"
input_per_m = 10.0
output_per_m = 30.0
"""


def attempt(
    alias: str, outcome: str, tokens: tuple[int, int] = (0, 0), returned: bool = False
) -> Attempt:
    return Attempt(
        alias,
        "openai",
        alias[0],
        outcome,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        returned=returned,
    )


def record(
    rid: str, ts: float, status: str, final: str | None, latency: float, *attempts: Attempt
) -> RequestRecord:
    return RequestRecord(
        request_id=rid,
        ts=ts,
        protocol="openai",
        requested_model="auto",
        rule="policy:balanced:easy" if rid != "r2" else "coding",
        difficulty="easy",
        primary="cheap",
        final=final,
        status=status,
        http_status=200 if status == "ok" else 502,
        streamed=False,
        latency_ms=latency,
        overhead_ms=0.3,
        attempts=attempts,
    )


@pytest.fixture
def book(tmp_path: Path, write_config: Callable[[str], Path]) -> Path:
    """A config whose ledger holds four requests of known cost, a minute old."""
    path = tmp_path / "ledger.db"
    config = write_config(CONFIG.replace("{ledger}", str(path)))
    now = time.time() - 60
    records = [
        # cheap answers: 1000*1 + 500*2 = $0.002
        record("r1", now, "ok", "cheap", 100, attempt("cheap", "ok", (1000, 500), True)),
        # cheap short (1000*1 + 2*2), then strong (1000*10 + 400*30): $0.023004
        record(
            "r2",
            now + 1,
            "ok",
            "strong",
            300,
            attempt("cheap", "escalated_short_response", (1000, 2)),
            attempt("strong", "ok", (1000, 400), True),
        ),
        # both fail: $0, no answer
        record(
            "r3",
            now + 2,
            "exhausted",
            None,
            50,
            attempt("cheap", "escalated_http_error"),
            attempt("strong", "escalated_http_error"),
        ),
        # cheap answers: 2000*1 + 1000*2 = $0.004
        record("r4", now + 3, "ok", "cheap", 200, attempt("cheap", "ok", (2000, 1000), True)),
    ]
    db = schema.connect(path)
    schema.migrate(db)
    ledger_rows.write_batch(db, records, load_config(config).config.models)
    db.close()
    return config


def stats(config: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["stats", "-c", str(config), *args], env={"COLUMNS": "80"})
    return result.exit_code, result.stdout, result.stderr


GOLDEN = """\
pirouter stats: last 24 hours
  requests 4, success 75.0% (25.0% after an escalation), failed 25.0%
  cost $0.0290, on strong $0.0970, saved $0.0680 (70.1%)

model        reqs  in_tok  out_tok     cost  p50_ms  p95_ms  escalated  failed
------------------------------------------------------------------------------
cheap           2    3000     1500  $0.0060     100     200          0       0
(no answer)     1       0        0  $0.0000      50      50          0       1
strong          1    2000      402  $0.0230     300     300          1       0
------------------------------------------------------------------------------
TOTAL           4    5000     1902  $0.0290     100     300          1       1
"""


def test_golden_report(book: Path) -> None:
    assert stats(book) == (0, GOLDEN, "")


def test_json_has_the_same_numbers(book: Path) -> None:
    code, out, _ = stats(book, "--json")
    report = json.loads(out)
    assert code == 0
    # r2 was answered after an escalation; r3 failed (its escalations do not count)
    assert (report["requests"], report["successes"], report["escalated"]) == (4, 3, 1)
    assert (report["failed"], report["failure_rate"]) == (1, 0.25)
    assert [(g["key"], g["escalated"], g["errors"]) for g in report["groups"]] == [
        ("cheap", 0, 0),
        ("(no answer)", 0, 1),
        ("strong", 1, 0),
    ]
    assert report["cost_usd"] == pytest.approx(0.029004, abs=1e-9)
    assert report["baseline"] == {"alias": "strong", "cost_usd": pytest.approx(0.097, abs=1e-9)}
    assert report["savings_usd"] == pytest.approx(0.067996, abs=1e-9)
    assert report["savings_pct"] == pytest.approx(100 * 0.067996 / 0.097, abs=1e-9)
    assert [(g["key"], g["requests"]) for g in report["groups"]] == [
        ("cheap", 2),
        ("(no answer)", 1),
        ("strong", 1),
    ]
    assert report["total"]["p95_ms"] == 300


@pytest.mark.parametrize(
    ("by", "keys"),
    [
        ("rule", [("policy:balanced:easy", 3), ("coding", 1)]),
        ("provider", [("openai", 3), ("(no answer)", 1)]),
        ("status", [("ok", 3), ("exhausted", 1)]),
    ],
)
def test_every_dimension(book: Path, by: str, keys: list[tuple[str, int]]) -> None:
    report = json.loads(stats(book, "--by", by, "--json")[1])
    assert [(g["key"], g["requests"]) for g in report["groups"]] == keys


def test_by_day(book: Path) -> None:
    report = json.loads(stats(book, "--by", "day", "--json")[1])
    (day,) = report["groups"]
    assert day["requests"] == 4 and day["key"] == time.strftime(
        "%Y-%m-%d", time.localtime(time.time() - 60)
    )


def test_baseline_from_config(book: Path) -> None:
    book.write_text(book.read_text() + '[stats]\nbaseline = "cheap"\n')
    report = json.loads(stats(book, "--json")[1])
    # the answers priced at cheap: (1000 + 1000) + (1000 + 800) + (2000 + 2000) per 1e6
    assert report["baseline"] == {"alias": "cheap", "cost_usd": pytest.approx(0.0078, abs=1e-9)}


def test_windows_and_v01_empty_message(book: Path) -> None:
    for hours in ("0", "-3"):  # a window of no time is a usage error, not an empty report
        code, out, err = stats(book, "--hours", hours)
        assert (code, out) == (2, "") and "--hours" in err and "greater than or equal to 1" in err
    future = time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + 3600))
    assert stats(book, "--since", future)[1] == f"no requests since {future}\n"
    assert json.loads(stats(book, "--since", "2000-01-01", "--json")[1])["requests"] == 4


def test_bad_windows_are_usage_errors(book: Path) -> None:
    code, _, err = stats(book, "--since", "last week")
    assert code == 2 and "'last week' is neither an age nor a date: use e.g. 30m, 12h" in err
    assert stats(book, "--since", "yesterday")[0] == 0
    assert json.loads(stats(book, "--since", "2h", "--json")[1])["requests"] == 4
    assert stats(book, "--since", "2000-01-01", "--hours", "3")[0] == 2
    assert stats(book, "--by", "colour")[0] == 2


def test_no_ledger_file_yet(tmp_path: Path, write_config: Callable[[str], Path]) -> None:
    config = write_config(CONFIG.replace("{ledger}", str(tmp_path / "none.db")))
    assert stats(config) == (0, "no requests in the last 24 hour(s)\n", "")
    assert not (tmp_path / "none.db").exists()  # reading never creates the file


def test_ledger_path_tail_and_export(book: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ledger", "path", "-c", str(book)])
    assert result.stdout == f"{tmp_path / 'ledger.db'}\n"
    head, *tail = runner.invoke(
        app, ["ledger", "tail", "-n", "2", "-c", str(book)]
    ).stdout.splitlines()
    assert head.split() == [
        *("time", "request_id", "status", "rule", "in", "out", "cost", "ms", "attempts")
    ]
    assert len(tail) == 2 and "exhausted" in tail[0] and "cheap:ok" in tail[1]
    # the request id, whole, in its column: what `pirouter feedback` takes
    assert [line.split()[2] for line in tail] == ["r3", "r4"]
    assert "cheap:escalated_http_error > strong:escalated_http_error" in tail[0]
    lines = runner.invoke(app, ["ledger", "tail", "--json", "-c", str(book)]).stdout
    assert [json.loads(x)["id"] for x in lines.splitlines()] == ["r1", "r2", "r3", "r4"]
    exported = runner.invoke(app, ["ledger", "export", "--format", "csv", "-c", str(book)]).stdout
    table = list(csv.DictReader(io.StringIO(exported)))
    assert [r["id"] for r in table] == ["r1", "r2", "r3", "r4"]
    assert table[1]["final_model"] == "strong" and table[1]["status"] == "ok"
    # ISO 8601 beside the unix seconds, the same instant
    when = datetime.fromisoformat(table[0]["time"])
    assert when.tzinfo is not None and abs(when.timestamp() - float(table[0]["ts"])) < 1
    out = tmp_path / "rows.jsonl"
    said = runner.invoke(
        app, ["ledger", "export", "-o", str(out), "--since", "2000-01-01", "-c", str(book)]
    )
    assert said.stderr == f"wrote 4 requests (jsonl) to {out}\n"
    second = json.loads(out.read_text().splitlines()[1])
    assert [a["outcome"] for a in second["attempts"]] == ["escalated_short_response", "ok"]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([7.0], 0.95, 7.0),
        ([1.0, 2.0], 0.5, 1.0),
        ([1.0, 2.0], 0.95, 2.0),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),
        ([float(i) for i in range(1, 101)], 0.5, 50.0),
    ],
)
def test_percentile_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_savings_price_the_baseline_with_its_cache_rates() -> None:
    """The baseline is priced as the ledger prices: cached input at the cache rate."""
    from pirouter_py.config import parse_config
    from pirouter_py.reports.stats import choose_baseline, summarize

    text = CONFIG.replace("{ledger}", "unused.db") + "cache_read_per_m = 1.0\n"  # for strong
    config, _ = parse_config(text, "<test>")
    answer = {
        "alias": "cheap",
        "outcome": "ok",
        "returned": True,
        "input_tokens": 1000,
        "cache_read_tokens": 800,
        "cache_write_tokens": 0,
        "output_tokens": 100,
    }
    row = {
        "ts": 0,
        "status": "ok",
        "final_model": "cheap",
        "route_rule": "r",
        "input_tokens": 1000,
        "output_tokens": 100,
        "cost_usd": 0.0012,
        "latency_ms": 10,
        "attempts": [answer],
    }
    summary = summarize([row], since=0, baseline=choose_baseline(config))
    # strong: 200 uncached * $10 + 800 cached * $1 + 100 out * $30, per million
    assert summary.baseline_cost_usd == pytest.approx(0.0058, abs=1e-12)
