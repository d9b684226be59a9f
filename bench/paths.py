"""Each inbound path, whole and streamed, against the floor relaying that path's own bytes to the
same fake upstream, with LiteLLM's proxy in the same rounds on the paths it serves: the rows of
`run.py --paths` (and of the full run, after its main table). See `run.py`'s docstring."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import litellm_proxy
from common import (  # type: ignore[import-not-found]
    HERE,
    PY,
    cpu_seconds,
    free_port,
    ledger_drained,
    loadgen,
    paired,
    pirouter_config,
    process,
    rss_mib,
    settled_cpu_seconds,
    tree_cpu_seconds,
    tree_pids,
    upstream_and_floor,
)

# The inbound paths measured each against its own floor: (label, loadgen route, the daemon that
# serves it: "pirouter" calls an OpenAI upstream, the others one of their kind)
PATHS = (
    ("chat completions -> OpenAI", "chat", "pirouter"),
    ("Anthropic Messages -> Anthropic", "messages", "pirouter_anthropic"),
    ("Anthropic Messages -> OpenAI", "messages", "pirouter"),
    ("Responses -> OpenAI", "responses", "pirouter"),
    ("Ollama /api/chat -> Ollama", "ollama", "pirouter_ollama"),
    ("text completions -> OpenAI", "completions", "pirouter"),
    ("Ollama /api/generate -> Ollama", "generate", "pirouter_ollama"),
)


MODES = (("whole", "0"), ("streamed", "1"))


# The LiteLLM proxy that serves each path (its model calls the same kind of upstream as
# pirouter's daemon there), None where LiteLLM does not serve the path inbound
LITELLM = {
    "chat completions -> OpenAI": "litellm",
    "Anthropic Messages -> Anthropic": "litellm_anthropic",
    "Anthropic Messages -> OpenAI": "litellm",
    "Responses -> OpenAI": "litellm",
    "Ollama /api/chat -> Ollama": None,
    "text completions -> OpenAI": None,  # it serves /v1/completions; not set up here
    "Ollama /api/generate -> Ollama": None,
}


NOT_SERVED = "\u2014"  # LiteLLM's cell on a path it does not serve inbound, or not measured


def path_rounds(
    targets: dict[str, tuple[str, int | None]],
    rounds: int,
    seconds: float,
    litellm: dict[str, dict[str, str | None]] | None = None,
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Each inbound path, whole and streamed (the upstream's default stream, 16 chunks), against
    the floor relaying that path's own bytes to the same fake upstream: concurrency 32, in rounds,
    the floor, pirouter and LiteLLM taking turns within each (who goes first rotates). Per path
    and mode, each side's requests per second and CPU per request in every round. `litellm`:
    per path and mode, None where LiteLLM takes its turns, else why not (kept as its "error");
    without it, no LiteLLM side."""
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for label, _, _ in PATHS:
        out[label] = {}
        for mode, _ in MODES:
            out[label][mode] = {
                side: {"rounds": [], "cpu_ms_rounds": [], "errors": 0}
                for side in ("floor", "pirouter")
            }
            if litellm is not None:
                why = litellm[label][mode]
                kept: dict[str, Any] = {"rounds": [], "cpu_ms_rounds": [], "errors": 0}
                out[label][mode]["litellm"] = kept if why is None else {"error": why}
    for n in range(rounds):
        for label, route, daemon in PATHS:
            rival = LITELLM[label]
            for mode, stream in MODES:
                sides = [("floor", "floor"), ("pirouter", daemon)]
                if rival and "rounds" in out[label][mode].get("litellm", {}):
                    sides.append(("litellm", rival))
                for side, key in sides[n % len(sides) :] + sides[: n % len(sides)]:
                    url, pid = targets[key]
                    assert pid is not None
                    tree = side == "litellm"
                    before = tree_cpu_seconds(pid) if tree else cpu_seconds(pid)
                    got = loadgen("path", url, route, stream, 32, seconds)
                    if side == "pirouter":
                        ledger_drained(url)  # the rows of this turn are written on its CPU
                    spent = (settled_cpu_seconds(pid) if tree else cpu_seconds(pid)) - before
                    kept = out[label][mode][side]
                    kept["rounds"].append(got["rps"])
                    kept["cpu_ms_rounds"].append(1000 * spent / max(1, got["requests"]))
                    kept["errors"] += got["errors"]
    return out


