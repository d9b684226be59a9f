"""Text and JSON renderings of ledger reports (`stats`, `ledger tail`), as strings and values.

Plain fixed-width text, so output is exact at any terminal width and costs no rich import;
`cli/` prints what these return.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from pirouter_py.reports.stats import Group, Summary, Trend

SPARKS = "▁▂▃▄▅▆▇█"
RULE_WIDTH = 24  # ledger tail: a longer rule name is cut with "…"


def money(value: float) -> str:
    """Dollars with the precision the amount needs: cents from $1 up, two significant digits
    below (never 0.0000 for something that did cost), "0" for nothing."""
    if value == 0:
        return "0"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    digits = max(2, 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{min(digits, 10)}f}"


def spark(values: Sequence[float]) -> str:
    """A sparkline: one block per value, scaled to the largest (a zero stays the lowest)."""
    top = max(values, default=0)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[max(0, math.ceil(8 * v / top) - 1)] if v > 0 else " " for v in values)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Columns as wide as their widest cell; the first `left` columns left-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i < left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    return [line(headers), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _cells(g: Group) -> list[str]:
    return [
        g.key,
        str(g.requests),
        str(g.input_tokens),
        str(g.output_tokens),
        money(g.cost_usd),
        _ms(g.p50_ms),
        _ms(g.p95_ms),
        str(g.escalated),
        str(g.errors),
    ]


HEADERS = ("reqs", "in_tokens", "out_tokens", "cost_usd", "p50_ms", "p95_ms", "escalated", "errors")


def summary_head(summary: Summary, window: str) -> list[str]:
    """The lines above the table: counts, rates, money."""
    lines = [
        f"pirouter stats: {window}",
        f"  requests {summary.requests}, success {_pct(summary.success_rate)}, "
        f"escalated {_pct(summary.escalation_rate)}",
    ]
    spent = f"  cost ${money(summary.cost_usd)}"
    if summary.baseline is not None:
        pct = summary.savings_pct
        spent += (
            f", on {summary.baseline.alias} ${money(summary.baseline_cost_usd)}, saved "
            f"${money(summary.savings_usd)}" + (f" ({pct:.1f}%)" if pct is not None else "")
        )
    return [*lines, spent]


def table_rows(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows (the total last)."""
    return [summary.by, *HEADERS], [*(_cells(g) for g in summary.groups), _cells(summary.total)]


def trend_lines(trend: Trend | None) -> list[str]:
    """Requests and cost per period as sparklines, first and last period named (from three
    periods on: fewer are no trend)."""
    if trend is None or len(trend.labels) < 3:
        return []
    span = f"{trend.labels[0]} .. {trend.labels[-1]}, per {trend.unit}"
    return [
        f"trend {span}",
        f"  requests {spark(trend.requests)}  peak {max(trend.requests)}",
        f"  cost     {spark(trend.cost_usd)}  peak ${money(max(trend.cost_usd))}",
    ]


def summary_text(summary: Summary, window: str, trend: Trend | None = None) -> str:
    """The report people read: a summary, the trend, then one row per group and a total."""
    lines = [*summary_head(summary, window), ""]
    if trend_lines(trend):
        lines += [*trend_lines(trend), ""]
    headers, rows = table_rows(summary)
    lines += table(headers, rows)
    return "\n".join(lines) + "\n"


def summary_json(summary: Summary, window: Mapping[str, Any]) -> dict[str, Any]:
    """The same numbers for scripts."""
    return {
        **window,
        "by": summary.by,
        "requests": summary.requests,
        "successes": summary.successes,
        "success_rate": summary.success_rate,
        "escalated": summary.escalated,
        "escalation_rate": summary.escalation_rate,
        "cost_usd": summary.cost_usd,
        "baseline": (
            {"alias": summary.baseline.alias, "cost_usd": summary.baseline_cost_usd}
            if summary.baseline
            else None
        ),
        "savings_usd": summary.savings_usd,
        "savings_pct": summary.savings_pct,
        "groups": [asdict(g) for g in summary.groups],
        "total": asdict(summary.total),
    }


TAIL_HEADER = (
    f"{'time':<19}  {'status':<16}  {'rule':<{RULE_WIDTH}}  {'in':>7}  {'out':>7}  "
    f"{'cost_usd':>10}  {'ms':>7}  attempts"
)


def tail_line(row: Mapping[str, Any]) -> str:
    """One request on one line, in TAIL_HEADER's columns: when, outcome, route, tokens, cost,
    time, then the attempt chain."""
    when = datetime.fromtimestamp(row["ts"]).strftime("%Y-%m-%d %H:%M:%S")
    chain = " > ".join(f"{a['alias']}:{a['outcome']}" for a in row["attempts"]) or "-"
    rule = str(row.get("route_rule") or "-")
    if len(rule) > RULE_WIDTH:
        rule = rule[: RULE_WIDTH - 1] + "…"
    return (
        f"{when:<19}  {row['status']:<16}  {rule:<{RULE_WIDTH}}  {row['input_tokens']:>7}  "
        f"{row['output_tokens']:>7}  {money(row['cost_usd']):>10}  {row['latency_ms']:>7}  {chain}"
    )
