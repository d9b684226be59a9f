"""The dashboard as an observability tool, in a real headless Chromium against a real daemon and
its SQLite ledger (a generated window plus requests sent through fake upstreams on loopback):
the state panel at the top says which model cools and why; no table overflows its panel at
desktop widths and the page does not scroll sideways on a phone; an escalated-then-answered
request is marked; "bad" given on the page lands in the ledger's feedback; filters narrow the
requests on the server, live in the URL and survive a reload; exports carry the filtered rows;
the charts are drawn from the window's data and change with it; a client key sees, filters and
exports its own requests only."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.fakes import Daemon, FakeUpstream, Reply
from tests.test_dashboard import (
    CHROMIUM,
    CLIENT_KEY,
    CONFIG,
    KEY,
    generated,
    get,
    needs_chromium,
)

pytestmark = needs_chromium
OPERATOR = {"Authorization": f"Bearer {KEY}"}
CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}
CLIENT_NAME = "PIROUTER_UI_CLIENT_KEY"  # a client key is known by its variable's name


@dataclass
class Site:
    daemon: Daemon
    book: Path
    needles: list[str]  # the operator's requests whose prompt says "needle"
    mine: list[str]  # the client key's own requests
    escalated: str  # answered by strong after cheap was rate limited
    ids: dict[str, Any] = field(default_factory=dict)


def api(site: Site, path: str, auth: dict[str, str] = OPERATOR) -> Any:
    status, _, body = get(site.daemon, path, **auth)
    assert status == 200, (path, body)
    return json.loads(body)


def ask(daemon: Daemon, text: str, key: str) -> str:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    status, headers, _ = daemon.post(body, Authorization=f"Bearer {key}")
    assert status == 200
    return headers["x-pirouter-request-id"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    fake = FakeUpstream()
    fake.start()
    tmp = tmp_path_factory.mktemp("views")
    book, config = tmp / "ledger.db", tmp / "config.toml"
    text = CONFIG.replace("{url}", fake.url).replace("{ledger}", str(book))
    config.write_text(text.replace("[ledger]\n", "[ledger]\nstore_prompts = true\n"))
    generated(book, config)
    daemon = Daemon(
        config, env={"PIROUTER_UI_KEY": KEY, "PIROUTER_UI_CLIENT_KEY": CLIENT_KEY}
    ).start()
    try:
        needles = [ask(daemon, f"find the needle number {i}", KEY) for i in range(2)]
        mine = [ask(daemon, "the client's own question", CLIENT_KEY)]
        # cheap is rate limited for 140 s: it cools, strong answers (escalated, then answered)
        fake.script("m-cheap", Reply(kind="status", status=429, headers={"retry-after": "140"}))
        escalated = ask(daemon, "a question while cheap is busy", KEY)
        deadline = time.monotonic() + 10
        while len(api_rows(daemon, "")) < 34:  # the writer commits a quarter second later
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield Site(daemon, book, needles, mine, escalated)
    finally:
        daemon.stop()
        fake.stop()


def api_rows(daemon: Daemon, query: str, auth: dict[str, str] = OPERATOR) -> list[dict[str, Any]]:
    status, _, body = get(daemon, "/ui/api/requests?limit=500&" + query, **auth)
    assert status == 200, body
    return list(json.loads(body)["requests"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield chromium
    chromium.close()
    pw.stop()


def opened(browser: Any, site: Site, key: str = KEY, width: int = 1400, path: str = "/") -> Any:
    """A page of the dashboard given `key`, its requests table filled."""
    page = browser.new_page(viewport={"width": width, "height": 1000}, accept_downloads=True)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(site.daemon.url + path)
    page.wait_for_selector("#keyform:not([hidden])", timeout=10_000)
    page.fill("#key", key)
    page.click("#keyform button")
    settled(page)
    return page


def until(page: Any, expression: str, timeout: int = 10_000) -> None:
    """Wait until a JavaScript expression is true in the page (polled from here: Playwright's
    own wait_for_function evaluates strings in the page, which its CSP forbids)."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} ms: {expression}"
        time.sleep(0.05)


