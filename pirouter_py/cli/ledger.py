"""`pirouter stats`, `pirouter feedback` and `pirouter ledger path|tail|export`: the ledger file.

Registered on the CLI's `app` when `cli` imports this module; the ledger is read read-only,
except by `feedback`, which adds one row.
"""

import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pirouter_py.cli.common import (
    ConfigOption,
    JsonOption,
    app,
    ask_daemon,
    checked_url,
    fail,
    guard,
    ledger_file,
    ledger_where,
    load,
    open_ledger,
    print_json,
    running_daemon,
)
from pirouter_py.errors import ExitCode

if TYPE_CHECKING:  # pydantic costs ~100 ms: not for `pirouter --help`
    from pirouter_py.config import LoadedConfig

# ---------------------------------------------------------------------------------------------
# stats and ledger


class Dimension(StrEnum):
    model = "model"
    rule = "rule"
    provider = "provider"
    day = "day"
    status = "status"
    client = "client"


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only requests from this time on: an age (30m, 12h, 7d, 2w), today, yesterday, "
        "or an ISO 8601 date or time (local unless it names a zone), e.g. 2026-11-21T09:00.",
        show_default=False,
    ),
]

OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Write here instead of standard output.", show_default=False
    ),
]


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


AGE_UNITS = {"m": 60, "min": 60, "h": 3_600, "d": 86_400, "w": 7 * 86_400}


def parse_since(value: str, now: float | None = None) -> float:
    """A --since value as a unix time: an age (`30m`, `12h`, `7d`, `2w`: before now), `today`
    or `yesterday` (local midnight), or an ISO 8601 date or time."""
    import re
    import time
    from datetime import datetime, timedelta

    now = time.time() if now is None else now
    text = value.strip().lower()
    if text in ("today", "yesterday"):
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        if text == "yesterday":  # by the calendar: a day of 23 or 25 hours stays a day
            midnight = (midnight - timedelta(hours=12)).replace(hour=0)
        return midnight.timestamp()
    age = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(m|min|h|d|w)", text)
    if age:
        return now - float(age.group(1)) * AGE_UNITS[age.group(2)]
    try:
        return datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither an age nor a date: use e.g. 30m, 12h, 7d, 2w, today, "
            "yesterday, 2026-11-21 or 2026-11-21T09:00",
            param_hint="--since",
        ) from None


def _read_rows(
    loaded: "LoadedConfig", since: float, limit: int | None = None, newest_first: bool = False
) -> list[dict[str, Any]]:
    from pirouter_py.ledger import read

    db = open_ledger(loaded)
    if db is None:
        return []
    try:
        return read.read_requests(db, since, limit, newest_first)
    finally:
        db.close()


FRESH_ROW_WAIT_S = 2.0  # how long feedback waits for the row of an answer just given


def _newest_request(ctx: typer.Context, config: Path | None) -> str:
    """The id of the newest request in the config's ledger (what `feedback last` scores),
    said on stderr with its model and time; exit 1 when the ledger holds none."""
    loaded = guard(lambda: load(ctx, config, warn=False))
    db = open_ledger(loaded)
    row = None
    if db is not None:
        try:
            row = db.execute(
                "SELECT id, final_model, ts FROM requests "
                "ORDER BY COALESCE(ts_ms, ts * 1000) DESC LIMIT 1"
            ).fetchone()
        finally:
            db.close()
    if row is None:
        fail(f"no request in the ledger {ledger_where(loaded)} yet", ExitCode.RUNTIME)
    when = time.strftime("%H:%M:%S", time.localtime(row[2]))
    sys.stderr.write(f"the newest request: {row[0]} ({row[1]}, {when})\n")
    return str(row[0])


