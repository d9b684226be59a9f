"""The load generator, in a process of its own: `python bench/loadgen.py MODE URL [ARGS...]`.

Modes (each prints one JSON object):
  latency URL N WARMUP        N sequential requests after WARMUP: per-request milliseconds
  throughput URL C SECONDS    C concurrent clients for SECONDS: requests, errors, latencies
  throughput_responses ...    the same through the Responses API (POST /v1/responses)
  path URL ROUTE STREAM C SECONDS
                              the same on one inbound path (ROUTE: one of ROUTES' names), whole
                              (STREAM 0) or streamed (1: the upstream's default stream)
  ttft URL N                  N sequential streams: milliseconds to the first body bytes
  streams URL N CHUNKS PACE   N concurrent streams of CHUNKS chunks PACE ms apart: the largest
                              gap between two chunks of each stream
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from typing import Any

import aiohttp

BODY = {"model": "auto", "messages": [{"role": "user", "content": "Say something short."}]}
RESPONSES_BODY = {"model": "auto", "input": "Say something short."}
# Each inbound path's request: (its URL path, its body whole; streamed adds "stream": true)
ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", BODY),
    "messages": (
        "/v1/messages",
        {"model": "auto", "max_tokens": 256, "messages": BODY["messages"]},
    ),
    "responses": ("/v1/responses", RESPONSES_BODY),
    "ollama": ("/api/chat", {**BODY, "stream": False}),  # Ollama streams unless told not to
    # an editor's completion: the code before the cursor and after it
    "completions": (
        "/v1/completions",
        {"model": "auto", "prompt": "def add(a, b):\n    ", "suffix": "\n", "max_tokens": 64},
    ),
    "generate": (
        "/api/generate",
        {"model": "auto", "prompt": "def add(a, b):\n    ", "suffix": "\n", "stream": False},
    ),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "mean": sum(values) / len(values) if values else float("nan"),
    }


async def latency(url: str, n: int, warmup: int) -> dict[str, Any]:
    data = json.dumps(BODY).encode()
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession() as session:
        times = []
        for i in range(warmup + n):
            start = time.perf_counter()
            async with session.post(url, data=data, headers=headers) as response:
                await response.read()
                assert response.status == 200, response.status
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return {**summary(times), "samples": times}


async def throughput(
    url: str, concurrency: int, seconds: float, body: dict[str, Any] = BODY
) -> dict[str, Any]:
    data = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    done, errors, times = 0, 0, []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    async with session.post(url, data=data, headers=headers) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    done += 1
                    times.append((time.perf_counter() - start) * 1000)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {
        "requests": done,
        "errors": errors,
        "seconds": elapsed,
        "rps": done / elapsed,
        **{f"latency_{k}": v for k, v in summary(times).items()},
    }


async def ttft(url: str, n: int) -> dict[str, Any]:
    data = json.dumps({**BODY, "stream": True, "bench": {"chunks": 8}}).encode()
    headers = {"content-type": "application/json"}
    times = []
    async with aiohttp.ClientSession() as session:
        for i in range(n + 20):
            start = time.perf_counter()
            async with session.post(url, data=data, headers=headers) as response:
                await response.content.readany()
                first = (time.perf_counter() - start) * 1000
                await response.read()
            if i >= 20:
                times.append(first)
    return {**summary(times), "samples": times}


async def streams(url: str, n: int, chunks: int, pace_ms: float) -> dict[str, Any]:
    data = json.dumps(
        {**BODY, "stream": True, "bench": {"chunks": chunks, "pace_ms": pace_ms}}
    ).encode()
    headers = {"content-type": "application/json"}
    gaps: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> None:
            nonlocal errors
            try:
                async with session.post(url, data=data, headers=headers) as response:
                    last, worst = None, 0.0
                    while True:
                        piece = await response.content.readany()
                        now = time.perf_counter()
                        if not piece:
                            break
                        if last is not None:
                            worst = max(worst, (now - last) * 1000)
                        last = now
                    gaps.append(worst)
            except aiohttp.ClientError:
                errors += 1

        await asyncio.gather(*(one() for _ in range(n)))
    return {
        "streams": n,
        "errors": errors,
        "stalled": sum(g > 100 for g in gaps),
        "max_gap_ms": max(gaps) if gaps else None,
        "p99_gap_ms": percentile(gaps, 0.99),
    }


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    mode, url, *args = sys.argv[1:]
    target = url + "/v1/chat/completions"
    runners = {
        "latency": lambda: latency(target, int(args[0]), int(args[1])),
        "throughput": lambda: throughput(target, int(args[0]), float(args[1])),
        "throughput_responses": lambda: throughput(
            url + "/v1/responses", int(args[0]), float(args[1]), RESPONSES_BODY
        ),
        "path": lambda: throughput(
            url + ROUTES[args[0]][0],
            int(args[2]),
            float(args[3]),
            {**ROUTES[args[0]][1], "stream": args[1] == "1"},
        ),
        "ttft": lambda: ttft(target, int(args[0])),
        "streams": lambda: streams(target, int(args[0]), int(args[1]), float(args[2])),
    }
    print(json.dumps(asyncio.run(runners[mode]())))


if __name__ == "__main__":
    main()
