"""What the dashboard shows for a window, from ledger rows. Pure: rows in, a JSON-able dict out.

The headline figures are `pirouter stats --json`'s own (the same `summarize`), so the page and
the terminal never disagree; the rest breaks the same rows down by rule, client and protocol,
lays spend and savings on a time axis, draws escalations as a flow (from model, to model, and the
check or error that moved it) and puts latencies, times to first token and pirouter's own
overhead in histograms with their percentiles.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pirouter_py.ledger import rollups
from pirouter_py.ledger.pricing import cost
from pirouter_py.record import STATUS_CLIENT_CANCELLED, STATUS_OK
from pirouter_py.reports import render
from pirouter_py.reports.dashboard_api import Kind, LearnedModel, LearningBody, RequestRow
from pirouter_py.reports.stats import (
    NO_ANSWER,
    Baseline,
    Group,
    Summary,
    _answer,
    _escalated,
    percentile,
    summarize,
)

# what the live table shows of each attempt (columns of the ledger's `attempts` table)
ATTEMPT_KEYS = (
    *("alias", "provider", "model_id", "outcome", "http_status", "error"),
    *("input_tokens", "output_tokens", "cost_usd", "latency_ms", "ttft_ms"),
)
# histogram bucket edges in ms: 1, 2, 5, 10, 20, 50 ... 100 s
EDGES = rollups.COARSE


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
        "by_app": _counts(clients, "client", "(none)"),
        "by_client": _counts(rows, "client", "(no key)"),
        "by_protocol": _counts(rows, "protocol", "(unknown)"),
        "escalations": _flow(rows),
        "latency": _histogram([float(r["latency_ms"]) for r in rows]),
        "ttft": _histogram(ttft),
        "overhead": _histogram(overhead),
        "series": _series(rows, since, until, baseline),
    }


def kind(row: Mapping[str, Any]) -> Kind:
    """The page's word for how a request ended (ledger/search.py filters by the same)."""
    if row["status"] == STATUS_OK:
        return "escalated" if _escalated(row) else "ok"
    return "cancelled" if row["status"] == STATUS_CLIENT_CANCELLED else "failed"


def live_row(row: Mapping[str, Any]) -> RequestRow:
    """One request as the requests table shows it (and as its server-sent event and the
    exports carry it); `feedback`, `prompt` and `answer` when the row has them."""
    return {
        "id": row["id"],
        "ts": row["ts_ms"] / 1000 if row.get("ts_ms") else row["ts"],
        "status": row["status"],
        "kind": kind(row),
        "rule": row.get("route_rule"),
        "model": row.get("final_model") or None,
        "protocol": row.get("protocol"),
        "client": row.get("client"),
        "app": client_name(str(row.get("user_agent") or "")),
        "session": row.get("session"),
        "input_tokens": row["input_tokens"],
        "output_tokens": row["output_tokens"],
        "cost_usd": row["cost_usd"],
        "latency_ms": row["latency_ms"],
        "ttft_ms": row.get("ttft_ms"),
        "overhead_ms": row.get("overhead_ms"),
        "attempts": [{k: a.get(k) for k in ATTEMPT_KEYS} for a in row["attempts"]],  # type: ignore[misc]
        "feedback": row.get("feedback"),
        "prompt": row.get("prompt"),
        "answer": row.get("answer"),
    }


def learning(
    lines: Sequence[Mapping[str, Any]],
    *,
    min_labels: int,
    min_each: int,
    good: float,
    shortfall: Callable[[int, int], str],
    newest: int | None = None,
) -> LearningBody:
    """How many labels each model has in the ledger's labelled lines (ledger/labels.py), and
    what `pirouter learn` needs before it trains one (`shortfall` of its labels and good ones:
    `min_labels` labels, `min_each` of them good, a score of at least `good`, and `min_each`
    not); `newest`: the lines are of only that many newest requests."""
    found: dict[str, list[int]] = {}
    people = 0
    for line in lines:
        for alias, score in line["labels"].items():
            have = found.setdefault(alias, [0, 0])
            have[0] += 1
            have[1] += int(score >= good)
        people += sum(1 for s in line.get("label_sources", {}).values() if s == "feedback")
    models: list[LearnedModel] = []
    for alias, (n, ok) in sorted(found.items(), key=lambda i: (-i[1][0], i[0])):
        wants = shortfall(n, ok)
        models.append(
            {
                "model": alias,
                "labels": n,
                "good": ok,
                "bad": n - ok,
                "ready": not wants,
                "needs": wants,
            }
        )
    return {
        "min_labels": min_labels,
        "min_each": min_each,
        "models": models,
        "feedback": people,
        "ready": any(m["ready"] for m in models),
        "command": "pirouter learn",
        "newest": newest,
    }


