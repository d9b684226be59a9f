"""The benchmark harness: `python bench/run.py [--quick]`: a table, and JSON in bench/results/.

Every scenario runs in this one run against three targets, each in its own process beside the
fake upstream and the load generator: the upstream called directly, the minimal aiohttp
pass-through (`bench/passthrough.py`, the floor for a Python proxy here), and `pirouter run` with
its ledger on (and off, for the ledger's own cost). Results are absolute figures plus ratios
against the floor. Latency, time to first token and throughput run in rounds with the targets
taking turns, so a change in the machine's speed mid-run (this kind of VM has them) hits every
target alike; the ratios of throughput and CPU per request are medians of the ratios within each
round. Every process is started and stopped here; nothing is left running.

Each inbound path (chat completions, Anthropic Messages to an Anthropic and to an OpenAI
upstream, Responses, Ollama's /api/chat, the text completions /v1/completions and /api/generate),
whole and streamed, has a row of its own against the
floor relaying that path's own bytes to the same fake upstream (`PATHS`, `path_rounds`): daemons
whose provider speaks Anthropic's and Ollama's protocols join the one that speaks OpenAI's.
`run.py --paths` runs only those rows (about four minutes, six and a half with LiteLLM's turns).

LiteLLM's proxy takes its turn in the same rounds on the paths it serves (`bench/litellm_proxy.py`:
installed on first use at a pinned version into ~/.cache/pirouter-bench/, nothing sent beyond
loopback, each path checked for a correct answer before it is timed): its CPU per request (its
whole process tree) against pirouter's and the floor's, its throughput against the floor's. It
sends Messages and Responses for an OpenAI-type model to the upstream's own /v1/responses (the
JSON's `litellm.upstream_calls` says what it called on each path); it does not serve Ollama's
/api/chat inbound. `--no-litellm` leaves it out; when it cannot be
installed its columns say why and the rest runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from common import (  # type: ignore[import-not-found]
    HERE,
    PY,
    compile_package,
    cpu_seconds,
    free_port,
    ledger_drained,
    loadgen,
    paired,
    pirouter_config,
    process,
    round_ratios,
    rss_mib,
    upstream_and_floor,
    wall_ms,
)
from loadgen import summary
from paths import (  # type: ignore[import-not-found]
    litellm_side,
    path_daemons,
    path_rounds,
    paths_only,
    paths_table,
)


def browser_available() -> bool:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found is not None and importlib.util.find_spec("playwright") is not None


def pg_available() -> bool:
    """PostgreSQL's server binaries and the psycopg driver are both here."""
    from tests.pgserver import binaries

    return binaries() is not None and importlib.util.find_spec("psycopg") is not None


