"""The dashboard: a page at `/` (and `/ui`) and the read-only endpoints it calls.

The page is static (ui/: HTML, one script, one style sheet, uPlot vendored with its licence); it
holds no data, so it loads without a client key and asks for the key, which it keeps in the
browser's session storage and sends as `Authorization: Bearer` on every call. Its endpoints under
`/ui/api/` need the key like every other endpoint, and show a client key its own requests only
(server/scope.py); the operator sees everyone's. Everything is served with a
Content-Security-Policy that allows nothing from elsewhere and no inline script.

Endpoints (their bodies typed in reports/dashboard_api.py): `state` (models cooling, keys
resting, limits and budgets near their edge, the ledger's health, the config loaded and when),
`summary` (the window's panels), `series` (its time series, from the hourly rollups), `requests`
(the newest requests passing the filters of ledger/search.py: model, rule, status, client key,
protocol, text), `export` (the same rows as CSV or JSON), `learning` (labels per model and what
`pirouter learn` needs), `live` (server-sent events). Feedback is the API's own `POST
/v1/feedback` (server/feedback.py), sent by the page with its key.

Reads run in a thread on a read-only connection of their own, never on the ledger's writer
(bench/dashboard_reads.py measured aiosqlite against this: no faster per read); the live feed is
pushed from memory as requests finish (no ledger read), to each watcher's bounded queue: a slow
page misses rows rather than slowing the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pirouter_py.config import Config, ModelConfig
from pirouter_py.errors import RequestError
from pirouter_py.ledger import labels, read, rollups, search, timeline
from pirouter_py.ledger.db import Connection, has_table
from pirouter_py.ledger.rows import ATTEMPT_COLUMNS, REQUEST_COLUMNS, rows_for
from pirouter_py.live.budgets import day_start, month_start
from pirouter_py.record import RequestRecord
from pirouter_py.reports import dashboard as panels
from pirouter_py.reports import stats
from pirouter_py.reports import timeline as charts
from pirouter_py.reports.dashboard_api import (
    Cooling,
    LearningBody,
    LedgerHealth,
    Limit,
    RequestRow,
    RequestsBody,
    RestingKey,
    SeriesBody,
    StateBody,
)
from pirouter_py.server import scope
from pirouter_py.server.scope import Scope
from pirouter_py.server.state import JSON, STATE, State

UI = Path(__file__).parent / "ui"
FILES = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "vendor/uPlot.iife.min.js": "text/javascript",
    "vendor/uPlot.min.css": "text/css",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
WINDOWS = {"1h": 3_600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
NEWEST = 50  # requests the live table starts with
# The page's panels read at most this many requests' rows: summarised in Python, 20,000 rows take
# about a second and 80 MB for a moment. A window with more reads the ledger's hourly rollups
# (ledger/rollups.py) and only the rows of the hours they do not cover.
PAGE_ROWS = 20_000
LEARNING_ROWS = 20_000  # the labels panel counts the labels of at most this many newest requests
QUEUE = 256  # rows a watcher may fall behind before it misses some
PING_S = 15.0  # a comment line on an idle live feed, so proxies keep it open
BATCH_S = 0.1  # the live feed writes at most this often (rows of the meantime in one write)
NEAR_LIMIT = 0.2  # a model's rpm / tpm is near its edge with less than this share left
NEAR_BUDGET = 0.8  # a budget is near its edge with this share spent


def is_shell(path: str) -> bool:
    """The page itself and its static files: no data, no key needed."""
    return path in ("/", "/ui", "/ui/") or path.startswith("/ui/static/")


async def index(request: web.Request) -> web.Response:
    body = (UI / "index.html").read_bytes()
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers=SECURITY)


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = FILES.get(name)
    if kind is None:
        raise web.HTTPNotFound()
    body = (UI / name).read_bytes()
    return web.Response(body=body, content_type=kind, charset="utf-8", headers=SECURITY)


def _window(request: web.Request, now: float) -> tuple[float, str]:
    query = request.query
    if "since" in query:
        try:
            return datetime.fromisoformat(query["since"]).timestamp(), f"since {query['since']}"
        except ValueError:
            raise RequestError(f"since={query['since']!r} is not an ISO date or time") from None
    name = query.get("window", "24h")
    if name not in WINDOWS:
        raise RequestError(f"window={name!r}: use one of {', '.join(WINDOWS)}, or since=DATE")
    return now - WINDOWS[name], f"last {name}"


def _open(place: tuple[Path | None, str | None]) -> Connection | None:
    """A read-only connection to the daemon's ledger (file or [ledger] url), if it keeps one."""
    path, url = place
    return None if path is None else read.open_read_only(path, url)


