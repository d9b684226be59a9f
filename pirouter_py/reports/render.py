"""Text and JSON renderings of ledger reports (`stats`, `ledger tail`), as strings and values.

Plain fixed-width text, so output is exact at any terminal width and costs no rich import;
`cli/` prints what these return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from pirouter_py.reports.stats import Group, Summary


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
        f"{g.cost_usd:.4f}",
        _ms(g.p50_ms),
        _ms(g.p95_ms),
        str(g.escalated),
        str(g.errors),
    ]


def summary_text(summary: Summary, window: str) -> str:
    """The report people read: a summary, then one row per group and a total."""
    lines = [
        f"pirouter stats: {window}",
        f"  requests {summary.requests}, success {_pct(summary.success_rate)}, "
        f"escalated {_pct(summary.escalation_rate)}",
    ]
    money = f"  cost ${summary.cost_usd:.4f}"
    if summary.baseline is not None:
        pct = summary.savings_pct
        money += (
            f", on {summary.baseline.alias} ${summary.baseline_cost_usd:.4f}, saved "
            f"${summary.savings_usd:.4f}" + (f" ({pct:.1f}%)" if pct is not None else "")
        )
    lines += [money, ""]
    headers = [
        summary.by,
        "reqs",
        "in_tokens",
        "out_tokens",
        "cost_usd",
        "p50_ms",
        "p95_ms",
        "escalated",
        "errors",
    ]
    lines += table(headers, [*(_cells(g) for g in summary.groups), _cells(summary.total)])
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


def tail_line(row: Mapping[str, Any]) -> str:
    """One request on one line: when, outcome, route, the attempt chain, tokens, cost, time."""
    when = datetime.fromtimestamp(row["ts"]).strftime("%Y-%m-%d %H:%M:%S")
    chain = " > ".join(f"{a['alias']}:{a['outcome']}" for a in row["attempts"]) or "-"
    return (
        f"{when}  {row['status']:<16} {row.get('route_rule') or '-'}  {chain}  "
        f"in {row['input_tokens']} out {row['output_tokens']}  ${row['cost_usd']:.6f}  "
        f"{row['latency_ms']} ms"
    )
