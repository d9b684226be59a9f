"""Routing under live traffic: rpm/tpm limits, budgets, latency ties, session affinity.

Pure: a config, a Traffic with fake clocks, and decide(). The ledger seeding runs on a real
SQLite file written by the ledger's own batch writer.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pirouter_py.config import Config, parse_config
from pirouter_py.errors import BudgetExceeded
from pirouter_py.ledger import read as ledger_read
from pirouter_py.ledger import rows as ledger_rows
from pirouter_py.ledger import schema
from pirouter_py.live.budgets import day_start, month_start
from pirouter_py.live.health import Health
from pirouter_py.live.sessions import session_key
from pirouter_py.live.traffic import Traffic
from pirouter_py.record import Attempt, RequestRecord
from pirouter_py.routing.decide import decide
from pirouter_py.types import ChatRequest, ImagePart, Message, Pin, TextPart, text_message

CATALOG = """
[providers.p]
type = "openai"
base_url = "http://127.0.0.1:9"
api_key = "k"
[models.local]
provider = "p"
model_id = "local"
quality = "basic"
local = true
context_window = 1000
[models.cheap]
provider = "p"
model_id = "cheap"
quality = "basic"
input_per_m = 1.0
context_window = 2000
{cheap}
[models.cheap2]
provider = "p"
model_id = "cheap2"
quality = "basic"
input_per_m = 1.0
context_window = 4000
supports_tools = true
[models.strong]
provider = "p"
model_id = "strong"
quality = "strong"
input_per_m = 10.0
context_window = 100000
supports_tools = true
supports_vision = true
[routing]
profile = "cloud-only"
{extra}
"""


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


NOON = datetime(2026, 11, 22, 12, 0).timestamp()


def setup(cheap: str = "", extra: str = "") -> tuple[Config, Traffic, Clock, Clock]:
    config = parse_config(CATALOG.format(cheap=cheap, extra=extra), "t.toml")[0]
    mono, wall = Clock(1000.0), Clock(NOON)
    return config, Traffic(config, Health(5, 60, mono), mono, wall), mono, wall


def ask(text: str = "hello", *history: tuple[str, str], **fields: Any) -> ChatRequest:
    turns = [*history, ("user", text)]
    return ChatRequest("auto", tuple(text_message(r, t) for r, t in turns), **fields)


def record(alias: str, usd_tokens: int = 0, **fields: Any) -> RequestRecord:
    attempt = Attempt(alias, "p", alias, "ok", input_tokens=usd_tokens, returned=True)
    base: dict[str, Any] = {
        "request_id": f"r{id(attempt)}",
        "ts": NOON,
        "protocol": "openai",
        "requested_model": "auto",
        "rule": None,
        "difficulty": "easy",
        "primary": alias,
        "final": alias,
        "status": "ok",
        "http_status": 200,
        "streamed": False,
        "latency_ms": 1.0,
        "overhead_ms": 0.1,
        "attempts": (attempt,),
    }
    return RequestRecord(**(base | fields))


# --- limits ----------------------------------------------------------------------------------


def test_rpm_limit_routes_around_then_refills() -> None:
    config, traffic, mono, _ = setup(cheap="rpm = 2")
    chains = []
    for _ in range(3):
        d = decide(config, ask(), {}, live=traffic)
        chains.append(d.chain)
        traffic.limits.take(d.primary, d.features.estimated_tokens)  # what the cascade does
    assert chains[0][0] == chains[1][0] == "cheap"
    assert chains[2] == ("cheap2", "strong", "cheap")  # at its limit: tried last, not dropped
    assert (
        "cheap (at its limit of 2 requests per minute)"
        in decide(config, ask(), {}, live=traffic).notes[0]
    )
    mono.now += 30  # half a minute refills one request
    assert decide(config, ask(), {}, live=traffic).primary == "cheap"


def test_tpm_limit_counts_estimates_then_real_usage() -> None:
    config, traffic, _, _ = setup(cheap="tpm = 100")
    req = ask("x" * 150)  # 50 + 4 = 54 estimated tokens
    assert decide(config, req, {}, live=traffic).primary == "cheap"
    traffic.limits.take("cheap", 54)
    assert decide(config, req, {}, live=traffic).primary == "cheap2"  # 46 left < 54
    traffic.limits.settle("cheap", 54, 20)  # the upstream reported only 20 tokens
    assert decide(config, req, {}, live=traffic).primary == "cheap"
    assert traffic.limits.snapshot()["cheap"]["tpm_left"] == 80.0


def test_cooling_and_limits_reorder_rule_chains_too() -> None:
    rule = (
        '[[rules]]\nname = "r"\nwhen = { always = true }\n'
        'then = { primary = "cheap", cascade = ["strong"] }'
    )
    config, traffic, _, _ = setup(cheap="rpm = 1", extra=rule)
    traffic.limits.take("cheap", 1)
    assert decide(config, ask(), {}, live=traffic).chain == ("strong", "cheap")


# --- budgets ---------------------------------------------------------------------------------


def test_a_models_budget_crossing_mid_day_downgrade() -> None:
    config, traffic, _, wall = setup(cheap="daily_usd = 0.01")
    assert decide(config, ask(), {}, live=traffic).primary == "cheap"
    traffic.finished(record("cheap", usd_tokens=5_000))  # $0.005
    assert decide(config, ask(), {}, live=traffic).primary == "cheap"
    traffic.finished(record("cheap", usd_tokens=5_000))  # $0.010: spent
    d = decide(config, ask(), {}, live=traffic, explain=True)
    assert d.primary == "cheap2" and "cheap" not in d.chain
    assert any(c.alias == "cheap" and "models.cheap.daily_usd" in c.reason for c in d.candidates)
    wall.now += 13 * 3600  # past midnight: a new day, a new budget
    assert decide(config, ask(), {}, live=traffic).primary == "cheap"


def test_a_models_budget_refuse_says_which_and_when() -> None:
    config, traffic, _, _ = setup(cheap="daily_usd = 0.001", extra='[budget]\naction = "refuse"')
    traffic.finished(record("cheap", usd_tokens=1_000))
    with pytest.raises(BudgetExceeded) as caught:
        decide(config, ask(), {}, live=traffic)
    err = caught.value
    assert err.http_status == 429
    assert "the models.cheap.daily_usd budget of $0.00 is spent" in err.message
    assert "resets at 2026-11-23 00:00 local time, in 12h00m" in err.message
    assert 12 * 3600 - 5 <= err.retry_after <= 12 * 3600
    # A request the policy sends elsewhere is not refused.
    assert decide(config, ask(tools=True), {}, live=traffic).primary == "strong"


def test_global_budget_downgrades_to_free_models_then_refuses() -> None:
    config, traffic, _, _ = setup(extra="[budget]\nmonthly_usd = 0.002")
    traffic.finished(record("strong", usd_tokens=200))  # $0.002
    d = decide(config, ask(), {"x-pirouter-profile": "best-quality"}, live=traffic)
    assert (d.profile, d.primary) == ("local-first", "local")
    assert d.notes[0] == "budget.monthly_usd is spent: routing with the local-first profile"
    with pytest.raises(BudgetExceeded, match=r"budget\.monthly_usd"):  # no free model has tools
        decide(config, ask(tools=True), {}, live=traffic)


def test_global_budget_refuse() -> None:
    config, traffic, _, _ = setup(extra='[budget]\ndaily_usd = 0.001\naction = "refuse"')
    traffic.finished(record("cheap", usd_tokens=1_000))
    with pytest.raises(BudgetExceeded, match=r"budget\.daily_usd budget of"):
        decide(config, ask(), {}, live=traffic)


# --- latency ties ----------------------------------------------------------------------------


def test_latency_breaks_exact_ties_only() -> None:
    config, traffic, _, _ = setup()
    assert decide(config, ask(), {}, live=traffic).primary == "cheap"  # alias order
    traffic.latency.observe("cheap", 900.0)
    traffic.latency.observe("cheap2", 200.0)
    assert decide(config, ask(), {}, live=traffic).chain[:2] == ("cheap2", "cheap")
    traffic.latency.observe("strong", 1.0)  # not tied with them: no effect
    assert decide(config, ask(), {}, live=traffic).primary == "cheap2"
    off, t2, _, _ = setup(extra="latency_ties = false")
    t2.latency.observe("cheap", 900.0)
    assert decide(off, ask(), {}, live=t2).primary == "cheap"


# --- affinity --------------------------------------------------------------------------------


def test_session_keys() -> None:
    first = ask("plan a trip")
    later = ask("and then?", ("user", "plan a trip"), ("assistant", "Sure."))
    ua = {"user-agent": "aider/1"}
    assert session_key(first, ua) == session_key(later, ua)
    assert session_key(first, ua) != session_key(first, {"user-agent": "continue"})
    assert session_key(first, {"x-pirouter-session": "abc"}) == session_key(
        ask("other"), {"x-pirouter-session": "abc"}
    )


def pinned(config: Config, traffic: Traffic, req: ChatRequest, alias: str, age: float) -> Any:
    return decide(config, req, {}, live=traffic, pin=Pin(alias, age, age <= 300))


def test_affinity_hard_soft_and_each_escape() -> None:
    config, traffic, mono, _ = setup()
    # Hard window: the previous model, even when the policy would pick another.
    d = pinned(config, traffic, ask(), "strong", 10)
    assert (d.primary, d.pin) == ("strong", "hard")
    # Soft window: a near-tie (same tier, cost within 25 %) keeps the previous model ...
    d = pinned(config, traffic, ask(), "cheap2", 600)
    assert (d.primary, d.pin) == ("cheap2", "soft")
    # ... but not a model that costs ten times more.
    d = pinned(config, traffic, ask(), "strong", 600)
    assert (d.primary, d.pin) == ("cheap", "soft-lost")
    # Escapes: removed, busy (cooling), lacks a capability, outgrew the context window.
    assert pinned(config, traffic, ask(), "gone", 10).pin == "escaped:removed"
    assert isinstance(traffic.health, Health)
    traffic.health.failed("cheap2")
    d = pinned(config, traffic, ask(), "cheap2", 10)
    assert (d.primary, d.pin) == ("cheap", "escaped:busy")
    mono.now += 100
    d = pinned(config, traffic, ask(tools=True), "cheap", 10)
    assert (d.primary, d.pin) == ("strong", "escaped:capability")  # tools: hard, strong
    image = ChatRequest("auto", (Message("user", (TextPart("see"), ImagePart("https://e/x"))),))
    assert pinned(config, traffic, image, "cheap", 10).pin == "escaped:capability"
    long = ask("x" * 6000)  # ~2004 tokens: past cheap's 2000 window
    d = pinned(config, traffic, long, "cheap", 10)
    assert (d.primary, d.pin) == ("cheap2", "escaped:context")  # the closest larger window


def test_affinity_budget_escape_and_rules_win() -> None:
    rule = '[[rules]]\nname = "tools"\nwhen = { has_tools = true }\nthen = { primary = "strong" }'
    config, traffic, _, _ = setup(cheap="daily_usd = 0.0", extra=rule)
    assert pinned(config, traffic, ask(), "cheap", 10).pin == "escaped:budget"
    d = pinned(config, traffic, ask(tools=True), "cheap2", 10)
    assert (d.rule, d.primary, d.pin) == ("tools", "strong", None)


def test_a_scripted_conversation_and_a_restart(tmp_path: Path) -> None:
    config, traffic, _, wall = setup(extra="[affinity]\nenabled = true")
    ua = {"user-agent": "chat/1"}
    history: list[tuple[str, str]] = []
    served = []
    for turn, (text, advance) in enumerate(
        [("hi", 0), ("debug this race condition", 60), ("thanks", 60), ("again", 1000)]
    ):
        wall.now += advance
        req = ask(text, *history)
        key = session_key(req, ua)
        d = decide(config, req, ua, live=traffic, pin=traffic.sessions.pin(key))
        served.append((d.primary, d.pin))
        traffic.finished(record(d.primary, session=key, ts=wall.now, request_id=f"t{turn}"))
        history += [("user", text), ("assistant", "ok")]
    assert served == [
        ("cheap", None),  # the first turn: nothing pinned yet
        ("cheap", "hard"),  # hard, though the prompt is now hard (strong would be chosen)
        ("cheap", "hard"),
        ("strong", "soft-lost"),  # soft window, but the conversation now needs strong
    ]
    # The ledger keeps sessions: a new daemon (a new Traffic) starts from it.
    path = tmp_path / "ledger.db"
    db = schema.connect(path)
    schema.migrate(db)
    key = session_key(ask("hi"), ua)
    rows = [
        record("strong", session=key, ts=wall.now - 100, request_id="a"),
        record("cheap", session="other", ts=wall.now - 5000, request_id="b"),  # past 30 min
        record("strong", 1_000_000, ts=wall.now - 10, request_id="c"),  # $10 today
    ]
    ledger_rows.write_batch(db, rows, config.models)
    seed = ledger_read.traffic_seed(
        db,
        day_start(wall.now).timestamp(),
        month_start(wall.now).timestamp(),
        wall.now - config.affinity.soft_secs,
    )
    db.close()
    fresh = Traffic(config, None, Clock(0.0), wall)
    fresh.seed(seed.today, seed.month, seed.sessions, seed.ttft)
    pin = fresh.sessions.pin(key)
    assert pin is not None and (pin.alias, pin.hard) == ("strong", True)
    assert fresh.sessions.pin("other") is None
    assert fresh.budgets.spend.today["strong"] == pytest.approx(10.0)
    later = ask("more", ("user", "hi"), ("assistant", "ok"))
    d = decide(config, later, ua, live=fresh, pin=pin)
    assert (d.primary, d.pin) == ("strong", "hard")
