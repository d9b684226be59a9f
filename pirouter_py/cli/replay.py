"""`pirouter replay`: re-decide the ledger's recorded requests under a candidate config (no
upstream calls) and report what would have changed.

A request can be re-decided only from its text, kept with `[ledger] store_prompts`; the others
are counted. It is re-decided by `routing.decide`, as the daemon decides, with the headers routing
read when it was served (kept since ledger migration 014; rows from before are re-decided without
them, and counted) and the learned model the config would load. The cost estimate prices the
tokens of the answer each request got at the rates of the model the candidate would try first,
as if it answered with those tokens and no escalation, against what the request cost as recorded.
"""

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from pirouter_py.cli.common import (
    ConfigOption,
    JsonOption,
    app,
    guard,
    learned_scorer,
    load,
    open_ledger,
    print_json,
)
from pirouter_py.cli.ledger import SinceOption, parse_since


def replay_rows(
    cfg: Any, rows: list[dict[str, Any]], bodies: dict[str, str], scorer: Any = None
) -> dict[str, Any]:
    """The report for `rows` (answered requests with their attempts) under config `cfg` (and
    the learned router `scorer`, when it has [routing] learned on), each re-decided with the
    headers kept with it."""
    from pirouter_py.errors import PirouterError
    from pirouter_py.ledger.pricing import cost
    from pirouter_py.routing.decide import decide
    from pirouter_py.wire import codecs

    moved: Counter[tuple[str, str]] = Counter()
    counts = Counter[str]()
    recorded_cost = estimated_cost = 0.0
    missing = cfg.unavailable(os.environ)
    for row in rows:
        counts["requests"] += 1
        body = bodies.get(row["id"])
        codec = codecs.BY_PROTOCOL.get(row.get("protocol") or "openai")
        if body is None or codec is None:
            counts["without_text"] += 1
            continue
        headers = _headers(row.get("route_headers"))
        try:
            request = codec.decode_request(body.encode())
            new = decide(cfg, request, headers or {}, scorer=scorer, unavailable=missing).primary
        except (ValueError, PirouterError):
            counts["not_routable"] += 1
            continue
        counts["replayed"] += 1
        counts["without_headers"] += headers is None
        old = row.get("primary_model") or ""
        if new != old:
            moved[(old, new)] += 1
        answered = [a for a in row["attempts"] if a.get("returned")] or row["attempts"][-1:]
        tokens = answered[0] if answered else {}
        recorded_cost += row.get("cost_usd") or 0.0
        estimated_cost += cost(
            cfg.models.get(new),
            tokens.get("input_tokens") or 0,
            tokens.get("output_tokens") or 0,
            tokens.get("cache_read_tokens") or 0,
            tokens.get("cache_write_tokens") or 0,
        )
    return {
        "requests": counts["requests"],
        "replayed": counts["replayed"],
        "without_text": counts["without_text"],
        "not_routable": counts["not_routable"],
        "without_headers": counts["without_headers"],
        "moved": [
            {"from": old, "to": new, "requests": n}
            for (old, new), n in sorted(moved.items(), key=lambda item: (-item[1], item[0]))
        ],
        "recorded_cost_usd": round(recorded_cost, 6),
        "estimated_cost_usd": round(estimated_cost, 6),
        "difference_usd": round(estimated_cost - recorded_cost, 6),
    }


def _headers(kept: Any) -> dict[str, str] | None:
    """A row's kept headers (`requests.route_headers`), None when it has none (recorded before
    they were kept, or not a JSON object of strings)."""
    import orjson

    if not isinstance(kept, str):
        return None
    try:
        found = orjson.loads(kept)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(found, dict):
        return None
    return {str(k).lower(): v for k, v in found.items() if isinstance(v, str)}


@app.command("replay")
def replay(
    ctx: typer.Context,
    since: SinceOption = None,
    ledger: Annotated[
        Path | None,
        typer.Option(
            "--ledger", help="The ledger to replay (default: the config's).", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-decide past requests under a candidate config.

    The ledger's answered requests are routed again under the config given; the report says
    what would move, and the estimated cost difference."""
    from pirouter_py.ledger import read

    loaded = guard(lambda: load(ctx, config))
    start = parse_since(since) if since else 0.0
    db = open_ledger(loaded, ledger)
    rows: list[dict[str, Any]] = []
    bodies: dict[str, str] = {}
    if db is not None:
        try:
            rows = [r for r in read.read_requests(db, start) if r.get("status") == "ok"]
            bodies = read.stored_prompts(db, [r["id"] for r in rows])
        finally:
            db.close()
    report = replay_rows(loaded.config, rows, bodies, learned_scorer(loaded))
    if as_json:
        print_json(report)
        return
    skipped = []
    if report["without_text"]:
        skipped.append(f"{report['without_text']} without their text ([ledger] store_prompts off)")
    if report["not_routable"]:
        skipped.append(f"{report['not_routable']} not routable under this config")
    head = f"replayed {report['replayed']} of {report['requests']} answered requests"
    lines = [head + (f" ({'; '.join(skipped)})" if skipped else "")]
    if report["without_headers"]:
        lines.append(
            f"  {report['without_headers']} re-decided without their headers (recorded before "
            "the ledger kept them): rules on User-Agent or x-pirouter-* headers could not match"
        )
    lines += [f"  {m['from'] or '-'} -> {m['to']}: {m['requests']}" for m in report["moved"]]
    if not report["moved"]:
        lines.append("  no request would move")
    lines.append(
        f"cost as recorded ${report['recorded_cost_usd']:.4f}, estimated under this config"
        f" ${report['estimated_cost_usd']:.4f} ({report['difference_usd']:+.4f})"
    )
    sys.stdout.write("\n".join(lines) + "\n")
