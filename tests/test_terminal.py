"""`stats` and `ledger tail` as people read them: golden renders at a fixed width (a week of
generated traffic, UTC), adaptive money, sparklines, relative --since, and words instead of
silence for an empty ledger."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer

from pirouter_py.cli import app
from pirouter_py.cli.ledger import parse_since
from pirouter_py.config import load_config
from pirouter_py.ledger import rows as ledger_rows
from pirouter_py.ledger import schema
from pirouter_py.reports.render import decimals, money, spark, usd
from tests.test_stats import CONFIG, attempt, record, runner

GOLDEN = Path(__file__).parent / "golden"
START = datetime(2026, 11, 20, tzinfo=UTC).timestamp()  # a Friday, 00:00 UTC


@pytest.fixture
def utc() -> Iterator[None]:
    """Local time is UTC for the test (renders name local times)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.fixture
def week(tmp_path: Path, write_config: Callable[[str], Path]) -> Path:
    """Seven days of traffic, growing day by day, one escalation and one failure a day."""
    path = tmp_path / "ledger.db"
    config = write_config(CONFIG.replace("{ledger}", str(path)))
    records = []
    for day in range(7):
        for i in range(day + 2):
            ts = START + day * 86_400 + 3_600 * (9 + i)
            rid = f"d{day}-{i}"
            if i == 0:
                records.append(
                    record(
                        rid,
                        ts,
                        "ok",
                        "strong",
                        900,
                        attempt("cheap", "escalated_short_response", (500, 3)),
                        attempt("strong", "ok", (500, 200 * (day + 1)), True),
                    )
                )
            elif i == 1:
                records.append(
                    record(rid, ts, "exhausted", None, 40, attempt("cheap", "escalated_http_error"))
                )
            else:
                tokens = (100 * i, 50 * i)
                records.append(
                    record(rid, ts, "ok", "cheap", 100 + i, attempt("cheap", "ok", tokens, True))
                )
    db = schema.connect(path)
    schema.migrate(db)
    ledger_rows.write_batch(db, records, load_config(config).config.models)
    db.close()
    return config


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("PIROUTER_UPDATE_GOLDEN"):  # regenerate: PIROUTER_UPDATE_GOLDEN=1 pytest
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_stats_golden_with_a_week_of_trend(week: Path, utc: None) -> None:
    result = runner.invoke(app, ["stats", "--since", "2026-11-20", "-c", str(week)])
    assert result.exit_code == 0, result.output
    golden("stats_week.txt", result.stdout)
    assert "trend 2026-11-20 .. 2026-11-26, per day" in result.stdout
    assert spark([2, 3, 4, 5, 6, 7, 8]) in result.stdout  # requests per day


def test_tail_golden(week: Path, utc: None) -> None:
    result = runner.invoke(app, ["ledger", "tail", "-n", "6", "-c", str(week)])
    assert result.exit_code == 0, result.output
    golden("tail.txt", result.stdout)


def test_empty_ledger_says_so(tmp_path: Path, write_config: Callable[[str], Path]) -> None:
    config = write_config(CONFIG.replace("{ledger}", str(tmp_path / "none.db")))
    result = runner.invoke(app, ["ledger", "tail", "-c", str(config)])
    assert result.exit_code == 0
    assert result.stdout == f"no requests yet in {tmp_path / 'none.db'}\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, "0"),
        (0.000123, "0.00012"),
        (0.0012, "0.0012"),
        (0.05, "0.050"),
        (0.5, "0.50"),
        (12.345, "12.35"),
        (1234.5, "1,234.50"),
    ],
)
def test_money_keeps_what_was_spent_visible(value: float, expected: str) -> None:
    assert money(value) == expected


@pytest.mark.parametrize(
    ("values", "places", "shown"),
    [
        ([0.0], 2, ["$0.00"]),
        ([0.0, 0.0018, 0.000023], 6, ["$0.000000", "$0.001800", "$0.000023"]),
        ([0.029004, 0.006, 0.0], 4, ["$0.0290", "$0.0060", "$0.0000"]),
        ([12.345, 0.5], 2, ["$12.35", "$0.50"]),
        ([1234.5, 0.05], 3, ["$1,234.500", "$0.050"]),
        ([1e-12], 8, ["$0.00000000"]),
    ],
)
def test_one_cost_format_per_report(values: list[float], places: int, shown: list[str]) -> None:
    """Every cost of a report has the decimals its smallest needs for two significant digits."""
    assert decimals(values) == places
    assert [usd(v, places) for v in values] == shown


