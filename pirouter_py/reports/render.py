"""Text and JSON renderings of ledger reports (`stats`, `ledger tail`), as strings and values.

Plain fixed-width text, so output is exact at any terminal width and costs no rich import;
`cli/` prints what these return.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from pirouter_py.reports.stats import Group, Summary, Trend

SPARKS = "▁▂▃▄▅▆▇█"
RULE_WIDTH = 24  # ledger tail: a longer rule name is cut with "…"
WIDTH = 80  # the width a report fits when the terminal's is unknown
COST_DIGITS = 2  # significant digits of the smallest cost in a report; every cost has its decimals
MAX_DECIMALS = 8  # below a hundred-millionth of a dollar, a cost shows as $0.00000000
TAIL_DECIMALS = 6  # ledger tail prints a line at a time: one fixed format for every request
# The stats table's columns, the header and whether it is dropped before the others (lowest
# first) when the table is wider than the terminal. The group's key is never dropped nor cut.
COLUMNS = ("reqs", "in_tok", "out_tok", "cost", "p50_ms", "p95_ms", "escalated", "failed")
DROP_ORDER = ("p50_ms", "in_tok", "out_tok", "p95_ms")


def money(value: float) -> str:
    """Dollars with the precision the amount needs: cents from $1 up, two significant digits
    below (never 0.0000 for something that did cost), "0" for nothing."""
    if value == 0:
        return "0"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    digits = max(2, 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{min(digits, 10)}f}"


def decimals(values: Sequence[float]) -> int:
    """The decimals that show the smallest cost in `values` with COST_DIGITS significant digits
    (cents at least), for every cost of one report: one format, decimal points aligned."""
    spent = [abs(v) for v in values if v]
    if not spent:
        return 2
    smallest = min(spent)
    return max(2, min(MAX_DECIMALS, COST_DIGITS - 1 - math.floor(math.log10(smallest))))


def usd(value: float, places: int) -> str:
    """Dollars with `places` decimals, thousands grouped: $0.0060, $0.0230, $1,234.5000."""
    return f"${value:,.{places}f}"


def spark(values: Sequence[float]) -> str:
    """A sparkline: one block per value, scaled to the largest (a zero stays the lowest)."""
    top = max(values, default=0)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[max(0, math.ceil(8 * v / top) - 1)] if v > 0 else " " for v in values)


def widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]


def fit(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    overhead: Callable[[int], int],
) -> list[int]:
    """The indices of the columns to show within `width`: all of them, or fewer, dropped in
    DROP_ORDER; the first (the key) and the columns not in DROP_ORDER always stay, whole.
    `overhead(n)` is what n columns take beside their cells (gaps, borders, padding)."""
    sizes = widths(headers, rows)
    kept = list(range(len(headers)))
    for name in DROP_ORDER:
        if sum(sizes[i] for i in kept) + overhead(len(kept)) <= width:
            break
        if name in headers:
            kept.remove(list(headers).index(name))
    return kept


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Columns as wide as their widest cell; the first `left` columns left-aligned."""
    widths_ = widths(headers, rows)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i < left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths_, strict=True))
        ).rstrip()

    rule = "-" * len(line(["-" * w for w in widths_]))
    return [line(headers), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _cells(g: Group, places: int) -> list[str]:
    return [
        g.key,
        str(g.requests),
        str(g.input_tokens),
        str(g.output_tokens),
        usd(g.cost_usd, places),
        _ms(g.p50_ms),
        _ms(g.p95_ms),
        str(g.escalated),
        str(g.errors),
    ]


def cost_places(summary: Summary, trend: Trend | None = None) -> int:
    """The decimals of every cost in one report: enough for its smallest."""
    costs = [g.cost_usd for g in (*summary.groups, summary.total)]
    costs += [summary.baseline_cost_usd, summary.savings_usd] if summary.baseline else []
    costs += [max(trend.cost_usd)] if trend is not None and trend.cost_usd else []
    return decimals(costs)


def summary_head(summary: Summary, window: str, places: int | None = None) -> list[str]:
    """The lines above the table: counts, rates, money."""
    places = cost_places(summary) if places is None else places
    lines = [
        f"pirouter stats: {window}",
        f"  requests {summary.requests}, success {_pct(summary.success_rate)} "
        f"({_pct(summary.escalation_rate)} after an escalation), "
        f"failed {_pct(summary.failure_rate)}",
    ]
    spent = f"  cost {usd(summary.cost_usd, places)}"
    if summary.baseline is not None:
        pct = summary.savings_pct
        spent += (
            f", on {summary.baseline.alias} {usd(summary.baseline_cost_usd, places)}, saved "
            f"{usd(summary.savings_usd, places)}" + (f" ({pct:.1f}%)" if pct is not None else "")
        )
    return [*lines, spent]


def table_rows(summary: Summary, places: int | None = None) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows (the total last), every column."""
    places = cost_places(summary) if places is None else places
    rows = [*(_cells(g, places) for g in summary.groups), _cells(summary.total, places)]
    return [summary.by, *COLUMNS], rows


def fitted_rows(
    summary: Summary, width: int, overhead: Callable[[int], int], places: int | None = None
) -> tuple[list[str], list[list[str]], list[str]]:
    """The table's header and rows with the columns that fit `width`, and the names of the
    columns left out."""
    headers, rows = table_rows(summary, places)
    kept = fit(headers, rows, width, overhead)
    left_out = [h for i, h in enumerate(headers) if i not in kept]
    return [headers[i] for i in kept], [[r[i] for i in kept] for r in rows], left_out


def left_out_line(names: Sequence[str], width: int) -> list[str]:
    if not names:
        return []
    return [f"(left out to fit {width} columns: {', '.join(names)}; see --json)"]


def trend_lines(trend: Trend | None, places: int = 2) -> list[str]:
    """Requests and cost per period as sparklines, first and last period named (from three
    periods on: fewer are no trend)."""
    if trend is None or len(trend.labels) < 3:
        return []
    span = f"{trend.labels[0]} .. {trend.labels[-1]}, per {trend.unit}"
    return [
        f"trend {span}",
        f"  requests {spark(trend.requests)}  peak {max(trend.requests)}",
        f"  cost     {spark(trend.cost_usd)}  peak {usd(max(trend.cost_usd), places)}",
    ]


def plain_gaps(n: int) -> int:
    return 2 * (n - 1)  # two spaces between columns


def summary_text(
    summary: Summary, window: str, trend: Trend | None = None, width: int = WIDTH
) -> str:
    """The report people read, `width` columns at most (the key column may need more): a
    summary, the trend, then one row per group and a total."""
    places = cost_places(summary, trend)
    lines = [*summary_head(summary, window, places), ""]
    if trend_lines(trend):
        lines += [*trend_lines(trend, places), ""]
    headers, rows, left_out = fitted_rows(summary, width, plain_gaps, places)
    lines += [*table(headers, rows), *left_out_line(left_out, width)]
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
        "failed": summary.failures,
        "failure_rate": summary.failure_rate,
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


ID_WIDTH = 24  # the daemon's request ids: 24 hex digits (older or imported ones may be longer)
TAIL_HEADER = (
    f"{'time':<19}  {'request_id':<{ID_WIDTH}}  {'status':<16}  {'rule':<{RULE_WIDTH}}  "
    f"{'in':>7}  {'out':>7}  {'cost':>10}  {'ms':>7}  attempts"
)


def tail_line(row: Mapping[str, Any]) -> str:
    """One request on one line, in TAIL_HEADER's columns: when, its id (whole: `pirouter
    feedback` takes it), outcome, route, tokens, cost, time, then the attempt chain."""
    when = datetime.fromtimestamp(row["ts"]).strftime("%Y-%m-%d %H:%M:%S")
    chain = " > ".join(f"{a['alias']}:{a['outcome']}" for a in row["attempts"]) or "-"
    rule = str(row.get("route_rule") or "-")
    if len(rule) > RULE_WIDTH:
        rule = rule[: RULE_WIDTH - 1] + "…"
    return (
        f"{when:<19}  {row['id']:<{ID_WIDTH}}  {row['status']:<16}  {rule:<{RULE_WIDTH}}  "
        f"{row['input_tokens']:>7}  {row['output_tokens']:>7}  "
        f"{usd(row['cost_usd'], TAIL_DECIMALS):>10}  {row['latency_ms']:>7}  {chain}"
    )