LITELLM_COLUMNS = ("LiteLLM CPU ms", "vs pirouter", "vs floor", "LiteLLM req/s", "vs floor")


CELL = 60  # a LiteLLM error longer than this is cut in its row and given whole below the table


def paths_table(paths: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> str:
    """One row per inbound path and mode: medians of each side, and the ratios to the floor
    taken round by round (`paired`); LiteLLM's CPU per request also against pirouter's (within
    each round too), or why it has no figures there."""
    head = [
        "path",
        "mode",
        "floor CPU ms",
        "pirouter",
        "CPU ratio",
        "floor req/s",
        "pirouter",
        "tput ratio",
    ]
    rival = any("litellm" in sides for modes in paths.values() for sides in modes.values())
    rows = [head + list(LITELLM_COLUMNS) if rival else head]
    notes: list[str] = []
    for label, modes in paths.items():
        for mode, sides in modes.items():
            f, p = sides["floor"], sides["pirouter"]
            if not f["rounds"]:
                continue
            row = [
                label,
                mode,
                f"{statistics.median(f['cpu_ms_rounds']):.3f}",
                f"{statistics.median(p['cpu_ms_rounds']):.3f}",
                f"{paired(p['cpu_ms_rounds'], f['cpu_ms_rounds']):.2f}x",
                f"{statistics.median(f['rounds']):.0f}",
                f"{statistics.median(p['rounds']):.0f}",
                f"{paired(p['rounds'], f['rounds']):.2f}x",
            ]
            lite = sides.get("litellm")
            if lite is not None and lite.get("rounds"):
                row += [
                    f"{statistics.median(lite['cpu_ms_rounds']):.3f}",
                    f"{paired(lite['cpu_ms_rounds'], p['cpu_ms_rounds']):.2f}x",
                    f"{paired(lite['cpu_ms_rounds'], f['cpu_ms_rounds']):.2f}x",
                    f"{statistics.median(lite['rounds']):.0f}",
                    f"{paired(lite['rounds'], f['rounds']):.2f}x",
                ]
            elif lite is not None:  # one cell across LiteLLM's columns
                why = str(lite.get("error") or "no rounds")
                if len(why) > CELL:
                    if why not in notes:
                        notes.append(why)
                    why = why[: CELL - 3] + "..."
                row.append(why)
            rows.append(row)

    def across(row: list[str]) -> int:
        """The index of the row's cell across LiteLLM's columns (an error), else -1."""
        return len(row) - 1 if len(row) != len(rows[0]) else -1

    widths = [
        max(len(r[i]) for r in rows if i < len(r) and i != across(r)) for i in range(len(rows[0]))
    ]

    def line(row: list[str]) -> str:
        last = across(row)
        return "  ".join(
            c.ljust(w) if i < 2 or i == last else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ).rstrip()

    lines = [line(row) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    if rival:
        lines.append(
            "LiteLLM: its CPU per request (its process tree) vs pirouter's and vs the floor's, "
            f"its throughput vs the floor's, each ratio within a round; {NOT_SERVED}: not served "
            "(Ollama's paths) or not measured (text completions)"
        )
    lines += [f"LiteLLM: {why}" for why in notes]
    lines.append("targets: CPU per request <= 1.25x the floor's, throughput >= 0.85x (issue #39)")
    return "\n".join(lines)


def path_daemons(
    stack: ExitStack, tmp: Path, upstream: str, targets: dict[str, tuple[str, int | None]]
) -> None:
    """The daemons whose upstream speaks Anthropic's and Ollama's protocols (ledger on)."""
    for kind in ("anthropic", "ollama"):
        port = free_port()
        config = pirouter_config(tmp, upstream, True, kind=kind)
        cmd = [PY, "-m", "pirouter_py", "--config", str(config), "run", "--port", str(port)]
        daemon = stack.enter_context(process(cmd, f"http://127.0.0.1:{port}/v1/models"))
        targets[f"pirouter_{kind}"] = (f"http://127.0.0.1:{port}", daemon.pid)


def litellm_side(
    stack: ExitStack, tmp: Path, upstream: str, targets: dict[str, tuple[str, int | None]]
) -> tuple[dict[str, dict[str, str | None]], dict[str, Any]]:
    """LiteLLM's proxies, one calling the fake upstream as an OpenAI provider and one as an
    Anthropic provider, started on `stack` and added to `targets`; each path they serve checked
    whole and streamed, then warmed up for a second. Returns (per path and mode: None where
    LiteLLM takes its turns, else why not; what to record: its version and settings, the
    upstream paths it called on each)."""
    kinds = {"litellm": "openai", "litellm_anthropic": "anthropic"}
    up, info = litellm_proxy.start(
        stack, tmp, upstream, {kind: free_port() for kind in kinds.values()}
    )
    info["rss_idle_mib"] = {}
    for key, kind in kinds.items():
        if kind in up:
            targets[key] = up[kind]
            info["rss_idle_mib"][key] = sum(map(rss_mib, tree_pids(up[kind][1])))
    verdicts: dict[str, dict[str, str | None]] = {}
    info["upstream_calls"] = {}
    for label, route, _ in PATHS:
        rival = LITELLM[label]
        verdicts[label] = {}
        for mode, stream in MODES:
            why: str | None = NOT_SERVED
            if rival is not None and rival not in targets:
                why = info["failed"][kinds[rival]]
            elif rival is not None:
                url = targets[rival][0]
                why, called = litellm_proxy.check(url, route, stream == "1", upstream)
                info["upstream_calls"].setdefault(label, {})[mode] = called
                if why is None:  # its first requests on a path cost it ~1.5x (lazy imports)
                    loadgen("path", url, route, stream, 32, 1)
            verdicts[label][mode] = why
    return verdicts, info


def paths_only(quick: bool, litellm: bool) -> None:
    """`run.py --paths`: the fake upstream, the floor, the three daemons and (`litellm`) LiteLLM's
    two proxies, the per-path rows only (a few minutes), printed and written to bench/results/ as
    the full run is."""
    tmp = Path(tempfile.mkdtemp(prefix="pirouter-bench-"))
    up_port, floor_port, port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    with ExitStack() as stack:
        floor = upstream_and_floor(stack, up_port, floor_port)
        config = pirouter_config(tmp, upstream, True)
        cmd = [PY, "-m", "pirouter_py", "--config", str(config), "run", "--port", str(port)]
        daemon = stack.enter_context(process(cmd, f"http://127.0.0.1:{port}/v1/models"))
        targets: dict[str, tuple[str, int | None]] = {
            "floor": (f"http://127.0.0.1:{floor_port}", floor.pid),
            "pirouter": (f"http://127.0.0.1:{port}", daemon.pid),
        }
        path_daemons(stack, tmp, upstream, targets)
        verdicts, info = litellm_side(stack, tmp, upstream, targets) if litellm else (None, None)
        paths = path_rounds(targets, 2 if quick else 5, 1 if quick else 2, verdicts)
    text = paths_table(paths)
    print(text)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"paths-{time.strftime('%Y%m%d-%H%M%S')}.json"
    when = time.strftime("%Y-%m-%dT%H:%M:%S")
    path.write_text(json.dumps({"when": when, "quick": quick, "paths": paths, "litellm": info}))
    print(f"\nfull results: {path}")
