"""The dashboard: a page at `/` (and `/ui`) and the read-only endpoints it calls.

The page is static (ui/: HTML, one script, one style sheet, uPlot vendored with its licence); it
holds no data, so it loads without a client key and asks for the key, which it keeps in the
browser's session storage and sends as `Authorization: Bearer` on every call. Its endpoints under
`/ui/api/` need the key like every other endpoint, and show a client key its own requests only
(server/scope.py); the operator sees everyone's. Everything is served with a
Content-Security-Policy that allows nothing from elsewhere and no inline script.

Reads run in a thread on a read-only connection of their own, never on the ledger's writer; the
live feed is pushed from memory as requests finish (no ledger read), to each watcher's bounded
queue: a slow page misses rows rather than slowing the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pirouter_py.config import Config, ModelConfig
from pirouter_py.errors import RequestError
from pirouter_py.ledger import read, rollups
from pirouter_py.ledger.db import Connection, has_table
from pirouter_py.ledger.rows import ATTEMPT_COLUMNS, REQUEST_COLUMNS, rows_for
from pirouter_py.live.budgets import day_start, month_start
from pirouter_py.record import RequestRecord
from pirouter_py.reports import dashboard as panels
from pirouter_py.reports import stats
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
QUEUE = 256  # rows a watcher may fall behind before it misses some
PING_S = 15.0  # a comment line on an idle live feed, so proxies keep it open
BATCH_S = 0.1  # the live feed writes at most this often (rows of the meantime in one write)


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
        from datetime import datetime

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


def _read(
    place: tuple[Path | None, str | None],
    since: float,
    limit: int,
    prompts: bool = False,
    whose: Scope = None,
) -> list[dict[str, Any]]:
    """The newest `limit` requests since `since` (of `whose` client only, unless None); with
    `prompts`, each with its kept prompt and answer (None unless [ledger] store_prompts kept
    them), on the same connection."""
    db = _open(place)
    if db is None:
        return []
    try:
        rows = read.read_requests(db, since, limit, newest_first=True, client=whose)
        if prompts:
            kept = read.stored_prompts(db, [r["id"] for r in rows])
            answers: dict[str, str] = {}
            if rows and has_table(db, "prompts"):
                marks = ", ".join("?" * len(rows))
                query = f"SELECT request_id, answer FROM prompts WHERE request_id IN ({marks})"
                answers = dict(db.execute(query, [r["id"] for r in rows]))
            for row in rows:
                row["prompt"], row["answer"] = kept.get(row["id"]), answers.get(row["id"])
        return rows
    finally:
        db.close()


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
        first, last = math.ceil(since / rollups.HOUR), int(now) // rollups.HOUR
        ready = set(rollups.ready_hours(db, first, last))
        spans = [(since, first * rollups.HOUR)] if since < first * rollups.HOUR else []
        for hour in range(first, last + 1):
            if hour in ready:
                continue
            if spans and spans[-1][1] == hour * rollups.HOUR:
                spans[-1] = (spans[-1][0], (hour + 1) * rollups.HOUR)
            else:
                spans.append((hour * rollups.HOUR, (hour + 1) * rollups.HOUR))
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


async def newest(request: web.Request) -> web.Response:
    state = request.app[STATE]
    rows = await asyncio.to_thread(_read, _place(state), 0.0, NEWEST, True, scope.of(request))
    out = []
    for row in rows:
        item = panels.live_row(row)
        item["prompt"], item["answer"] = row.get("prompt"), row.get("answer")
        out.append(item)
    return _json({"requests": out})


async def overview(request: web.Request) -> web.Response:
    """The state of things: models cooling, keys resting, sessions, config, ledger."""
    state = request.app[STATE]
    snapshot = state.snapshot
    providers = snapshot.cascade.providers.items()
    rested = {n: p.rested.snapshot() for n, p in providers if hasattr(p, "rested")}
    config = snapshot.config
    whose = scope.of(request)
    if whose is not None:  # a client sees the models it may be routed to, nothing of others'
        return _json(
            {
                "scope": whose,
                "config_loaded_at": state.config_loaded_at,
                "started": state.started,
                "models": state.health.snapshot(),
                "catalog": sorted(a for a, m in config.models.items() if m.enabled),
                "store_prompts": config.ledger.store_prompts,
            }
        )
    body: dict[str, Any] = {
        "scope": None,
        "config": snapshot.loaded.source,
        "config_loaded_at": state.config_loaded_at,
        "started": state.started,
        "requests": state.served,
        "in_flight": state.in_flight,
        "models": state.health.snapshot(),
        "keys": {n: r for n, r in rested.items() if r},
        "sessions": len(snapshot.traffic.sessions.last),
        "limits": snapshot.traffic.limits.snapshot(),
        "catalog": sorted(a for a, m in config.models.items() if m.enabled),
        "store_prompts": config.ledger.store_prompts,
        "ledger": (
            asdict(state.ledger.status())
            if state.ledger is not None
            else {
                "path": (_place(state)[1] and "[ledger] url") or str(state.ledger_path),
                "failing": True,
                "last_error": state.ledger_error,
            }
        ),
    }
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
    item = panels.live_row(row)
    item["prompt"], item["answer"] = prompt, answer
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