def _budgets(place: tuple[Path | None, str | None], config: Config) -> list[dict[str, Any]]:
    """Each configured budget against today's and this month's spend (as `stats` shows it)."""
    if not config.has_budgets:
        return []
    db = _open(place)
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
    return [
        {"budget": b.key, "limit_usd": b.limit, "spent_usd": b.spent, "percent": b.percent}
        for b in stats.budget_burn(config, today, month)
    ]


def _place(state: State) -> tuple[Path | None, str | None]:
    return state.ledger_path, state.ledger_url


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type=JSON, headers=SECURITY)


def _read_window(
    place: tuple[Path | None, str | None], since: float, now: float, whose: Scope = None
) -> tuple[list[Any], bool, bool]:
    """What the panels need of a window, in one read transaction: up to PAGE_ROWS requests,
    newest first (`rolled` False); or, for more, the hourly rollups of the hours they cover and
    the rows of the others (`rolled` True). `cut`: rows were left out. A client's own window
    (`whose`) is read from its rows alone: the rollups' timings and flows mix every client's."""
    db = _open(place)
    if db is None:
        return [], False, False
    try:
        if whose is not None:
            mine = read.read_requests(db, since, PAGE_ROWS + 1, True, client=whose)
            return mine, False, len(mine) > PAGE_ROWS
        db.execute("BEGIN")
        if read.count_since(db, since, PAGE_ROWS + 1) <= PAGE_ROWS or not rollups.has(db):
            newest = read.read_requests(db, since, PAGE_ROWS + 1, newest_first=True)
            return newest, False, len(newest) > PAGE_ROWS
        first, last, spans = _spans(db, since, now)
        rows: list[dict[str, Any]] = []
        for lo, hi in reversed(spans):  # the newest first, when some must be left out
            rows += read.read_requests(db, lo, PAGE_ROWS + 1 - len(rows), True, until=hi)
            if len(rows) > PAGE_ROWS:
                break
        parts = [rollups.read(db, first, last), panels.rolled_up(rows[:PAGE_ROWS])]
        return parts, True, len(rows) > PAGE_ROWS
    finally:
        db.close()


async def summary(request: web.Request) -> web.Response:
    state = request.app[STATE]
    now = time.time()
    since, window = _window(request, now)
    whose = scope.of(request)
    found, rolled, cut = await asyncio.to_thread(_read_window, _place(state), since, now, whose)
    config = state.snapshot.config
    baseline = stats.choose_baseline(config)
    if rolled:
        if cut:
            window = f"{window}, without some requests of hours not yet rolled up"
        body = panels.page_rolled(found, since=since, until=now, baseline=baseline, window=window)
    else:
        if cut:
            found = found[:PAGE_ROWS]
            since, window = found[-1]["ts"], f"{window}, its newest {PAGE_ROWS:,} requests"
        found.reverse()  # oldest first, as stats reads them
        body = panels.page(found, since=since, until=now, baseline=baseline, window=window)
    body["cut"] = cut
    body["rolled_up"] = rolled
    # budgets sum every client's spend: the operator's
    body["budgets"] = (
        [] if whose is not None else await asyncio.to_thread(_budgets, _place(state), config)
    )
    return _json(body)


def _filters(request: web.Request) -> search.Filters:
    try:
        return search.Filters.of(request.query)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def _limit(request: web.Request, default: int) -> int:
    try:
        return max(1, min(int(request.query.get("limit", default)), search.MAX_ROWS))
    except ValueError:
        raise RequestError(f"limit={request.query['limit']!r} is not a whole number") from None


def _find(
    place: tuple[Path | None, str | None],
    filters: search.Filters,
    since: float,
    limit: int,
    whose: Scope,
) -> tuple[list[RequestRow], bool]:
    """The newest `limit` requests since `since` passing `filters` (of `whose` client only,
    unless None), each with its feedback, kept prompt and answer; and whether prompts are kept
    (so text can be searched)."""
    db = _open(place)
    if db is None:
        return [], False
    try:
        return find_on(db, filters, since, limit, whose)
    finally:
        db.close()