def settled(page: Any) -> None:
    page.wait_for_selector("#board:not([hidden])", timeout=10_000)
    page.wait_for_selector("#live tbody tr", timeout=10_000)
    until(page, "document.getElementById('state').textContent !== ''")
    until(page, "document.getElementById('chart-requests').dataset.points")


def shown_ids(page: Any) -> list[str]:
    return list(
        page.eval_on_selector_all("#live tr.request", "rows => rows.map(r => r.dataset.id)")
    )


def test_the_state_at_the_top_says_which_model_cools_and_why(site: Site, browser: Any) -> None:
    state = api(site, "/ui/api/state")
    assert [c["model"] for c in state["cooling"]] == ["cheap"]
    assert 100 < state["cooling"][0]["left_s"] <= 140 and "429" in state["cooling"][0]["why"]
    page = opened(browser, site)
    try:
        shown = page.inner_text("#state")
        cooling = next(line for line in shown.splitlines() if line.startswith("cheap:"))
        left = int(cooling.split(":", 1)[1].split(" s left")[0])
        assert 100 < left <= 140 and "429" in cooling, shown
        assert "none" not in cooling
        for fact in ("keys resting", "limits", "budgets", "ledger", "config"):
            assert fact in shown, fact
        assert "budget.daily_usd" in shown and "rows written" in shown and "loaded" in shown
        # above the fold at 1400x1000
        box = page.locator("#statepanel").bounding_box()
        assert box is not None and box["y"] + box["height"] < 1000
        assert not page.errors
    finally:
        page.close()


TABLES = """() => [...document.querySelectorAll('main table')]
  .filter(t => t.offsetParent).map(t => {
  const p = t.closest('.panel');
  return {id: t.id, table: t.scrollWidth, panel: p.clientWidth, inner: p.scrollWidth};
})"""


def test_no_table_overflows_its_panel_and_a_phone_does_not_scroll_sideways(
    site: Site, browser: Any
) -> None:
    page = opened(browser, site, width=1280)
    try:
        page.click(f'#live tr[data-id="{site.needles[0]}"]')  # an open detail, with its prompt
        for width in (1280, 1440, 1920):
            page.set_viewport_size({"width": width, "height": 1000})
            page.wait_for_timeout(300)
            tables = page.evaluate(TABLES)
            assert len(tables) >= 10
            wide = [t for t in tables if t["table"] > t["panel"] or t["inner"] > t["panel"]]
            assert not wide, (width, wide)
            assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(site.book.with_name("dashboard-390.png")), full_page=True)
    finally:
        page.close()


def test_an_escalated_then_answered_request_is_marked(site: Site, browser: Any) -> None:
    page = opened(browser, site)
    try:
        row = page.locator(f'#live tr[data-id="{site.escalated}"]')
        assert "escalated" in (row.get_attribute("class") or "").split()
        assert row.locator(".tag").inner_text() == "escalated, answered"
        plain = page.locator(f'#live tr[data-id="{site.needles[0]}"]')
        assert "escalated" not in (plain.get_attribute("class") or "")
        assert plain.locator(".tag").inner_text() == "ok"
        # the live table's words: the client is the key's name, the user agent is the app
        heads = page.locator("#live thead th").all_inner_texts()
        assert heads[4:6] == ["client", "app"]
        assert page.locator("#byclient thead th").first.inner_text() == "client key"
        assert "PIROUTER_UI_KEY" in row.inner_text()
    finally:
        page.close()


