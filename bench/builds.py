"""`python bench/builds.py PATH MODE [--rounds N] [--seconds S] NAME=CHECKOUT[:noledger] ...`: two
or more builds of pirouter side by side on one inbound path, against the floor, in one run.

Each NAME is a daemon run from CHECKOUT's own `pirouter_py` (a folder holding the package: a git
worktree of another commit, or a copy with a change to try), its ledger on unless `:noledger`.
PATH is one of `paths.PATHS`' routes (chat, messages, responses, ollama, completions, generate;
`messages-openai` is Messages to an OpenAI upstream), MODE `whole` or `streamed`. The floor, the
builds and the fake upstream run as `bench/run.py --paths` runs them; they take turns round by
round (who goes first alternates), and each ratio is taken within a round (this VM's speed drifts
between rounds).
Prints, per build: CPU µs per request (and its kernel part), throughput, the medians of the
round ratios against the floor with their range, and RSS after the rounds.

What a change costs or saves is measured this way: the same machine, the same minute, turns."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

from common import (  # type: ignore[import-not-found]
    PY,
    TICKS,
    free_port,
    ledger_drained,
    loadgen,
    pirouter_config,
    proc_stat,
    process,
    rss_mib,
    upstream_and_floor,
)

ROUTES = {  # PATH: (loadgen's route, the upstream's protocol)
    "chat": ("chat", "openai"),
    "messages": ("messages", "anthropic"),
    "messages-openai": ("messages", "openai"),
    "responses": ("responses", "openai"),
    "ollama": ("ollama", "ollama"),
    "completions": ("completions", "openai"),
    "generate": ("generate", "ollama"),
}


def user_system(pid: int) -> tuple[float, float]:
    """A process's CPU seconds in user and in kernel mode."""
    fields = proc_stat(pid)
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", choices=sorted(ROUTES))
    parser.add_argument("mode", choices=("whole", "streamed"))
    parser.add_argument("builds", nargs="+", metavar="NAME=CHECKOUT[:noledger]")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    route, kind = ROUTES[args.path]
    stream = "1" if args.mode == "streamed" else "0"
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="pirouter-builds-") as tmp:
        up_port, floor_port = free_port(), free_port()
        floor = upstream_and_floor(stack, up_port, floor_port)
        upstream = f"http://127.0.0.1:{up_port}"
        targets = {"floor": (f"http://127.0.0.1:{floor_port}", floor.pid)}
        for spec in args.builds:
            name, _, where = spec.partition("=")
            checkout, _, option = where.partition(":")
            folder = Path(tmp) / name
            folder.mkdir()
            config = pirouter_config(folder, upstream, ledger=option != "noledger", kind=kind)
            port = free_port()
            cmd = [PY, "-m", "pirouter_py", "--config", str(config), "run", "--port", str(port)]
            if option == "noledger":
                cmd.append("--no-ledger")
            # run in the build's own folder: `-m` puts the working folder first on sys.path
            env = {**os.environ, "PYTHONPATH": str(Path(checkout).resolve())}
            ready = f"http://127.0.0.1:{port}/v1/models"
            daemon = stack.enter_context(process(cmd, ready, env=env, cwd=folder))
            targets[name] = (f"http://127.0.0.1:{port}", daemon.pid)
        for url, _ in targets.values():  # warm up: connections, caches
            loadgen("path", url, route, stream, 32, 0.5)
        cpu: dict[str, list[float]] = {name: [] for name in targets}
        kernel: dict[str, list[float]] = {name: [] for name in targets}
        rps: dict[str, list[float]] = {name: [] for name in targets}
        order = list(targets)
        for n in range(args.rounds):
            for name in order if n % 2 == 0 else order[::-1]:
                url, pid = targets[name]
                user0, sys0 = user_system(pid)
                got = loadgen("path", url, route, stream, 32, args.seconds)
                if name != "floor":
                    ledger_drained(url)  # the turn's rows are written on its CPU
                user1, sys1 = user_system(pid)
                count = max(1, got["requests"])
                cpu[name].append((user1 - user0 + sys1 - sys0) * 1e6 / count)
                kernel[name].append((sys1 - sys0) * 1e6 / count)
                rps[name].append(got["rps"])
                if got["errors"]:
                    print(f"{name}: {got['errors']} requests failed in round {n + 1}")
        for name, (_, pid) in targets.items():
            ratios = [a / b for a, b in zip(cpu[name], cpu["floor"], strict=True)]
            speeds = [a / b for a, b in zip(rps[name], rps["floor"], strict=True)]
            print(
                f"{name:12} CPU {statistics.median(cpu[name]):6.1f} µs "
                f"(kernel {statistics.median(kernel[name]):5.1f})  "
                f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]  "
                f"throughput {statistics.median(rps[name]):6.0f}/s "
                f"{statistics.median(speeds):.2f}x  RSS {rss_mib(pid):.1f} MiB"
            )


if __name__ == "__main__":
    main()