@contextmanager
def redis_server(program: str, port: int, folder: Path) -> Iterator[None]:
    """A Redis on a loopback port, no persistence, stopped at the end."""
    args = [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield
    finally:
        proc.kill()
        proc.wait(10)


@contextmanager
def watching(url: str) -> Iterator[list[Any]]:
    """A dashboard watching the live feed for as long as the block runs: the page itself in a
    headless Chromium (`browser_watch.py`) when Chromium and Playwright are here, else a client
    reading `/ui/api/live` as the page does. Yields [requests the watcher was pushed, which]."""
    if browser_available():
        proc = subprocess.Popen(
            [PY, str(HERE / "browser_watch.py"), url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise RuntimeError("the browser watching the dashboard did not start")
        seen: list[Any] = [0, "chromium"]
        try:
            yield seen
        finally:
            try:
                out, _ = proc.communicate("stop\n", timeout=60)
                seen[0] = json.loads(out.strip().splitlines()[-1])["seen"]
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                proc.kill()
                proc.wait(5)
        return
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    conn.request("GET", "/ui/api/live")
    response = conn.getresponse()
    counted: list[Any] = [0, "an HTTP client reading the feed"]

    def read() -> None:
        try:
            for line in response:
                if line.startswith(b"data: "):
                    counted[0] += 1
        except (OSError, ValueError, AttributeError):  # closed at the end of the block
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield counted
    finally:
        conn.close()


def sampled_rounds(
    mode: str, targets: dict[str, tuple[str, int | None]], rounds: int, *args: object
) -> dict[str, dict[str, Any]]:
    """A sequential scenario (latency, TTFT) in rounds, the targets taking turns, so that drift
    in the machine's speed hits all of them alike; percentiles over every round's samples."""
    samples: dict[str, list[float]] = {key: [] for key in targets}
    for _ in range(rounds):
        for key, (url, _) in targets.items():
            samples[key] += loadgen(mode, url, *args)["samples"]
    return {key: summary(values) for key, values in samples.items()}


def throughput_rounds(
    targets: dict[str, tuple[str, int | None]], rounds: int, seconds: float
) -> dict[str, dict[str, Any]]:
    """Concurrency-32 throughput, the targets taking turns round by round (so drift in the
    machine's speed hits all of them alike); medians, and CPU per request over all rounds and
    in each round (for ratios taken round by round, see `paired`)."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in targets}
    cpu: dict[str, list[float]] = {k: [] for k in targets}
    rss = dict.fromkeys(targets, 0.0)
    for _ in range(rounds):
        for key, (url, pid) in targets.items():
            before = cpu_seconds(pid) if pid else 0.0
            runs[key].append(loadgen("throughput", url, 32, seconds))
            if key.startswith("pirouter"):
                ledger_drained(url)  # the rows of this turn are written on this turn's CPU
            cpu[key].append(cpu_seconds(pid) - before if pid else 0.0)
            if pid:
                rss[key] = max(rss[key], rss_mib(pid))
    out = {}
    for key, results in runs.items():
        requests = sum(r["requests"] for r in results)
        out[key] = {
            "rps": statistics.median(r["rps"] for r in results),
            "rounds": [r["rps"] for r in results],
            "requests": requests,
            "errors": sum(r["errors"] for r in results),
            "latency_p50": statistics.median(r["latency_p50"] for r in results),
            "cpu_ms_per_request": 1000 * sum(cpu[key]) / max(1, requests),
            "cpu_ms_rounds": [
                1000 * c / max(1, r["requests"]) for c, r in zip(cpu[key], results, strict=True)
            ],
            "rss_load_mib": rss[key],
        }
    return out


def table(results: dict[str, Any]) -> str:
    direct, floor, on, off = (
        results["targets"][k] for k in ("direct", "floor", "pirouter", "pirouter_no_ledger")
    )

    def added(target: dict[str, Any], key: str, q: str) -> float:
        return float(target[key][q] - direct[key][q])

    rows = [("scenario", "floor", "pirouter", "ratio", "target")]

    def row(
        label: str, f: float, p: float, target: str, digits: int = 3, ratio: float | None = None
    ) -> None:
        if ratio is None:
            ratio = p / f if f else float("nan")
        rows.append((label, f"{f:.{digits}f}", f"{p:.{digits}f}", f"{ratio:.2f}x", target))

    row(
        "added latency p50 ms (c=1)",
        added(floor, "latency", "p50"),
        added(on, "latency", "p50"),
        "<= 0.5 ms",
    )
    row(
        "added latency p99 ms (c=1)",
        added(floor, "latency", "p99"),
        added(on, "latency", "p99"),
        "<= 1.5 ms",
    )

    def by_round(target: dict[str, Any], key: str) -> float:
        return paired(target["throughput"][key], floor["throughput"][key])

    tput = floor["throughput"]["rps"]
    row(
        "throughput req/s (c=32)",
        tput,
        on["throughput"]["rps"],
        ">= 0.8x",
        0,
        by_round(on, "rounds"),
    )
    row("  same, ledger off", tput, off["throughput"]["rps"], "", 0, by_round(off, "rounds"))
    responses = results["targets"].get("pirouter_responses")  # runs before it have none
    if responses is not None:
        rps = responses["throughput"]["rps"]
        row("  same, /v1/responses", tput, rps, "", 0, by_round(responses, "rounds"))
    every = results["targets"].get("pirouter_every_line")  # runs before it have none
    if every is not None:
        rps = every["throughput"]["rps"]
        row("  same, a log line each", tput, rps, "", 0, by_round(every, "rounds"))
    seen = results["targets"].get("pirouter_watched")
    if seen is not None:
        rps = seen["throughput"]["rps"]
        row("  same, a dashboard watching", tput, rps, "", 0, by_round(seen, "rounds"))
    shared = results["targets"].get("pirouter_shared")  # only where redis-server is installed
    if shared is not None:
        rps = shared["throughput"]["rps"]
        row("  same, state shared via Redis", tput, rps, "", 0, by_round(shared, "rounds"))
    on_pg = results["targets"].get("pirouter_pg")  # only where PostgreSQL is installed
    if on_pg is not None:
        rps = on_pg["throughput"]["rps"]
        row("  same, ledger in PostgreSQL", tput, rps, "", 0, by_round(on_pg, "rounds"))
    cpu = floor["cpu_ms_per_request"]
    row(
        "CPU ms per request",
        cpu,
        on["cpu_ms_per_request"],
        "<= 1.3x",
        3,
        by_round(on, "cpu_ms_rounds"),
    )
    row("  same, ledger off", cpu, off["cpu_ms_per_request"], "", 3, by_round(off, "cpu_ms_rounds"))
    if responses is not None:
        used = responses["cpu_ms_per_request"]
        row("  same, /v1/responses", cpu, used, "", 3, by_round(responses, "cpu_ms_rounds"))
    if every is not None:
        line = every["cpu_ms_per_request"]
        row("  same, a log line each", cpu, line, "", 3, by_round(every, "cpu_ms_rounds"))
    smart = results["targets"].get("pirouter_learned")  # runs before it have none
    if smart is not None:
        used = smart["cpu_ms_per_request"]
        row("  same, learned router on", cpu, used, "", 3, by_round(smart, "cpu_ms_rounds"))
    watched = results["targets"].get("pirouter_watched")  # runs before it have none
    if watched is not None:
        used = watched["cpu_ms_per_request"]
        row("  same, a dashboard watching", cpu, used, "", 3, by_round(watched, "cpu_ms_rounds"))
    if shared is not None:
        used = shared["cpu_ms_per_request"]
        row("  same, state shared via Redis", cpu, used, "", 3, by_round(shared, "cpu_ms_rounds"))
    if on_pg is not None:
        used = on_pg["cpu_ms_per_request"]
        row("  same, ledger in PostgreSQL", cpu, used, "", 3, by_round(on_pg, "cpu_ms_rounds"))
    row("added TTFT p50 ms", added(floor, "ttft", "p50"), added(on, "ttft", "p50"), "")
    row("added TTFT p99 ms", added(floor, "ttft", "p99"), added(on, "ttft", "p99"), "<= 1 ms")
    rows.append(
        (
            "stalled streams (>100 ms gap)",
            f"{floor['streams']['stalled']}/{floor['streams']['streams']}",
            f"{on['streams']['stalled']}/{on['streams']['streams']}",
            "",
            "0 of 512",
        )
    )
    for key, label, target in (
        ("rss_idle_mib", "RSS idle MiB", "<= 50"),
        ("rss_load_mib", "RSS under load MiB", "<= 100"),
        ("rss_after_mib", "RSS after MiB", "no growth"),
    ):
        row(label, floor[key], on[key], target, 1)
    if smart is not None:  # against pirouter with it off
        row(
            "RSS idle MiB, learned router on",
            on["rss_idle_mib"],
            smart["rss_idle_mib"],
            "+<= 10",
            1,
        )
    s = results["startup"]  # against the stack floor (bench/floor_cli.py)
    row("RSS idle MiB, stack floor", s["rss_idle_floor_mib"], on["rss_idle_mib"], "<= 50", 1)
    row("pirouter --help ms", s["help_floor_ms"], s["help_ms"], "<= 150", 0)
    row("pirouter route --prompt hi ms", s["route_floor_ms"], s["route_ms"], "<= 150", 0)
    row("daemon start to first 200 ms", s["first_200_floor_ms"], s["first_200_ms"], "<= 500", 0)
    for size, timing in results.get("decide", {}).items():  # runs before it have none
        label = f"decide p50 / p99 us, {size} prompt"
        rows.append((label, "", f"{timing['p50_us']:.0f} / {timing['p99_us']:.0f}", "", "<= 200"))
    window = results.get("dashboard_window")  # runs before it have none
    if window:
        label = f"dashboard 30d window, {window['rows']:,} rows: s first / again"
        got = f"{window['first_s']:.2f} / {window['median_s']:.2f}"
        rows.append((label, "", got, "", "<= 1"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    ledger = paired(off["throughput"]["rounds"], on["throughput"]["rounds"]) - 1
    bare = (
        paired(
            results["targets"]["pirouter_no_metrics"]["throughput"]["rounds"],
            on["throughput"]["rounds"],
        )
        - 1
    )
    lines.append(f"\nledger on vs off: {100 * ledger:+.1f}% throughput without it")
    if "live_events_seen" in results:
        who = results.get("live_watcher", "an HTTP client reading the feed")
        lines.append(f"dashboard live feed: {results['live_events_seen']} requests pushed to {who}")
    lines.append(f"metrics on vs off: {100 * bare:+.1f}% throughput without them")
    for label, key in (("CPU per request", "cpu_ms_rounds"), ("throughput", "rounds")):
        ratios = round_ratios(on["throughput"][key], floor["throughput"][key])
        if ratios:
            lines.append(
                f"{label} vs floor, round by round: {min(ratios):.2f}x to {max(ratios):.2f}x "
                f"over {len(ratios)} rounds (the table gives the median)"
            )
    lines.append(
        f"direct to upstream: latency p50 {direct['latency']['p50']:.3f} ms, "
        f"{direct['throughput']['rps']:.0f} req/s at c=32"
    )
    return "\n".join(lines)


def first_200_ms(daemon: Callable[[int], list[str]]) -> float:
    """From starting `daemon(port)` on a free port to its first answered request."""
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).encode()
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(daemon(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    data=body,
                    headers={"content-type": "application/json"},
                )
                urllib.request.urlopen(request, timeout=2).close()
                return (time.perf_counter() - start) * 1000
            except OSError:
                if time.perf_counter() - start > 20:
                    raise
                time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def in_turns(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Every measure `rounds` times, taking turns (drift in the machine's speed hits all alike);
    the medians."""
    values: dict[str, list[float]] = {key: [] for key in measures}
    for _ in range(rounds):
        for key, measure in measures.items():
            values[key].append(measure())
    return {key: statistics.median(v) for key, v in values.items()}


def startup(tmp: Path, upstream: str) -> dict[str, float]:
    """Start-up of pirouter and of the stack floor (`floor_cli.py`: the same libraries doing the
    least a command of its kind can), taking turns; medians."""
    config = pirouter_config(tmp, upstream, False)
    pirouter = [str(Path(PY).parent / "pirouter"), "--config", str(config)]
    floor = [PY, str(HERE / "floor_cli.py")]
    commands = {
        "help_ms": [*pirouter, "--help"],
        "help_floor_ms": [*floor, "--help"],
        "route_ms": [*pirouter, "route", "--prompt", "hi"],
        "route_floor_ms": [*floor, "route", "--config", str(config), "--prompt", "hi"],
    }
    daemons = {
        "first_200_ms": lambda port: [*pirouter, "run", "--port", str(port), "--no-ledger"],
        "first_200_floor_ms": lambda port: [
            *floor,
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--upstream",
            upstream,
        ],
    }
    out = in_turns(10, {key: partial(wall_ms, command) for key, command in commands.items()})
    out |= in_turns(5, {key: partial(first_200_ms, daemon) for key, daemon in daemons.items()})
    port = free_port()
    with process(daemons["first_200_floor_ms"](port), f"http://127.0.0.1:{port}/x") as idle:
        out["rss_idle_floor_mib"] = rss_mib(idle.pid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    parser.add_argument(
        "--paths", action="store_true", help="only the per-path rows (each inbound path, its floor)"
    )
    parser.add_argument(
        "--no-litellm",
        dest="litellm",
        action="store_false",
        help="leave LiteLLM's proxy out of the per-path rows (else installed on first use)",
    )
    args = parser.parse_args()
    compile_package()
    if args.paths:
        paths_only(args.quick, args.litellm)
        return
    tmp = Path(tempfile.mkdtemp(prefix="pirouter-bench-"))
    up_port, floor_port, on_port, off_port = (free_port() for _ in range(4))
    upstream = f"http://127.0.0.1:{up_port}"
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "quick": args.quick,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "targets": {},
    }
    ping = "/v1/models"
    with ExitStack() as stack:
        floor = upstream_and_floor(stack, up_port, floor_port)
        targets: dict[str, tuple[str, int | None]] = {
            "direct": (upstream, None),
            "floor": (f"http://127.0.0.1:{floor_port}", floor.pid),
        }
        for key, port, ledger, metrics, every_line, learned in (
            ("pirouter", on_port, True, True, False, False),
            ("pirouter_no_ledger", off_port, False, True, False, False),
            ("pirouter_no_metrics", free_port(), True, False, False, False),
            ("pirouter_every_line", free_port(), True, True, True, False),
            ("pirouter_learned", free_port(), True, True, False, True),
            ("pirouter_watched", free_port(), True, True, False, False),
        ):
            config = pirouter_config(tmp, upstream, ledger, metrics, every_line, learned)
            if key == "pirouter_watched":  # its own ledger file, as every daemon here has
                watched = config.with_name("watched.toml")
                watched.write_text(config.read_text().replace('.db"', '-watched.db"'))
                config = watched
            cmd = [PY, "-m", "pirouter_py", "--config", str(config), "run", "--port", str(port)]
            daemon = stack.enter_context(
                process(cmd + ([] if ledger else ["--no-ledger"]), f"http://127.0.0.1:{port}{ping}")
            )
            targets[key] = (f"http://127.0.0.1:{port}", daemon.pid)
        redis = shutil.which("redis-server")
        if redis is not None:  # one more daemon, its budgets, limits and pins shared via Redis
            redis_port, port = free_port(), free_port()
            stack.enter_context(redis_server(redis, redis_port, tmp))
            config = pirouter_config(tmp, upstream, True)
            shared = config.with_name("shared.toml")
            shared.write_text(
                config.read_text().replace('.db"', '-shared.db"')
                + f'\n[state]\nurl = "redis://127.0.0.1:{redis_port}/0"\n'
            )
            cmd = [PY, "-m", "pirouter_py", "--config", str(shared), "run", "--port", str(port)]
            daemon = stack.enter_context(process(cmd, f"http://127.0.0.1:{port}{ping}"))
            targets["pirouter_shared"] = (f"http://127.0.0.1:{port}", daemon.pid)
        if pg_available():  # one more daemon, its ledger in a local PostgreSQL
            from tests.pgserver import PostgresServer

            pg = PostgresServer().start()
            stack.callback(pg.stop)
            port = free_port()
            config = pirouter_config(tmp, upstream, True)
            on_pg = config.with_name("pg.toml")
            on_pg.write_text(
                config.read_text().replace('.db"', '-pg.db"\nurl = "' + pg.fresh() + '"', 1)
            )
            cmd = [PY, "-m", "pirouter_py", "--config", str(on_pg), "run", "--port", str(port)]
            daemon = stack.enter_context(process(cmd, f"http://127.0.0.1:{port}{ping}"))
            targets["pirouter_pg"] = (f"http://127.0.0.1:{port}", daemon.pid)
        # the per-path rows' daemons (their own targets: the main rounds do not run them)
        on_paths = {key: targets[key] for key in ("floor", "pirouter")}
        path_daemons(stack, tmp, upstream, on_paths)
        measured = {key: targets[key] for key in ("direct", "floor", "pirouter")}
        for key, (_, pid) in [*measured.items(), ("pirouter_learned", targets["pirouter_learned"])]:
            results["targets"][key] = {"name": key}
            if pid is not None:
                results["targets"][key]["rss_idle_mib"] = rss_mib(pid)
        turns = 2 if args.quick else 4  # 2,000 requests and 1,000 streams per target in all
        scale = 4 if args.quick else 1
        for mode, per_turn in (("latency", (500 // scale, 50)), ("ttft", (250 // scale,))):
            for key, result in sampled_rounds(mode, measured, turns, *per_turn).items():
                results["targets"][key][mode] = result
        # Throughput before the 512-stream wave: after one, the floor's CPU per request rose by
        # ~8 % (258 against 238 µs, same run) and pirouter's did not, which flattered the ratio.
        with watching(targets["pirouter_watched"][0]) as live:
            rounds = throughput_rounds(targets, 2 if args.quick else 10, 3 if args.quick else 2)
        results["live_events_seen"], results["live_watcher"] = live
        # Each inbound path against its own floor, also before the 512-stream wave; fewer and
        # shorter rounds than the main row's (twenty runs a round: the run's time stays bounded)
        # LiteLLM's proxies run for these rounds only (idle beside the others, they'd take memory)
        with ExitStack() as rivals:
            verdicts, results["litellm"] = (
                litellm_side(rivals, tmp, upstream, on_paths) if args.litellm else (None, None)
            )
            results["paths"] = path_rounds(
                on_paths, 2 if args.quick else 5, 1 if args.quick else 2, verdicts
            )
        for key, result in rounds.items():
            target = results["targets"].setdefault(key, {"name": key})
            target["throughput"] = result
            target["cpu_ms_per_request"] = result["cpu_ms_per_request"]
            target["rss_load_mib"] = result["rss_load_mib"]
        for key, (url, pid) in measured.items():
            streams = loadgen("streams", url, 128 if args.quick else 512, 64, 20)
            results["targets"][key]["streams"] = streams
            if pid is not None:  # the wave holds more memory than concurrency 32 does
                target = results["targets"][key]
                target["rss_load_mib"] = max(target["rss_load_mib"], rss_mib(pid))
        for key in ("floor", "pirouter"):  # memory after the whole run
            results["targets"][key]["rss_after_mib"] = rss_mib(targets[key][1] or 0)
        results["startup"] = startup(tmp, upstream)
    done = subprocess.run(
        [PY, str(HERE / "decide.py"), str(HERE.parent / "config.example.toml")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    results["decide"] = json.loads(done.stdout)
    done = subprocess.run(
        [PY, str(HERE / "dashboard_window.py"), "100000" if args.quick else "1000000"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=HERE,
    )
    results["dashboard_window"] = json.loads(done.stdout)
    text = table(results) + "\n\nper inbound path, against the floor relaying its bytes:\n"
    text += paths_table(results["paths"])
    print(text)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nfull results: {path}")


if __name__ == "__main__":
    main()