def test_bad_from_the_page_lands_in_the_ledger_and_shows_on_the_row(
    site: Site, browser: Any
) -> None:
    rid = site.needles[1]
    page = opened(browser, site)
    try:
        before = page.inner_text("#learnnote")
        assert "50 labels" in before and "0 from people" in before
        page.click(f'#live tr[data-id="{rid}"]')
        page.click(f'#live tr[data-id="{rid}"] + tr.detail button.bad')
        page.wait_for_selector(f'#live tr[data-id="{rid}"] td.feedback.fb-bad', timeout=5_000)
        db = sqlite3.connect(site.book)
        try:
            rows = db.execute("SELECT request_id, score, source FROM feedback").fetchall()
        finally:
            db.close()
        assert rows == [(rid, 0.0, "http")]
        until(page, "document.getElementById('learnnote').textContent.includes('1 from people')")
        page.reload()
        settled(page)
        assert page.inner_text(f'#live tr[data-id="{rid}"] td.feedback') == "bad"
        assert [r["feedback"] for r in api_rows(site.daemon, "q=needle") if r["id"] == rid] == [0]
        assert not page.errors
    finally:
        page.close()


def test_filters_narrow_the_rows_on_the_server_and_survive_a_reload(
    site: Site, browser: Any
) -> None:
    daemon = site.daemon
    every = api_rows(daemon, "")
    for query, keep in (
        ("status=escalated", lambda r: r["kind"] == "escalated"),
        ("status=failed", lambda r: r["kind"] == "failed"),
        ("status=ok", lambda r: r["kind"] == "ok"),
        ("model=strong", lambda r: r["model"] == "strong"),
        ("rule=coding", lambda r: r["rule"] == "coding"),
        ("client=alice", lambda r: r["client"] == "alice"),
        ("client=" + quote("(no key)"), lambda r: r["client"] is None),
        ("protocol=anthropic", lambda r: r["protocol"] == "anthropic"),
        ("q=NEEDLE", lambda r: "needle" in (r["prompt"] or "")),
        ("q=" + quote("50%_!"), lambda r: False),  # LIKE's wildcards are text here
    ):
        want = [r["id"] for r in every if keep(r)]
        assert [r["id"] for r in api_rows(daemon, query)] == want, query
    assert sorted(r["id"] for r in api_rows(daemon, "q=needle")) == sorted(site.needles)
    assert len(api_rows(daemon, "status=escalated&model=strong&protocol=openai")) >= 1
    status, _, body = get(daemon, "/ui/api/requests?status=maybe", **OPERATOR)
    assert status == 400 and b"use one of ok, escalated, failed, cancelled" in body

    page = opened(browser, site)
    try:
        page.select_option("#f-status", "escalated")
        page.wait_for_url("**status=escalated**")
        until(page, "document.getElementById('filternote').textContent.includes('status')")
        kinds = page.eval_on_selector_all(
            "#live tr.request", "rows => rows.map(r => r.dataset.kind)"
        )
        want = [r["id"] for r in every if r["kind"] == "escalated"]
        assert set(kinds) == {"escalated"} and shown_ids(page) == want
        page.fill("#f-protocol", "openai")
        page.press("#f-protocol", "Enter")
        page.wait_for_url("**protocol=openai**")
        until(page, "document.getElementById('filternote').textContent.includes('protocol')")
        want = [r["id"] for r in every if r["kind"] == "escalated" and r["protocol"] == "openai"]
        assert shown_ids(page) == want and 0 < len(want) < len(every)
        page.reload()
        settled(page)
        assert page.input_value("#f-status") == "escalated"
        assert page.input_value("#f-protocol") == "openai"
        assert shown_ids(page) == want
        # a link with filters opens on the same view
        other = opened(browser, site, path="/?window=24h&q=needle")
        try:
            assert sorted(shown_ids(other)) == sorted(site.needles)
            assert other.input_value("#f-q") == "needle"
        finally:
            other.close()
        assert not page.errors
    finally:
        page.close()