@app.command("feedback")
def feedback_command(
    ctx: typer.Context,
    request_id: Annotated[
        str,
        typer.Argument(
            help="The x-pirouter-request-id of the answer, or `last`: the newest request.",
            show_default=False,
        ),
    ],
    score: Annotated[
        str, typer.Argument(help="good, bad, or a number from 0 to 1.", show_default=False)
    ],
    comment: Annotated[
        str | None, typer.Option("--comment", help="What was wrong or right.", show_default=False)
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Give it to the daemon at this address, e.g. http://127.0.0.1:18402 "
            "(default: the running daemon, from its run file, else straight into the ledger).",
            metavar="<url>",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Say how good an answer was (kept for learning).

    REQUEST_ID is the answer's x-pirouter-request-id (`pirouter ledger tail` shows them), or
    `last` for the newest request in the ledger. With a running daemon (--url, or its run
    file), the feedback goes through it; otherwise straight into the config's ledger. An id
    that names no request is an error (exit 1)."""
    from pirouter_py.ledger import feedback

    try:
        value = feedback.parse_score(score)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SCORE") from None
    if request_id.lower() == "last":
        request_id = _newest_request(ctx, config)
    daemon = checked_url(url) if url is not None else running_daemon()
    if daemon is not None and _feedback_to_daemon(daemon, request_id, value, comment, url):
        return
    loaded = guard(lambda: load(ctx, config, warn=False))
    where = ledger_where(loaded)
    url = loaded.config.ledger.url
    if url is None and not ledger_file(loaded).exists():  # asking would make an empty one
        fail(
            f"no request {request_id} in the ledger {where}: it holds no requests yet",
            ExitCode.RUNTIME,
        )
    import sqlite3

    try:
        known, _ = feedback.owner(ledger_file(loaded), request_id, url)
        waited = 0.0
        while not known and waited < FRESH_ROW_WAIT_S:  # the writer commits within 0.25 s
            time.sleep(0.25)
            waited += 0.25
            known, _ = feedback.owner(ledger_file(loaded), request_id, url)
        if not known:
            fail(
                f"no request {request_id} in the ledger {where}; its id is the answer's "
                "x-pirouter-request-id, as `pirouter ledger tail` shows (an answer of a moment "
                "ago may not be written yet: try again in a second)",
                ExitCode.RUNTIME,
            )
        feedback.record(ledger_file(loaded), request_id, value, comment, "cli", url)
    except (OSError, sqlite3.Error) as exc:
        fail(f"cannot write to the ledger {where}: {exc}", ExitCode.RUNTIME)
    sys.stdout.write(f"feedback {value:g} on {request_id} kept in {where}\n")


def _feedback_to_daemon(
    daemon: str, request_id: str, score: float, comment: str | None, asked: str | None
) -> bool:
    """Give the feedback to the daemon at `daemon` (POST /v1/feedback); False when it does not
    answer and was not named by --url (`asked`): the ledger then takes it directly."""
    import urllib.error
    import urllib.request

    body = json.dumps({"request_id": request_id, "score": score, "comment": comment}).encode()
    request = urllib.request.Request(
        daemon + "/v1/feedback", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with ask_daemon(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError, OSError):
            message = f"HTTP {exc.code}"
        if exc.code == 404:
            fail(
                f"no request {request_id} at the daemon {daemon}; its id is the answer's "
                "x-pirouter-request-id, as `pirouter ledger tail` shows",
                ExitCode.RUNTIME,
            )
        fail(f"the daemon at {daemon} refused the feedback: {message}", ExitCode.RUNTIME)
    except OSError as exc:
        if asked is None:
            return False
        reason = getattr(exc, "reason", exc)
        fail(f"pirouter is not answering at {daemon} ({reason})", ExitCode.RUNTIME)
    sys.stdout.write(f"feedback {score:g} on {request_id} kept by the daemon at {daemon}\n")
    return True


@app.command("stats")
def stats_command(
    ctx: typer.Context,
    hours: Annotated[
        int | None,
        typer.Option("--hours", help="The last N hours (default 24).", show_default=False, min=1),
    ] = None,
    since: SinceOption = None,
    by: Annotated[
        Dimension, typer.Option("--by", help="Group the table by this.")
    ] = Dimension.model,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Report requests, escalations, failures, cost and savings."""
    import time

    from pirouter_py.reports import render as report
    from pirouter_py.reports import stats

    if hours is not None and since is not None:
        raise typer.BadParameter("give --hours or --since, not both", param_hint="--since")
    hours = 24 if hours is None else hours  # v0.1's default window
    start = parse_since(since) if since is not None else time.time() - hours * 3600
    window = (
        f"since {since}" if since is not None else f"last {hours} hour{'s' if hours != 1 else ''}"
    )
    loaded = guard(lambda: load(ctx, config))
    rows = guard(lambda: _read_rows(loaded, start))
    summary = stats.summarize(
        rows, since=start, by=by.value, baseline=stats.choose_baseline(loaded.config)
    )
    burns = guard(lambda: _budget_burn(loaded))
    if as_json:
        doc = report.summary_json(summary, {"since": start, "window": window})
        doc["budgets"] = [
            {"budget": b.key, "limit_usd": b.limit, "spent_usd": b.spent, "percent": b.percent}
            for b in burns
        ]
        print_json(doc)
        return
    if not rows:  # v0.1's words
        sys.stdout.write(
            f"no requests since {since}\n"
            if since is not None
            else f"no requests in the last {hours} hour(s)\n"
        )
    elif sys.stdout.isatty():  # colour and rules on a terminal; the same text otherwise
        _rich_summary(summary, window, stats.trend(rows))
    else:
        width = _width()
        sys.stdout.write(report.summary_text(summary, window, stats.trend(rows), width))
    if burns:
        width = max(len(b.key) for b in burns)
        lines = ["", "budgets (today and this month, local time):"]
        lines += [
            f"  {b.key:<{width}}  ${b.spent:.2f} of ${b.limit:.2f}  {b.percent:5.1f}%"
            + ("  SPENT" if b.spent >= b.limit else "")
            for b in burns
        ]
        sys.stdout.write("\n".join(lines) + "\n")


def _width() -> int:
    """The width a plain report fits: $COLUMNS when set, else 80 (it goes to a file or a pipe,
    read later on some terminal)."""
    import os

    from pirouter_py.reports import render as report

    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else report.WIDTH


def _rich_summary(summary: Any, window: str, trend: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from pirouter_py.reports import render as report

    console = Console(highlight=False)
    places = report.cost_places(summary, trend)
    head = report.summary_head(summary, window, places)
    console.print(f"[bold]{head[0]}[/bold]")
    for line in [*head[1:], "", *report.trend_lines(trend, places)]:
        console.print(line, markup=False)
    # a box: a border beside each column and one space of padding each side
    headers, rows, left_out = report.fitted_rows(
        summary, console.width, lambda n: 3 * n + 1, places
    )
    table = Table(header_style="bold cyan", show_footer=False)
    for i, header in enumerate(headers):  # no cell is ever cut: an alias shows whole
        table.add_column(header, justify="right" if i else "left", no_wrap=True, overflow="fold")
    for row in rows[:-1]:
        table.add_row(*row)
    table.add_row(*rows[-1], style="bold", end_section=True)
    console.print(table)
    for line in report.left_out_line(left_out, console.width):
        console.print(line, markup=False)


def _budget_burn(loaded: "LoadedConfig") -> list[Any]:
    import time

    from pirouter_py.ledger import read
    from pirouter_py.live.budgets import day_start, month_start
    from pirouter_py.reports import stats

    if not loaded.config.has_budgets:
        return []
    db = open_ledger(loaded)
    today: dict[str, float] = {}
    month: dict[str, float] = {}
    if db is not None:
        now = time.time()
        try:
            today, month = read.spend_since(
                db, day_start(now).timestamp(), month_start(now).timestamp()
            )
        finally:
            db.close()
    return stats.budget_burn(loaded.config, today, month)


ledger_app = typer.Typer(
    help="The ledger: its path, newest rows, export, labels.",
    no_args_is_help=True,
)
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("path")
def ledger_path(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Print where the ledger is (its file, or [ledger] url).

    A url is printed with its password hidden."""
    loaded = guard(lambda: load(ctx, config))
    sys.stdout.write(f"{ledger_where(loaded)}\n")


@ledger_app.command("tail")
def ledger_tail(
    ctx: typer.Context,
    lines: Annotated[
        int, typer.Option("-n", "--lines", help="How many of the newest requests.", min=1)
    ] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new requests until interrupted.")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the newest requests with their ids, one per line.

    The id is what `pirouter feedback` takes. JSON lines with --json."""
    import time

    from pirouter_py.reports import render as report

    loaded = guard(lambda: load(ctx, config))

    def show(row: dict[str, Any]) -> None:
        sys.stdout.write((json.dumps(row) if as_json else report.tail_line(row)) + "\n")

    rows = guard(lambda: _read_rows(loaded, 0, lines, newest_first=True))
    if not as_json:
        if not rows:
            sys.stdout.write(f"no requests yet in {ledger_where(loaded)}\n")
        if rows or follow:
            sys.stdout.write(report.TAIL_HEADER + "\n")
    for row in reversed(rows):
        show(row)
    if not follow:
        return
    seen = {r["id"] for r in rows}
    newest = max((r["ts"] for r in rows), default=time.time())
    try:
        while True:
            sys.stdout.flush()
            time.sleep(1.0)
            for row in _read_rows(loaded, newest):
                if row["id"] not in seen:
                    seen.add(row["id"])
                    newest = max(newest, row["ts"])
                    show(row)
    except KeyboardInterrupt:
        return


@ledger_app.command("export")
def ledger_export(
    ctx: typer.Context,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format", help="csv: one row per request; jsonl: requests with their attempts."
        ),
    ] = ExportFormat.jsonl,
    since: SinceOption = None,
    output: OutputOption = None,
    config: ConfigOption = None,
) -> None:
    """Export ledger rows as CSV or JSON lines."""
    import csv
    import io

    loaded = guard(lambda: load(ctx, config))
    rows = guard(lambda: _read_rows(loaded, parse_since(since) if since else 0))
    out = io.StringIO()
    if fmt is ExportFormat.jsonl:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    elif rows:
        from datetime import datetime

        fields = [k for k in rows[0] if k != "attempts"]
        fields.insert(fields.index("ts") + 1, "time")  # ISO 8601 beside the unix seconds
        for row in rows:
            ms = row.get("ts_ms") or row["ts"] * 1000  # v0.1 rows keep seconds only
            when = datetime.fromtimestamp(ms / 1000).astimezone()
            row["time"] = when.isoformat(timespec="milliseconds")
        writer = csv.DictWriter(out, fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    _write(out.getvalue(), output)
    if output is not None:
        sys.stderr.write(f"wrote {len(rows)} requests ({fmt.value}) to {output}\n")


@ledger_app.command("labels")
def ledger_labels(
    ctx: typer.Context,
    since: SinceOption = None,
    output: OutputOption = None,
    config: ConfigOption = None,
) -> None:
    """Print labelled prompts from use, as JSON lines.

    Each model's score per request (1 answered, 0 escalated by a check, feedback where given)
    and its tokens; the text only if stored."""
    from pirouter_py.ledger import labels

    loaded = guard(lambda: load(ctx, config))
    start = parse_since(since) if since else 0.0
    db = open_ledger(loaded)
    lines: list[dict[str, Any]] = []
    if db is not None:
        try:
            lines = labels.read_labels(db, start)
        finally:
            db.close()
    text = "".join(json.dumps(line) + "\n" for line in lines)
    _write(text, output)
    # how many labels each source gave (`learn` weighs them), on stderr: stdout is the lines
    counted = ", ".join(f"{source} {n}" for source, n in labels.by_source(lines).items())
    said = f"{len(lines)} labelled requests"
    said = f"wrote {said} to {output}" if output is not None else said
    sys.stderr.write(f"{said}; labels by source: {counted or 'none'}\n")


@ledger_app.command("migrate")
def ledger_migrate(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The PostgreSQL database to copy into: postgresql://user@host:5432/db.",
            show_default=False,
        ),
    ],
    source: Annotated[
        Path | None,
        typer.Option(
            "--from", help="The SQLite ledger to copy (default: this config's).", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Copy a SQLite ledger into PostgreSQL.

    Run it again to resume: nothing is copied twice."""
    import sqlite3

    from pirouter_py.config.schema import postgres_url
    from pirouter_py.ledger import copy
    from pirouter_py.ledger.db import redact

    try:
        postgres_url(to)
    except ValueError as exc:
        raise typer.BadParameter(f"{to!r}: {exc}", param_hint="--to") from None
    loaded = guard(lambda: load(ctx, config))
    path = source or ledger_file(loaded)

    def progress(table: str, done: int) -> None:
        sys.stderr.write(f"\r{table}: {done:,} rows")

    try:
        copied = copy.copy(path, to, progress)
    except copy.NothingToCopy as exc:
        fail(f"{exc}: nothing to copy (--from names another file)", ExitCode.USAGE)
    except (OSError, sqlite3.Error) as exc:
        fail(f"cannot copy {path} to {redact(to)}: {exc}", ExitCode.RUNTIME)
    counts = ", ".join(f"{n:,} {table}" for table, n in copied.items())
    sys.stderr.write("\r" if copied else "")
    sys.stdout.write(
        f"copied {counts} from {path} to {redact(to)}\n"
        f'use it: set [ledger] url = "{redact(to)}" (pirouter config set ledger.url URL)\n'
    )
