"""The page reads only fields its API sends: every `<name>.<field>` the page's script reads of
an endpoint's body or items (app.js names each by one variable, listed at its top) is a key of
the TypedDict reports/dashboard_api.py declares for it. A rename on either side fails here,
instead of the page quietly showing "none" (as it once did for models cooling)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_type_hints

import pytest

from pirouter_py.reports import dashboard_api as shapes

APP = Path(shapes.__file__).parent.parent / "server" / "ui" / "app.js"

# the variable app.js reads each shape through (its header comment lists the same)
READ_AS: dict[str, type] = {
    "s": shapes.StateBody,
    "c": shapes.Cooling,
    "k": shapes.RestingKey,
    "l": shapes.Limit,
    "b": shapes.Budget,
    "led": shapes.LedgerHealth,
    "body": shapes.RequestsBody,
    "r": shapes.RequestRow,
    "a": shapes.AttemptRow,
    "ser": shapes.SeriesBody,
    "line": shapes.SeriesLine,
    "learn": shapes.LearningBody,
    "m": shapes.LearnedModel,
    "page": shapes.SummaryBody,
    "g": shapes.Count,
}


def reads(source: str) -> dict[str, set[str]]:
    """The fields read of each variable: `s.cooling`, `r.attempts.map` -> cooling, attempts."""
    code = re.sub(r"`[^`]*`", lambda m: " ".join(re.findall(r"\$\{([^}]*)\}", m.group())), source)
    code = re.sub(r"//[^\n]*", "", code)
    code = re.sub(r'"(?:\\.|[^"\\])*"', '""', code)
    found: dict[str, set[str]] = {name: set() for name in READ_AS}
    for name, field in re.findall(r"(?<![\w.$])([A-Za-z_]\w*)\.([A-Za-z_]\w*)", code):
        if name in found:
            found[name].add(field)
    return found


def test_every_field_the_page_reads_is_in_its_shape() -> None:
    found = reads(APP.read_text())
    wrong = {
        f"{name}.{field} ({READ_AS[name].__name__})"
        for name, fields in found.items()
        for field in fields
        if field not in get_type_hints(READ_AS[name])
    }
    assert not wrong, f"app.js reads fields its API does not send: {sorted(wrong)}"
    # and it reads what the state panel exists to show
    assert {"cooling", "keys", "limits", "budgets", "ledger", "config_loaded_at"} <= found["s"]
    assert {"model", "left_s", "why"} <= found["c"]
    assert {"kind", "feedback", "client", "app"} <= found["r"]
    assert {"requests", "errors", "escalated", "p50_ms", "p95_ms", "ttft_p50_ms"} <= found["line"]


@pytest.mark.parametrize(
    ("snippet", "bad"),
    [
        ("const x = s.cooling_s;", "s.cooling_s (StateBody)"),
        ("f(`${c.state} left`);", "c.state (Cooling)"),
        ("r.client_name.length", "r.client_name (RequestRow)"),
    ],
)
def test_a_misnamed_field_is_caught(snippet: str, bad: str) -> None:
    """The check can fail: the names the old page read (`cooling_s`, `state`) are caught."""
    found = reads(snippet)
    misses = {
        f"{name}.{field} ({READ_AS[name].__name__})"
        for name, fields in found.items()
        for field in fields
        if field not in get_type_hints(READ_AS[name])
    }
    assert misses == {bad}


def test_every_endpoint_has_a_shape_and_a_route() -> None:
    from aiohttp import web

    from pirouter_py.server import dashboard

    app = web.Application()
    dashboard.routes(app)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert set(shapes.ENDPOINTS) <= paths