def find_on(
    db: Connection, filters: search.Filters, since: float, limit: int, whose: Scope
) -> tuple[list[RequestRow], bool]:
    """`_find` on an open connection."""
    rows = search.find(db, filters, since=since, limit=limit, whose=whose)
    kept = has_table(db, "prompts")
    if rows and kept:
        texts = {
            rid: (body, answer)
            for rid, body, answer in read.stored_texts(db, [r["id"] for r in rows])
        }
        for row in rows:
            row["prompt"], row["answer"] = texts.get(row["id"], (None, None))
    return [panels.live_row(r) for r in rows], kept


async def newest(request: web.Request) -> web.Response:
    """The newest requests of the window (all of them without one) passing the filters."""
    state = request.app[STATE]
    filters, limit = _filters(request), _limit(request, NEWEST)
    since = _window(request, time.time())[0] if _windowed(request) else 0.0
    rows, kept = await asyncio.to_thread(
        _find, _place(state), filters, since, limit, scope.of(request)
    )
    body: RequestsBody = {
        "requests": rows,
        "filters": filters.given(),
        "limit": limit,
        "searchable": kept or state.snapshot.config.ledger.store_prompts,
    }
    return _json(body)


def _windowed(request: web.Request) -> bool:
    return "window" in request.query or "since" in request.query


CSV_COLUMNS = (
    *("id", "time", "status", "kind", "rule", "model", "protocol", "client", "app", "session"),
    *("input_tokens", "output_tokens", "cost_usd", "latency_ms", "ttft_ms", "overhead_ms"),
    *("attempts", "feedback", "prompt", "answer"),
)


def csv_text(rows: list[RequestRow]) -> str:
    """Rows as CSV: one line per request, its attempts as `alias:outcome` joined by `>`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        when = datetime.fromtimestamp(r["ts"], UTC).isoformat(timespec="milliseconds")
        path = " > ".join(f"{a['alias']}:{a['outcome']}" for a in r["attempts"])
        writer.writerow(
            [
                *(r["id"], when, r["status"], r["kind"], r["rule"], r["model"], r["protocol"]),
                *(r["client"], r["app"], r["session"], r["input_tokens"], r["output_tokens"]),
                *(r["cost_usd"], r["latency_ms"], r["ttft_ms"], r["overhead_ms"], path),
                *(r["feedback"], r["prompt"], r["answer"]),
            ]
        )
    return out.getvalue()


async def export(request: web.Request) -> web.Response:
    """The requests table's rows, filtered as it is, as a CSV or JSON download (at most
    search.MAX_ROWS, newest first)."""
    state = request.app[STATE]
    kind = request.query.get("format", "csv")
    if kind not in ("csv", "json"):
        raise RequestError(f"format={kind!r}: use csv or json")
    filters, limit = _filters(request), _limit(request, search.MAX_ROWS)
    since = _window(request, time.time())[0] if _windowed(request) else 0.0
    rows, _ = await asyncio.to_thread(
        _find, _place(state), filters, since, limit, scope.of(request)
    )
    name = f"pirouter-requests-{time.strftime('%Y%m%d-%H%M%S')}.{kind}"
    headers = {**SECURITY, "content-disposition": f'attachment; filename="{name}"'}
    if kind == "json":
        return web.Response(body=orjson.dumps(rows), content_type=JSON, headers=headers)
    return web.Response(text=csv_text(rows), content_type="text/csv", headers=headers)


def _spans(db: Connection, since: float, now: float) -> tuple[int, int, list[tuple[float, float]]]:
    """The hours first..last the window covers, and the spans of it (oldest first) that the
    rollups do not: the window's first partial hour and every hour not ready."""
    first, last = math.ceil(since / rollups.HOUR), int(now) // rollups.HOUR
    ready = set(rollups.ready_hours(db, first, last))
    spans: list[tuple[float, float]] = []
    if since < first * rollups.HOUR:
        spans.append((since, first * rollups.HOUR))
    for hour in range(first, last + 1):
        if hour in ready:
            continue
        if spans and spans[-1][1] == hour * rollups.HOUR:
            spans[-1] = (spans[-1][0], (hour + 1) * rollups.HOUR)
        else:
            spans.append((hour * rollups.HOUR, (hour + 1) * rollups.HOUR))
    return first, last, spans