def test_sparklines_scale_to_the_peak() -> None:
    assert spark([0, 1, 2, 4, 8]) == " ▁▂▄█"
    assert spark([0, 0]) == "▁▁"
    assert spark([]) == ""


def test_since_takes_ages_and_days(utc: None) -> None:
    now = datetime(2026, 11, 26, 15, 30, tzinfo=UTC).timestamp()
    assert parse_since("30m", now) == now - 1_800
    assert parse_since("12h", now) == now - 43_200
    assert parse_since("7d", now) == now - 7 * 86_400
    assert parse_since("2w", now) == now - 14 * 86_400
    assert parse_since("today", now) == datetime(2026, 11, 26, tzinfo=UTC).timestamp()
    assert parse_since("yesterday", now) == datetime(2026, 11, 25, tzinfo=UTC).timestamp()
    assert parse_since("2026-11-21", now) == datetime(2026, 11, 21, tzinfo=UTC).timestamp()
    with pytest.raises(typer.BadParameter, match="neither an age nor a date"):
        parse_since("soon", now)


LONG = """
[ledger]
path = "{ledger}"
[providers.openai]
[models."llama3.2-local-instruct"]
provider = "openai"
model_id = "l"
[models.fake-cheap-model]
provider = "openai"
model_id = "c"
input_per_m = 0.02
output_per_m = 0.04
[models.fake-strong-model]
provider = "openai"
model_id = "s"
input_per_m = 3.0
output_per_m = 15.0
"""
LONG_ALIASES = ("llama3.2-local-instruct", "fake-cheap-model", "fake-strong-model")


@pytest.fixture
def long_names(tmp_path: Path, write_config: Callable[[str], Path]) -> Path:
    """Three models whose aliases share a prefix, with costs from nothing to cents, a day."""
    path = tmp_path / "ledger.db"
    config = write_config(LONG.replace("{ledger}", str(path)))
    records = []
    for i, alias in enumerate(LONG_ALIASES * 3):
        records.append(
            record(
                f"r{i}",
                START + 3_600 * i,
                "ok",
                alias,
                100 * (i + 1),
                attempt(alias, "ok", (1000 * (i + 1), 100), True),
            )
        )
    db = schema.connect(path)
    schema.migrate(db)
    ledger_rows.write_batch(db, records, load_config(config).config.models)
    db.close()
    return config


def test_stats_at_80_columns_keeps_every_alias_whole(long_names: Path, utc: None) -> None:
    result = runner.invoke(
        app, ["stats", "--since", "2026-11-20", "-c", str(long_names)], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    golden("stats_long_aliases.txt", result.stdout)
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout and "..." not in result.stdout
    assert {line.split()[0] for line in lines if line.startswith(("llama", "fake"))} == set(
        LONG_ALIASES
    )
    # one format for every cost: a dollar sign and the same decimals (the smallest's two digits)
    header = next(line.split() for line in lines if line.startswith("model "))
    table = [line.split() for line in lines if line.startswith(("llama", "fake", "TOTAL"))]
    costs = [cells[header.index("cost")] for cells in table]
    assert costs == ["$0.00031", "$0.05850", "$0.00000", "$0.05881"]


def test_stats_on_a_terminal_at_80_columns_keeps_every_alias_whole(
    long_names: Path, utc: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rich table a terminal gets: columns dropped by priority, never an alias cut."""
    from pirouter_py.cli.ledger import _rich_summary
    from pirouter_py.ledger import read
    from pirouter_py.reports import stats

    monkeypatch.setenv("COLUMNS", "80")
    db = read.open_read_only(long_names.parent / "ledger.db", None)
    try:
        rows = read.read_requests(db, 0, None, False)
    finally:
        db.close()
    summary = stats.summarize(rows, since=START, by="model", baseline=None)
    _rich_summary(summary, "since 2026-11-20", stats.trend(rows))
    out = capsys.readouterr().out
    golden("stats_long_aliases_terminal.txt", out)
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    for alias in LONG_ALIASES:
        assert f" {alias} " in out
