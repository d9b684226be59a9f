"""What the dashboard shows for a window, from ledger rows. Pure: rows in, a JSON-able dict out.

The headline figures are `pirouter stats --json`'s own (the same `summarize`), so the page and
the terminal never disagree; the rest breaks the same rows down by rule, client and protocol,
lays spend and savings on a time axis, draws escalations as a flow (from model, to model, and the
check or error that moved it) and puts latencies, times to first token and pirouter's own
overhead in histograms with their percentiles.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pirouter_py.ledger.pricing import cost
from pirouter_py.reports import render
from pirouter_py.reports.stats import Baseline, _answer, percentile, summarize

# what the live table shows of each attempt (columns of the ledger's `attempts` table)
ATTEMPT_KEYS = (
    *("alias", "provider", "model_id", "outcome", "http_status", "error"),
    *("input_tokens", "output_tokens", "cost_usd", "latency_ms", "ttft_ms"),
)
# histogram bucket edges in ms: 1, 2, 5, 10, 20, 50 ... 100 s
EDGES = tuple(m * 10**e for e in range(0, 6) for m in (1, 2, 5))


def _histogram(values: Sequence[float]) -> dict[str, Any]:
    counts = [0] * (len(EDGES) + 1)
    for v in values:
        i = 0
        while i < len(EDGES) and v > EDGES[i]:
            i += 1
        counts[i] += 1
    return {
        "edges_ms": list(EDGES),
        "counts": counts,
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "n": len(values),
    }


def _counts(rows: Sequence[Mapping[str, Any]], key: str, empty: str) -> list[dict[str, Any]]:
    found = Counter(str(r.get(key) or empty) for r in rows)
    return [
        {"key": k, "requests": n} for k, n in sorted(found.items(), key=lambda i: (-i[1], i[0]))
    ]


def client_name(agent: str) -> str:
    """A user agent's product name (`claude-cli/2.1 (external, cli)` -> `claude-cli`)."""
    return agent.split("/", 1)[0].split(" ", 1)[0] or "(none)"


def _flow(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Escalations: from one attempt's model to the next, and why the first was left."""
    moves: Counter[tuple[str, str, str]] = Counter()
    for row in rows:
        attempts = row["attempts"]
        for a, b in itertools.pairwise(attempts):
            moves[(str(a.get("alias")), str(b.get("alias")), str(a.get("outcome")))] += 1
    return [
        {"from": f, "to": t, "why": w, "requests": n}
        for (f, t, w), n in sorted(moves.items(), key=lambda i: (-i[1], i[0]))
    ]


def _series(
    rows: Sequence[Mapping[str, Any]], since: float, until: float, baseline: Baseline | None
) -> dict[str, Any]:
    """Requests, spend and baseline spend per time step (about 60 steps across the window)."""
    span = max(1.0, until - since)
    step = max(60, math.ceil(span / 60 / 60) * 60)  # whole minutes
    n = math.ceil(span / step)
    requests, spent, base = [0] * n, [0.0] * n, [0.0] * n
    for row in rows:
        i = min(n - 1, max(0, int((float(row["ts"]) - since) // step)))
        requests[i] += 1
        spent[i] += float(row["cost_usd"])
        answer = _answer(row) if baseline is not None and row["status"] == "ok" else None
        if answer is not None and baseline is not None:
            base[i] += cost(
                baseline.model,
                int(answer.get("input_tokens") or 0),
                int(answer.get("output_tokens") or 0),
                int(answer.get("cache_read_tokens") or 0),
                int(answer.get("cache_write_tokens") or 0),
            )
    return {
        "start": since,
        "step_s": step,
        "requests": requests,
        "cost_usd": spent,
        "baseline_usd": base if baseline is not None else None,
    }


def page(
    rows: Sequence[Mapping[str, Any]],
    *,
    since: float,
    until: float,
    baseline: Baseline | None,
    window: str,
) -> dict[str, Any]:
    """Everything the page's panels show for the rows of one window."""
    summary = summarize(rows, since=since, by="model", baseline=baseline)
    ttft = [float(r["ttft_ms"]) for r in rows if r.get("ttft_ms") is not None]
    overhead = [float(r["overhead_ms"]) for r in rows if r.get("overhead_ms") is not None]
    clients = [{**r, "client": client_name(str(r.get("user_agent") or ""))} for r in rows]
    return {
        "stats": render.summary_json(summary, {"since": since, "window": window}),
        "until": until,
        "by_rule": _counts(rows, "route_rule", "(none)"),
        "by_client": _counts(clients, "client", "(none)"),
        "by_protocol": _counts(rows, "protocol", "(unknown)"),
        "escalations": _flow(rows),
        "latency": _histogram([float(r["latency_ms"]) for r in rows]),
        "ttft": _histogram(ttft),
        "overhead": _histogram(overhead),
        "series": _series(rows, since, until, baseline),
    }


def live_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One request as the live table shows it (and as its server-sent event carries it)."""
    return {
        "id": row["id"],
        "ts": row["ts_ms"] / 1000 if row.get("ts_ms") else row["ts"],
        "status": row["status"],
        "rule": row.get("route_rule"),
        "model": row.get("final_model") or None,
        "protocol": row.get("protocol"),
        "client": client_name(str(row.get("user_agent") or "")),
        "session": row.get("session"),
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cost_usd": row["cost_usd"],
        "latency_ms": row["latency_ms"],
        "ttft_ms": row.get("ttft_ms"),
        "overhead_ms": row.get("overhead_ms"),
        "attempts": [{k: a.get(k) for k in ATTEMPT_KEYS} for a in row["attempts"]],
    }
