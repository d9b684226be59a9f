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
from tests.fakes import Daemon, FakeUpstream

KEY = "dashboard-test-key"
CONFIG = """
[server]
api_keys_env = ["PIROUTER_UI_KEY"]
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


def generated(book: Path, config: Path, n: int = 30) -> None:
    """`n` requests of the last half hour: cheap answers, escalations to strong, failures, from
    three clients over two protocols."""
    now = time.time() - 1800
    records = []
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
                    "cheap", "fake", "m-cheap", "ok", None, None, 200, 50 * (i + 1), returned=True
                ),
            )
            status, final = "ok", "cheap"
        records.append(
            RequestRecord(
                request_id=f"gen-{i:03d}",
                ts=now + 60 * i,
                protocol="anthropic" if i % 2 else "openai",
                requested_model="auto",
                rule="policy:balanced:easy" if kind != 3 else "coding",
                difficulty="easy",
                primary="cheap",
                final=final,
                status=status,
                http_status=200 if status == "ok" else 502,
                streamed=bool(i % 3),
                latency_ms=100 + 37 * i,
                overhead_ms=0.4,
                ttft_ms=50 + i if i % 3 else None,
                user_agent=("claude-cli/2.1.3", "codex_cli_rs/0.17", "python-httpx/0.28")[i % 3],
                attempts=attempts,
            )
        )
    db = schema.connect(book)
    schema.migrate(db)
    ledger_rows.write_batch(db, records, load_config(config).config.models)
    db.close()


@pytest.fixture
def board(fake: FakeUpstream, tmp_path: Path) -> Any:
    fake.reset()
    book = tmp_path / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("{url}", fake.url).replace("{ledger}", str(book)))
    generated(book, config)
    daemon = Daemon(config, env={"PIROUTER_UI_KEY": KEY}).start()
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
    assert {c["key"] for c in page["by_client"]} == {"claude-cli", "codex_cli_rs", "python-httpx"}
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


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs it)")
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
        finally:
            browser.close()
    for name in ("dashboard-1280.png", "dashboard-390.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_a_long_window_reads_a_bounded_number_of_requests(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """The panels read at most PAGE_ROWS requests of a window, the newest, and say so."""
    from pirouter_py.server.dashboard import PAGE_ROWS

    book = tmp_path / "ledger.db"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("{url}", fake.url).replace("{ledger}", str(book)))
    models = load_config(config).config.models
    db = schema.connect(book)
    schema.migrate(db)
    start = time.time() - 20 * 86_400
    extra = 25
    for first in range(0, PAGE_ROWS + extra, 5_000):
        batch = [
            RequestRecord(
                request_id=f"old-{i}",
                ts=start + i * 60,
                protocol="openai",
                requested_model="auto",
                rule="policy:balanced:easy",
                difficulty="easy",
                primary="cheap",
                final="cheap",
                status="ok",
                http_status=200,
                streamed=False,
                latency_ms=100,
                overhead_ms=0.3,
                attempts=(
                    Attempt("cheap", "fake", "m-cheap", "ok", None, None, 10, 5, returned=True),
                ),
            )
            for i in range(first, min(first + 5_000, PAGE_ROWS + extra))
        ]
        ledger_rows.write_batch(db, batch, models)
    db.close()
    daemon = Daemon(config, env={"PIROUTER_UI_KEY": KEY}).start()
    try:
        status, _, body = get(daemon, "/ui/api/summary?window=30d", Authorization=f"Bearer {KEY}")
    finally:
        daemon.stop()
    assert status == 200
    page = json.loads(body)
    assert page["cut"] is True and page["stats"]["requests"] == PAGE_ROWS
    assert page["stats"]["window"] == f"last 30d, its newest {PAGE_ROWS:,} requests"
    assert page["stats"]["since"] == pytest.approx(start + extra * 60)  # the oldest row read
