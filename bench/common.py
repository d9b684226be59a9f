"""What every bench scenario shares: ports, processes started and stopped, CPU and memory read
from /proc, the load generator in a process of its own, the daemon's config, ratios taken round
by round. `run.py` (the main table) and `paths.py` (each inbound path) use them."""

from __future__ import annotations

import compileall
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from pirouter_py.routing import learned as learned_router

HERE = Path(__file__).resolve().parent


PY = sys.executable


TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error answer means it is listening
                return
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def process(args: list[str], ready_url: str, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    try:
        wait_ready(ready_url)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name: state, ppid, ... (utime is [11], stime
    [12], the waited-for children's [13] and [14])."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants, now (a proxy's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(proc_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU of `pid` and its descendants, with what its exited and waited-for children spent."""
    total = 0.0
    for each in tree_pids(pid):
        try:
            fields = proc_stat(each)
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / TICKS
    return total


def settled_cpu_seconds(pid: int, timeout: float = 5.0) -> float:
    """`tree_cpu_seconds` once the tree has gone idle (under a tick in 100 ms): what a proxy does
    after its answers (LiteLLM's logging of each request runs after it) is charged to the turn
    that caused it."""
    deadline = time.monotonic() + timeout
    last = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = tree_cpu_seconds(pid)
        if now - last < 1 / TICKS:
            return now
        last = now
    return last


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def loadgen(*args: object, timeout: float = 600) -> dict[str, Any]:
    out = subprocess.run(
        [PY, str(HERE / "loadgen.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def wall_ms(args: list[str]) -> float:
    """Wall time of one command, start to exit. Not `subprocess.run(timeout=...)`: with a timeout
    it polls for the exit with sleeps that grow to 50 ms, so every reading came out as 63.5 ms plus
    a multiple of 50 (114, 164, 214, 265...). A blocking wait sees the exit when it happens; a
    timer kills a command that hangs."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        code = proc.wait()
    finally:
        watchdog.cancel()
    elapsed = (time.perf_counter() - start) * 1000
    if code != 0:
        raise subprocess.CalledProcessError(code, args)
    return elapsed


def pirouter_config(
    tmp: Path,
    upstream: str,
    ledger: bool,
    metrics: bool = True,
    every_line: bool = False,
    learned: bool = False,
    kind: str = "openai",
) -> Path:
    """A config for one bench daemon, with a ledger file of its own (two daemons writing one
    file would wait for each other's write locks), at the default log level (info). Past 100
    routine requests a second (`log_requests_per_sec`, default) the rest of the second's are
    counted in one line; `every_line` writes one for each request, to show what that costs.
    `learned`: a second, cheaper model and the learned router on, with a model file for both
    (the cheaper one predicted good enough: every request reads features and scores). `kind`:
    the upstream's protocol (the provider's type: openai, anthropic or ollama);
    the model serves text completions too where that protocol has them (not Anthropic's)."""
    name = f"pirouter-{'ledger' if ledger else 'noledger'}-{metrics}-{every_line}-{learned}"
    if kind != "openai":
        name += f"-{kind}"
    config = tmp / f"{name}.toml"
    extra = ""
    if learned:
        extra = """
[models.small]
provider = "bench"
model_id = "bench-model"
supports_tools = true
quality = "basic"
[routing]
learned = true
"""
        zeros = learned_router.pack([0.0] * learned_router.BUCKETS)
        models = {
            alias: {"bias": 1.0, "weights": zeros, "labels": 100, "good": 70}
            for alias in ("bench", "small")
        }
        (tmp / learned_router.FILE_NAME).write_text(
            json.dumps(
                {
                    "version": learned_router.VERSION,
                    "buckets": learned_router.BUCKETS,
                    "trained_at": time.time(),
                    "labels": 100,
                    "models": models,
                }
            )
        )
    config.write_text(
        extra
        + f"""
[server]
log_level = "info"
log_requests_per_sec = {0 if every_line else 100}
metrics = {str(metrics).lower()}
[ledger]
path = "{tmp / (config.stem + ".db")}"
[providers.bench]
type = "{kind}"
base_url = "{upstream}"
api_key = "k"
[models.bench]
provider = "bench"
model_id = "bench-model"
supports_tools = true
supports_fim = {str(kind != "anthropic").lower()}
"""
    )
    return config


def ledger_drained(url: str, timeout: float = 10.0) -> None:
    """Wait until the daemon's ledger has written every row it holds (`/health` backlog 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            ledger = json.load(response).get("ledger")
        if not ledger or not ledger["backlog"]:
            return
        time.sleep(0.02)
    raise RuntimeError(f"{url}: the ledger still had rows to write after {timeout:g} s")


def round_ratios(target: list[float], floor: list[float]) -> list[float]:
    """target / floor, each ratio taken within one round (a round the floor missed is left out)."""
    return [t / f for t, f in zip(target, floor, strict=True) if f]


def paired(target: list[float], floor: list[float]) -> float:
    """The median over rounds of target / floor, each ratio taken within one round: the
    machine's speed drifts between rounds (this VM's floor moved 0.24-0.30 ms of CPU per
    request within an hour), and a ratio of totals lets one slow round weigh on one side."""
    ratios = round_ratios(target, floor)
    return statistics.median(ratios) if ratios else float("nan")


def upstream_and_floor(stack: ExitStack, up_port: int, floor_port: int) -> Any:
    """Start the fake upstream and the pass-through floor in front of it; the floor's process."""
    upstream = f"http://127.0.0.1:{up_port}"
    stack.enter_context(process([PY, str(HERE / "upstream.py"), str(up_port)], upstream + "/x"))
    return stack.enter_context(
        process(
            [PY, str(HERE / "passthrough.py"), str(floor_port), upstream],
            f"http://127.0.0.1:{floor_port}/x",
        )
    )


def compile_package() -> None:
    """Measure pirouter as installed: pip compiles every module to bytecode at install time. An
    editable checkout run with PYTHONDONTWRITEBYTECODE=1 (set on some VMs and CI images) would
    otherwise compile its ~40 modules from source at every start, ~100 ms no user pays."""
    spec = importlib.util.find_spec("pirouter_py")
    assert spec is not None and spec.submodule_search_locations
    for folder in [*spec.submodule_search_locations, str(HERE)]:  # bench/: the floors' modules
        compileall.compile_dir(folder, quiet=1)