def _read_series(
    place: tuple[Path | None, str | None],
    since: float,
    now: float,
    minutes: bool,
    whose: Scope,
    baseline: stats.Baseline | None,
) -> SeriesBody:
    """The window's time series: from rows alone for the 1 h window (minutes) and a client's
    own view (the rollups mix every client's); else rollups for the ready hours and rows for the
    others, in one read transaction. At most PAGE_ROWS rows are read (the newest)."""
    hours: list[Any] = []
    times: list[Any] = []
    rows: list[dict[str, Any]] = []
    db = _open(place)
    if db is not None:
        try:
            if minutes or whose is not None or not rollups.has(db):
                rows = read.read_requests(db, since, PAGE_ROWS, True, client=whose)
            else:
                db.execute("BEGIN")
                first, last, spans = _spans(db, since, now)
                hours, times = timeline.hourly(db, first, last)
                for lo, hi in reversed(spans):
                    rows += read.read_requests(db, lo, PAGE_ROWS - len(rows), True, until=hi)
                    if len(rows) >= PAGE_ROWS:
                        break
        finally:
            db.close()
    return charts.series(
        hours, times, rows, since=since, until=now, minutes=minutes, baseline=baseline
    )


async def series(request: web.Request) -> web.Response:
    state = request.app[STATE]
    now = time.time()
    since, _ = _window(request, now)
    minutes = "since" not in request.query and request.query.get("window", "24h") == "1h"
    baseline = stats.choose_baseline(state.snapshot.config)
    body = await asyncio.to_thread(
        _read_series, _place(state), since, now, minutes, scope.of(request), baseline
    )
    return _json(body)


def _read_learning(place: tuple[Path | None, str | None]) -> LearningBody:
    """The labels of the newest LEARNING_ROWS requests at most (reading a ledger's every label
    takes ~28 µs a request: 28 s for a million), counted without their texts."""
    db = _open(place)
    lines: list[dict[str, Any]] = []
    newest = None
    if db is not None:
        try:
            since = 0.0
            cut = db.execute(
                "SELECT ts FROM requests ORDER BY ts DESC LIMIT 1 OFFSET ?", (LEARNING_ROWS,)
            ).fetchone()
            if cut is not None:  # more than LEARNING_ROWS requests: the newest only
                since, newest = float(cut[0]) + 1, LEARNING_ROWS
            lines = labels.read_labels(db, since, with_text=False)
        finally:
            db.close()
    return panels.learning(
        lines,
        min_labels=labels.MIN_LABELS,
        min_each=labels.MIN_EACH,
        good=labels.GOOD,
        shortfall=labels.shortfall,
        newest=newest,
    )


async def learning(request: web.Request) -> web.Response:
    """The labels the ledger holds per model and what `pirouter learn` needs: the operator's
    (labels come from every client's requests); a client key gets a 404."""
    if scope.of(request) is not None:
        raise web.HTTPNotFound()
    return _json(await asyncio.to_thread(_read_learning, _place(request.app[STATE])))


def _near_limits(config: Config, limits: dict[str, dict[str, float]]) -> list[Limit]:
    out: list[Limit] = []
    for alias, left in sorted(limits.items()):
        model = config.models.get(alias)
        if model is None:
            continue
        for kind, name in (("rpm", "rpm_left"), ("tpm", "tpm_left")):
            most = model.rpm if kind == "rpm" else model.tpm
            if most is None or name not in left:
                continue
            near = left[name] < most * NEAR_LIMIT
            out.append(
                {"model": alias, "kind": kind, "limit": most, "left": left[name], "near": near}  # type: ignore[typeddict-item]
            )
    return out


