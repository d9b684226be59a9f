"""The dashboard: the page served by the daemon, its endpoints and who may see them, and the page
itself in a real headless Chromium (Debian's, driven by Playwright) against a generated ledger:
panels show what `pirouter stats --json` says, a request sent during the test shows in the live
table within 2 s, a page without the key sees nothing, screenshots at two widths."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.config import load_config
from pirouter_py.ledger import rows as ledger_rows
from pirouter_py.ledger import schema
from pirouter_py.record import Attempt, RequestRecord
from pirouter_py.reports.render import money
from tests.conftest import need
from tests.fakes import Daemon, FakeUpstream

KEY = "dashboard-test-key"
CLIENT_KEY = "dashboard-client-key"  # a client's own: the page shows it only its requests
CONFIG = """
[server]
admin_keys_env = ["PIROUTER_UI_KEY"]
api_keys_env = ["PIROUTER_UI_CLIENT_KEY"]
[budget]
daily_usd = 5.0
[ledger]
path = "{ledger}"
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.cheap]
provider = "fake"
model_id = "m-cheap"
quality = "basic"
input_per_m = 1.0
output_per_m = 2.0
[models.strong]
provider = "fake"
model_id = "m-strong"
quality = "strong"
input_per_m = 10.0
output_per_m = 30.0
"""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = need("Chromium", CHROMIUM, "apt-get install chromium (Playwright drives it)")


def generated(book: Path, config: Path, n: int = 30) -> None:
    """`n` requests of the last half hour: cheap answers, escalations to strong, failures, from
    three clients over two protocols."""
    db = schema.connect(book)
    schema.migrate(db)
    models = load_config(config).config.models
    ledger_rows.write_batch(db, records(n, time.time() - 1800, 60), models)
    db.close()


def records(n: int, start: float, step: float, prefix: str = "gen") -> list[RequestRecord]:
    """`n` requests from `start`, one every `step` seconds: cheap answers (some with cached
    input), escalations to strong, failures, from three clients over two protocols."""
    now = start
    made = []
    for i in range(n):
        kind = i % 5
        attempts: tuple[Attempt, ...]
        if kind == 3:  # cheap too short, strong answers
            attempts = (
                Attempt("cheap", "fake", "m-cheap", "escalated_short_response", None, None, 100, 2),
                Attempt("strong", "fake", "m-strong", "ok", None, None, 100, 300, returned=True),
            )
            status, final = "ok", "strong"
        elif kind == 4:  # no answer
            attempts = (
                Attempt("cheap", "fake", "m-cheap", "escalated_http_error", 503, "busy"),
                Attempt("strong", "fake", "m-strong", "fatal_error", 400, "bad request"),
            )
            status, final = "exhausted", None
        else:
            attempts = (
                Attempt(
                    *("cheap", "fake", "m-cheap", "ok", None, None, 200, 50 * (i % 97 + 1)),
                    cache_read_tokens=120 if i % 7 == 0 else 0,
                    returned=True,
                ),
            )
            status, final = "ok", "cheap"
        made.append(
            RequestRecord(
                request_id=f"{prefix}-{i:03d}",
                ts=now + step * i,
                protocol="anthropic" if i % 2 else "openai",
                requested_model="auto",
                rule="policy:balanced:easy" if kind != 3 else "coding",
                difficulty="easy",
                primary="cheap",
                final=final,
                status=status,
                http_status=200 if status == "ok" else 502,
                streamed=bool(i % 3),
                latency_ms=100 + 37 * (i % 1000),
                overhead_ms=0.4 + (i % 11) / 10,
                ttft_ms=50 + i % 500 if i % 3 else None,
                user_agent=("claude-cli/2.1.3", "codex_cli_rs/0.17", "python-httpx/0.28")[i % 3],
                client=("alice", "bob", None, None)[i % 4],
                route_headers=('{"x-pirouter-profile": "local-first"}', "{}", None)[i % 3],
                attempts=attempts,
            )
        )
    return made


@pytest.fixture
def board(fake: FakeUpstream, tmp_path: Path) -> Any:
    fake.reset()
    book = tmp_path / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("{url}", fake.url).replace("{ledger}", str(book)))
    generated(book, config)
    daemon = Daemon(
        config, env={"PIROUTER_UI_KEY": KEY, "PIROUTER_UI_CLIENT_KEY": CLIENT_KEY}
    ).start()
    yield daemon, config
    daemon.stop()


def get(daemon: Daemon, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def stats_json(config: Path) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["stats", "--hours", "24", "--json", "-c", str(config)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_the_page_and_who_may_read_it(board: Any) -> None:
    daemon, config = board
    for path in ("/", "/ui"):
        status, headers, body = get(daemon, path)
        assert status == 200 and headers["content-type"].startswith("text/html")
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and b"<script>" not in body  # no inline script
        assert "access-control-allow-origin" not in headers
    status, headers, _ = get(daemon, "/ui/static/vendor/uPlot.iife.min.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert get(daemon, "/ui/static/../config.py")[0] == 404
    # the data needs the key; a foreign Host is refused whatever the key
    for path in ("/ui/api/summary", "/ui/api/requests", "/ui/api/state", "/ui/api/live"):
        assert get(daemon, path)[0] == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    assert get(daemon, "/ui/api/summary", Host="evil.example", **auth)[0] == 403
    assert get(daemon, "/", Host="evil.example")[0] == 403
    status, _, body = get(daemon, "/ui/api/summary?window=24h", **auth)
    assert status == 200
    page = json.loads(body)
    stats = stats_json(config)
    for key in ("requests", "successes", "escalated", "savings_usd"):
        assert page["stats"][key] == pytest.approx(stats[key]), key
    assert page["stats"]["groups"] == stats["groups"]
    assert (
        page["budgets"] == stats["budgets"] and page["budgets"][0]["budget"] == "budget.daily_usd"
    )
    assert {f["from"] + ">" + f["to"] for f in page["escalations"]} == {"cheap>strong"}
    assert {c["key"] for c in page["by_app"]} == {"claude-cli", "codex_cli_rs", "python-httpx"}
    assert page["latency"]["n"] == 30 and sum(page["latency"]["counts"]) == 30
    status, _, body = get(daemon, "/ui/api/summary?window=3y", **auth)
    assert status == 400 and b"use one of 1h, 24h, 7d, 30d" in body
    # `pirouter dashboard` names the page of the daemon its config binds, or says none answers
    port = daemon.url.rsplit(":", 1)[1]
    bound = config.with_name("bound.toml")
    bound.write_text(config.read_text().replace("[server]", f'[server]\nbind = "127.0.0.1:{port}"'))
    shown = CliRunner().invoke(app, ["dashboard", "--no-open", "-c", str(bound)])
    assert (shown.exit_code, shown.stdout) == (0, f"http://127.0.0.1:{port}/\n")
    bound.write_text(config.read_text().replace("[server]", '[server]\nbind = "127.0.0.1:9"'))
    shown = CliRunner().invoke(app, ["dashboard", "--no-open", "-c", str(bound)])
    assert shown.exit_code == 1 and "start it with `pirouter run`" in shown.output


@needs_chromium
def test_the_page_in_chromium(board: Any, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    daemon, config = board
    stats = stats_json(config)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # without the key: the key form, and none of the figures
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(daemon.url + "/")
            page.wait_for_selector("#keyform:not([hidden])", timeout=10_000)
            assert page.is_hidden("#board")
            assert page.inner_text("#requests") == "-"
            # with it: the panels hold the ledger's figures, the same as stats --json
            page.fill("#key", KEY)
            page.click("#keyform button")
            page.wait_for_selector("#board:not([hidden])", timeout=10_000)
            page.wait_for_function("document.getElementById('requests').textContent !== '-'")
            assert page.inner_text("#requests") == str(stats["requests"])
            assert page.inner_text("#cost") == "$" + money(stats["cost_usd"])
            assert page.inner_text("#baseline") == "$" + money(stats["baseline"]["cost_usd"])
            models = page.locator("#bymodel tbody tr")
            assert models.count() == len(stats["groups"])
            first = models.nth(0).inner_text().split("\t")
            assert first[0] == stats["groups"][0]["key"] and first[1] == str(
                stats["groups"][0]["requests"]
            )
            assert "cheap" in page.inner_text(
                "#flow"
            ) and "escalated_short_response" in page.inner_text("#flow")
            assert "p95" in page.inner_text("#latency")
            assert "budget.daily_usd: $" in page.inner_text("#budgets")
            page.wait_for_selector("#live tbody tr.request", timeout=10_000)
            page.wait_for_function(
                "document.getElementById('livestate').textContent === 'following'"
            )
            # a request sent now is in the live table within 2 s
            sent = time.monotonic()
            status, headers, _ = daemon.post(
                {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                Authorization=f"Bearer {KEY}",
            )
            assert status == 200
            rid = headers["x-pirouter-request-id"]
            page.wait_for_selector(f'#live tr[data-id="{rid}"]', timeout=2_000)
            assert time.monotonic() - sent < 2.5
            page.click(f'#live tr[data-id="{rid}"]')
            assert "cheap (fake/m-cheap): ok" in page.inner_text("#live")
            page.screenshot(path=str(tmp_path / "dashboard-1280.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(200)
            page.screenshot(path=str(tmp_path / "dashboard-390.png"), full_page=True)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390 + 1  # nothing wider than a phone: panels scroll inside
            assert not [e for e in errors if "401" not in e], errors
            # another tab without the key sees nothing
            other = browser.new_page()
            other.goto(daemon.url + "/ui")
            other.wait_for_selector("#keyform:not([hidden])", timeout=10_000)
            assert other.is_hidden("#board")
            # a client's key: its own requests only (none yet), and nothing of the daemon's
            mine = browser.new_page()
            mine.goto(daemon.url + "/ui")
            mine.wait_for_selector("#keyform:not([hidden])", timeout=10_000)
            mine.fill("#key", CLIENT_KEY)
            mine.click("#keyform button")
            mine.wait_for_selector("#board:not([hidden])", timeout=10_000)
            mine.wait_for_function("document.getElementById('requests').textContent !== '-'")
            assert mine.inner_text("#requests") == "0"
            mine.wait_for_function("document.getElementById('state').textContent !== ''")
            state = mine.inner_text("#state")
            assert "your own requests only" in state and "ledger" not in state
            assert mine.locator(f'#live tr[data-id="{rid}"]').count() == 0
        finally:
            browser.close()
    for name in ("dashboard-1280.png", "dashboard-390.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_a_long_window_reads_hourly_rollups_with_the_rows_figures(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Past PAGE_ROWS requests, the panels sum the ledger's hourly rollups for the hours they
    cover and the rows of the others (the window's first partial hour, the last two days not yet
    rolled up, an old hour a late row made dirty): every count, token, cost, histogram bucket and
    escalation move is the rows' own, and percentiles are at most 5% above the exact ones."""
    from pirouter_py.ledger import read, rollups
    from pirouter_py.reports import dashboard as panels
    from pirouter_py.reports import stats
    from pirouter_py.server.dashboard import PAGE_ROWS, _read_window

    book = tmp_path / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("{url}", fake.url).replace("{ledger}", str(book)))
    loaded = load_config(config).config
    db = schema.connect(book)
    schema.migrate(db)
    now = time.time()
    n = PAGE_ROWS + 2_000
    made = records(n, now - 20 * 86_400 - 1234, 20 * 86_400 / n)
    for first in range(0, n, 5_000):
        ledger_rows.write_batch(db, made[first : first + 5_000], loaded.models)
    assert rollups.catch_up(db, now - 2 * 86_400, budget_s=600) == 0
    late = records(3, now - 10 * 86_400, 1, prefix="late")  # written after its hour rolled up
    ledger_rows.write_batch(db, late, loaded.models)
    assert db.execute("SELECT COUNT(*) FROM rollup_dirty").fetchone()[0] > 40
    exact_rows = read.read_requests(read.open_read_only(book) or db, 0)  # type: ignore[arg-type]
    db.close()
    # before the daemon's writer rolls the rest up: both rollups and rows are read
    parts, rolled, cut = _read_window((book, None), now - 30 * 86_400, now)
    assert rolled and not cut
    from_rollups, from_rows = (sum(g[6] for g in part["groups"]) for part in parts)
    assert from_rows > 2 * 86_400 / (20 * 86_400 / n) and from_rollups + from_rows == n + 3
    daemon = Daemon(
        config, env={"PIROUTER_UI_KEY": KEY, "PIROUTER_UI_CLIENT_KEY": CLIENT_KEY}
    ).start()
    try:
        status, _, body = get(daemon, "/ui/api/summary?window=30d", Authorization=f"Bearer {KEY}")
    finally:
        daemon.stop()
    assert status == 200, body
    got = json.loads(body)
    assert got["rolled_up"] is True and got["cut"] is False
    want = panels.page(
        exact_rows,
        since=got["stats"]["since"],
        until=got["until"],
        baseline=stats.choose_baseline(loaded),
        window="last 30d",
    )
    assert len(exact_rows) == n + 3
    for key in ("by_rule", "by_app", "by_client", "by_protocol", "escalations"):
        assert got[key] == want[key], key
    assert [k["key"] for k in got["by_client"]] == ["(no key)", "alice", "bob"]
    for key in ("latency", "ttft", "overhead"):
        assert got[key]["counts"] == want[key]["counts"] and got[key]["n"] == want[key]["n"]
        for q in ("p50", "p95", "p99"):
            assert want[key][q] <= got[key][q] <= want[key][q] * 1.05, (key, q)
    g, w = got["stats"], want["stats"]
    for key in ("requests", "successes", "escalated", "window"):
        assert g[key] == w[key], key
    assert g["cost_usd"] == pytest.approx(w["cost_usd"])
    assert g["baseline"]["cost_usd"] == pytest.approx(w["baseline"]["cost_usd"])
    assert [x["key"] for x in g["groups"]] == [x["key"] for x in w["groups"]]
    for mine, theirs in zip([*g["groups"], g["total"]], [*w["groups"], w["total"]], strict=True):
        for key in ("requests", "input_tokens", "output_tokens", "escalated", "errors"):
            assert mine[key] == theirs[key], (mine["key"], key)
        assert mine["cost_usd"] == pytest.approx(theirs["cost_usd"])
        for key in ("p50_ms", "p95_ms"):
            assert theirs[key] <= mine[key] <= theirs[key] * 1.05, (mine["key"], key)
    assert sum(got["series"]["requests"]) == n + 3
    assert sum(got["series"]["cost_usd"]) == pytest.approx(w["cost_usd"])
    assert sum(got["series"]["baseline_usd"]) == pytest.approx(w["baseline"]["cost_usd"])


def test_the_labels_panel_counts_the_newest_requests_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading every label of a big ledger takes ~28 µs a request (28 s for a million): the
    panel counts those of the newest LEARNING_ROWS requests and says so; below, all of them."""
    from pirouter_py.server import dashboard

    book = tmp_path / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("{url}", "http://127.0.0.1:9").replace("{ledger}", str(book)))
    generated(book, config, n=30)  # one a minute; 24 of them answered (every fifth failed)
    whole = dashboard._read_learning((book, None))
    assert whole["newest"] is None
    assert sum(m["labels"] for m in whole["models"]) > 20
    monkeypatch.setattr(dashboard, "LEARNING_ROWS", 10)
    newest = dashboard._read_learning((book, None))
    assert newest["newest"] == 10
    counted = sum(m["labels"] for m in newest["models"])
    assert 0 < counted < sum(m["labels"] for m in whole["models"])
    assert counted <= 10 * 2  # at most two models labelled per request