# The page of a long window: hourly rollups (ledger/rollups.py) for the hours they cover, the
# rows of the others (the window's first partial hour, the current hour, hours not yet rolled up)
# summed here the same way, then both together. Percentiles come from the rollups' fine buckets.

_SUMS = 9  # requests, escalated, in, out, cost, answer uncached/read/write/output


def rolled_up(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rows summed as `ledger.rollups.read` sums its hours (the same keys and columns)."""
    groups: dict[tuple[Any, ...], list[float]] = {}
    series: dict[tuple[Any, ...], list[float]] = {}
    times: dict[tuple[str, str], dict[int, int]] = {}
    flow: Counter[tuple[str, str, str]] = Counter()
    for row in rows:
        model, status = str(row["final_model"] or ""), str(row["status"])
        answer = _answer(row) if status == "ok" else None
        sums = [1, int(_escalated(row)), row["input_tokens"], row["output_tokens"], row["cost_usd"]]
        if answer is None:
            sums += [0, 0, 0, 0]
        else:
            read = int(answer.get("cache_read_tokens") or 0)
            write = int(answer.get("cache_write_tokens") or 0)
            uncached = max(0, int(answer.get("input_tokens") or 0) - read - write)
            sums += [uncached, read, write, int(answer.get("output_tokens") or 0)]
        rule, protocol = str(row.get("route_rule") or ""), str(row.get("protocol") or "")
        agent = client_name(str(row.get("user_agent") or ""))
        named = str(row.get("client") or "")
        for table, key in (
            (groups, (model, rule, agent, named, protocol, status)),
            (series, (int(row["ts"]) // rollups.HOUR, status)),
        ):
            into = table.setdefault(key, [0] * _SUMS)
            for i, v in enumerate(sums):
                into[i] += v
        for kind, column in rollups.TIMES.items():
            if row.get(column) is not None:
                counts = times.setdefault((model, kind), {})
                b = rollups.bucket(float(row[column]))
                counts[b] = counts.get(b, 0) + 1
        for a, b in itertools.pairwise(row["attempts"]):
            flow[(str(a.get("alias")), str(b.get("alias")), str(a.get("outcome")))] += 1
    return {
        "groups": [(*k, *v) for k, v in groups.items()],
        "series": [(*k, *v) for k, v in series.items()],
        "times": times,
        "flow": [(*k, n) for k, n in flow.items()],
    }


def _add(into: dict[Any, list[float]], key: Any, sums: Sequence[float]) -> None:
    have = into.setdefault(key, [0] * len(sums))
    for i, v in enumerate(sums):
        have[i] += v


def _baseline_usd(baseline: Baseline | None, sums: Sequence[float]) -> float:
    if baseline is None:
        return 0.0
    uncached, read, write, output = (int(v) for v in sums[5:9])
    return cost(baseline.model, uncached + read + write, output, read, write)


def _bucket_histogram(counts: Mapping[int, int]) -> dict[str, Any]:
    coarse = [0] * (len(EDGES) + 1)
    for b, n in counts.items():
        at = rollups.EDGES[b] if b < rollups.OVER else math.inf
        coarse[bisect.bisect_left(EDGES, at)] += n
    return {
        "edges_ms": list(EDGES),
        "counts": coarse,
        "p50": rollups.percentile(counts, 0.50),
        "p95": rollups.percentile(counts, 0.95),
        "p99": rollups.percentile(counts, 0.99),
        "n": sum(counts.values()),
    }


def _merged(counts: Sequence[Mapping[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for c in counts:
        for b, n in c.items():
            out[b] = out.get(b, 0) + n
    return out


def page_rolled(
    parts: Sequence[Mapping[str, Any]],
    *,
    since: float,
    until: float,
    baseline: Baseline | None,
    window: str,
) -> dict[str, Any]:
    """The page (the same keys as `page`) from rollups and `rolled_up` rows, summed together."""
    by_key: dict[tuple[Any, ...], list[float]] = {}
    by_hour: dict[tuple[Any, ...], list[float]] = {}
    times: dict[tuple[str, str], list[Mapping[int, int]]] = {}
    moves: Counter[tuple[str, str, str]] = Counter()
    for part in parts:
        for g in part["groups"]:
            _add(by_key, tuple(g[:6]), g[6:])
        for h in part["series"]:
            _add(by_hour, tuple(h[:2]), h[2:])
        for key, counts in part["times"].items():
            times.setdefault(key, []).append(counts)
        for src, dst, why, n in part["flow"]:
            moves[(src, dst, why)] += n
    models: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    agents: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    protocols: Counter[str] = Counter()
    total = [0.0] * _SUMS
    total_errors = successes = 0
    for (model, rule, agent, named, protocol, status), summed in by_key.items():
        n = int(summed[0])
        # escalated counts answers after an escalation; failures are counted apart
        sums = summed if status == "ok" else [summed[0], 0, *summed[2:]]
        _add(models, model, sums)
        for i, v in enumerate(sums):
            total[i] += v
        errors[model] += n if status != "ok" else 0
        total_errors += n if status != "ok" else 0
        successes += n if status == "ok" else 0
        rules[rule or "(none)"] += n
        agents[agent] += n
        keys[named or "(no key)"] += n
        protocols[protocol or "(unknown)"] += n
    latency = {m: _merged(c) for (m, kind), c in times.items() if kind == "latency"}

    def group(key: str, sums: Sequence[float], counts: dict[int, int], errs: int) -> Group:
        return Group(
            key=key,
            requests=int(sums[0]),
            input_tokens=int(sums[2]),
            output_tokens=int(sums[3]),
            cost_usd=float(sums[4]),
            p50_ms=rollups.percentile(counts, 0.50),
            p95_ms=rollups.percentile(counts, 0.95),
            escalated=int(sums[1]),
            errors=errs,
        )

    table = sorted(
        (group(m or NO_ANSWER, v, latency.get(m, {}), errors[m]) for m, v in models.items()),
        key=lambda g: (-g.requests, g.key),
    )
    everything = group("TOTAL", total, _merged(list(latency.values())), total_errors)
    summary = Summary(
        since=since,
        by="model",
        requests=everything.requests,
        successes=successes,
        escalated=everything.escalated,
        cost_usd=everything.cost_usd,
        baseline=baseline,
        baseline_cost_usd=_baseline_usd(baseline, total),
        groups=tuple(table),
        total=everything,
    )

    def counted(found: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"key": k, "requests": n} for k, n in sorted(found.items(), key=lambda i: (-i[1], i[0]))
        ]

    def histogram(kind: str) -> dict[str, Any]:
        found = [c for (_, k), cs in times.items() if k == kind for c in cs]
        return _bucket_histogram(_merged(found))

    # requests, spend and baseline per step of whole hours, about 60 steps across the window
    span = max(1.0, until - since)
    step = max(rollups.HOUR, math.ceil(span / 60 / rollups.HOUR) * rollups.HOUR)
    n = math.ceil(span / step)
    requests, spent, base = [0] * n, [0.0] * n, [0.0] * n
    for (hour, _), sums in by_hour.items():
        i = min(n - 1, max(0, int((hour * rollups.HOUR - since) // step)))
        requests[i] += int(sums[0])
        spent[i] += float(sums[4])
        base[i] += _baseline_usd(baseline, sums)
    return {
        "stats": render.summary_json(summary, {"since": since, "window": window}),
        "until": until,
        "by_rule": counted(rules),
        "by_app": counted(agents),
        "by_client": counted(keys),
        "by_protocol": counted(protocols),
        "escalations": [
            {"from": f, "to": t, "why": w, "requests": k}
            for (f, t, w), k in sorted(moves.items(), key=lambda i: (-i[1], i[0]))
        ],
        "latency": histogram("latency"),
        "ttft": histogram("ttft"),
        "overhead": histogram("overhead"),
        "series": {
            "start": since,
            "step_s": step,
            "requests": requests,
            "cost_usd": spent,
            "baseline_usd": base if baseline is not None else None,
        },
    }