async def overview(request: web.Request) -> web.Response:
    """The state of things: models cooling, keys resting, limits and budgets near their edge,
    the ledger's health, the config loaded and when."""
    state = request.app[STATE]
    snapshot = state.snapshot
    config = snapshot.config
    whose = scope.of(request)
    cooling: list[Cooling] = [
        {
            "model": alias,
            "left_s": h["cooldown_left_s"],
            "why": h["last_error"],
            "failures": h["failures"],
            "down": h["down"],
        }
        for alias, h in state.health.snapshot().items()
        if h["cooling"]
    ]
    body: StateBody = {
        "scope": whose,
        "config_loaded_at": state.config_loaded_at,
        "started": state.started,
        "now": time.time(),
        "catalog": sorted(a for a, m in config.models.items() if m.enabled),
        "store_prompts": config.ledger.store_prompts,
        "cooling": cooling,
    }
    if whose is not None:  # a client sees the models it may be routed to, nothing of others'
        return _json(body)
    resting: list[RestingKey] = []
    for provider, p in sorted(snapshot.cascade.providers.items()):
        if not hasattr(p, "rested"):
            continue
        for key, h in sorted(p.rested.snapshot().items()):
            if h["cooling"]:
                resting.append(
                    {
                        "provider": provider,
                        "key": key,
                        "left_s": h["cooldown_left_s"],
                        "why": h["last_error"],
                    }
                )
    burns = await asyncio.to_thread(_budgets, _place(state), config)
    if state.ledger is not None:
        status = state.ledger.status()
        ledger: LedgerHealth = {
            "path": status.path,
            "failing": status.failing,
            "last_error": status.last_error,
            "backlog": status.backlog,
            "written": status.written,
            "spilled": status.spilled,
            "unsaved": status.unsaved,
        }
    else:
        ledger = {
            "path": (_place(state)[1] and "[ledger] url") or str(state.ledger_path),
            "failing": True,
            "last_error": state.ledger_error or "the daemon keeps no ledger",
            "backlog": 0,
            "written": 0,
            "spilled": 0,
            "unsaved": 0,
        }
    body.update(
        {
            "config": snapshot.loaded.source,
            "requests": state.served,
            "in_flight": state.in_flight,
            "keys": resting,
            "limits": _near_limits(config, snapshot.traffic.limits.snapshot()),
            "budgets": [{**b, "near": b["percent"] >= 100 * NEAR_BUDGET} for b in burns],  # type: ignore[typeddict-item]
            "sessions": len(snapshot.traffic.sessions.last),
            "ledger": ledger,
        }
    )
    return _json(body)


async def live(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one `data:` line of JSON per finished request."""
    state = request.app[STATE]
    response = web.StreamResponse(
        headers={**SECURITY, "content-type": "text/event-stream", "x-accel-buffering": "no"}
    )
    await response.prepare(request)
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE)
    state.watchers[queue] = scope.of(request)
    try:
        await response.write(b": connected\n\n")
        while not state.draining:
            try:
                lines = [await asyncio.wait_for(queue.get(), PING_S)]
            except TimeoutError:
                lines = [b": ping\n\n"]
            # under load, one write carries every row of the last BATCH_S
            await asyncio.sleep(BATCH_S)
            while not queue.empty():
                lines.append(queue.get_nowait())
            await response.write(b"".join(lines))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        state.watchers.pop(queue, None)
    return response


def publish(
    state: State,
    made: RequestRecord,
    models: Mapping[str, ModelConfig],
    prompt: str | None,
    answer: str | None,
) -> None:
    """Hand a finished request to every page watching the live feed (the caller checks there
    is one), in the shape of its ledger rows; `prompt` and `answer` only with [ledger]
    store_prompts."""
    request, attempts = rows_for(made, models)
    row: dict[str, Any] = dict(zip(REQUEST_COLUMNS, request, strict=True))
    row["attempts"] = [dict(zip(ATTEMPT_COLUMNS, a, strict=True)) for a in attempts]
    row["prompt"], row["answer"] = prompt, answer
    item = panels.live_row(row)
    line = b"data: " + orjson.dumps(item) + b"\n\n"
    for queue, whose in state.watchers.items():
        if not scope.sees(whose, made.client):  # a client's feed carries its requests alone
            continue
        with contextlib.suppress(asyncio.QueueFull):  # a page that fell behind misses rows
            queue.put_nowait(line)


def routes(app: web.Application) -> None:
    add = app.router
    add.add_get("/", index)
    add.add_get("/ui", index)
    add.add_get("/ui/", index)
    add.add_get("/ui/static/{name:.+}", static)
    add.add_get("/ui/api/summary", summary)
    add.add_get("/ui/api/requests", newest)
    add.add_get("/ui/api/state", overview)
    add.add_get("/ui/api/live", live)
    add.add_get("/ui/api/series", series)
    add.add_get("/ui/api/export", export)
    add.add_get("/ui/api/learning", learning)