def test_exports_carry_the_filtered_rows(site: Site, browser: Any) -> None:
    daemon = site.daemon
    page = opened(browser, site, path="/?window=24h&model=cheap&status=ok")
    try:
        want = shown_ids(page)
        assert want and len(want) < len(api_rows(daemon, ""))
        with page.expect_download() as got:
            page.click("#export-csv")
        text = Path(got.value.path()).read_text()
        assert got.value.suggested_filename.endswith(".csv")
        lines = list(csv.DictReader(io.StringIO(text)))
        assert [line["id"] for line in lines] == want
        assert {line["model"] for line in lines} == {"cheap"} and {x["kind"] for x in lines} == {
            "ok"
        }
        with page.expect_download() as got:
            page.click("#export-json")
        rows = json.loads(Path(got.value.path()).read_text())
        assert [r["id"] for r in rows] == want and rows[0]["attempts"][0]["alias"] == "cheap"
    finally:
        page.close()
    status, headers, body = get(daemon, "/ui/api/export?format=json&q=needle", **OPERATOR)
    assert status == 200 and "attachment" in headers["content-disposition"]
    assert sorted(r["id"] for r in json.loads(body)) == sorted(site.needles)
    assert get(daemon, "/ui/api/export?format=xml", **OPERATOR)[0] == 400
    assert get(daemon, "/ui/api/export?format=csv")[0] == 401


def test_the_charts_are_drawn_from_the_window_and_change_with_it(site: Site, browser: Any) -> None:
    page = opened(browser, site)
    try:

        def chart(name: str = "requests") -> tuple[int, float]:
            data = page.eval_on_selector(
                f"#chart-{name}", "el => [el.dataset.points, el.dataset.total]"
            )
            return int(data[0]), float(data[1])

        requests = int(page.inner_text("#requests"))
        points, total = chart()
        assert points in (24, 25) and total == requests
        assert page.locator("#chart-requests canvas").count() == 1
        assert chart("latency")[1] > 0 and chart("spend")[1] > 0
        for window, steps in (("1h", (60, 61)), ("7d", (168, 169)), ("30d", (720, 721))):
            page.click(f'#windows button[data-window="{window}"]')
            until(
                page,
                f"[{steps[0]}, {steps[1]}]"
                ".includes(+document.getElementById('chart-requests').dataset.points)",
            )
            assert chart()[1] == requests, window
            assert f"window={window}" in page.url
        series = api(site, "/ui/api/series?window=1h")
        cheap = next(line for line in series["lines"] if line["model"] == "cheap")
        page.select_option("#chartmodel", "cheap")
        page.wait_for_timeout(200)
        assert chart()[1] == sum(cheap["requests"]) < requests
        # a request served now moves the chart within a few seconds (the live feed says so)
        page.select_option("#chartmodel", "all")
        ask(site.daemon, "one more", KEY)
        until(
            page,
            f"+document.getElementById('chart-requests').dataset.total === {requests + 1}",
            timeout=10_000,
        )
        assert not page.errors
    finally:
        page.close()


def test_a_client_key_sees_filters_and_exports_its_own_requests_only(
    site: Site, browser: Any
) -> None:
    daemon = site.daemon
    mine = api_rows(daemon, "", CLIENT)
    assert [r["id"] for r in mine] == site.mine and mine[0]["client"] == CLIENT_NAME
    assert api_rows(daemon, "client=alice", CLIENT) == []  # another's name finds nothing
    assert [r["id"] for r in api_rows(daemon, "q=question", CLIENT)] == site.mine
    status, _, body = get(daemon, "/ui/api/export?format=json", **CLIENT)
    assert status == 200 and [r["id"] for r in json.loads(body)] == site.mine
    assert get(daemon, "/ui/api/learning", **CLIENT)[0] == 404  # labels are everyone's
    series = api(site, "/ui/api/series?window=1h", CLIENT)
    assert sum(series["lines"][0]["requests"]) == 1
    # feedback: on its own request, not on another's (404, as one that does not exist)
    for rid, want in ((site.needles[0], 404), (site.mine[0], 200)):
        status, _, _ = daemon.post(
            {"request_id": rid, "score": "good"}, path="/v1/feedback", **CLIENT
        )
        assert status == want, rid
    page = opened(browser, site, key=CLIENT_KEY, path="/?window=24h&status=ok")
    try:
        assert shown_ids(page) == site.mine
        assert page.inner_text(f'#live tr[data-id="{site.mine[0]}"] td.feedback') == "good"
        assert page.is_hidden("#learnpanel")
        state = page.inner_text("#state")
        assert "your own requests only" in state and "ledger" not in state
        assert not page.errors
    finally:
        page.close()
