"""Memory that comes back: `python bench/memory.py [--quick] [--settle SECONDS]`.

`pirouter run`'s resident memory (RSS, from /proc) before each scenario, right after it, and a
while after it (a minute by default), against a fake upstream on loopback:
- at-cap: four whole answers of 30 MiB (the answer cap is 32 MiB);
- long-stream: one 50 MB streamed answer, with `[ledger] store_prompts` on;
- hostile: passes of malformed bodies (seeded, random JSON of every shape, bodies that claim
  gzip and are not) over all 13 POST endpoints.
Figures, not assertions: the table says what each scenario left behind. Everything it starts, it
stops; every request has a timeout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import rss_mib  # noqa: E402
from tests.fakes import Daemon, FakeUpstream, Reply  # noqa: E402

CONFIG = """
[ledger]
path = "{ledger}"
store_prompts = true
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.m]
provider = "fake"
model_id = "m"
"""
POSTS = (
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/api/chat",
    "/v1/responses",
    "/v1/responses/compact",
    "/v1/feedback",
    "/v1/completions",
    "/api/generate",
    "/v1/embeddings",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
)
MIB = 1024 * 1024


def post(url: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request(
            "POST", path, body=body, headers={"content-type": "application/json"} | (headers or {})
        )
        response = conn.getresponse()
        while response.read(1 << 20):
            pass
        return response.status
    finally:
        conn.close()


def junk(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value of any shape."""
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False, 0, -1, 3.5, 10**12])
    if kind == 2:
        return "".join(rng.choice('ab"\\{}[]:, \x00é') for _ in range(rng.randrange(12)))
    if kind == 3:
        return rng.choice(["user", "assistant", "text", "function", "auto", "image_url", ""])
    if kind == 4:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(["model", "messages", "role", "content", "type", "input", "tools", "x"]): junk(
            rng, depth + 1
        )
        for _ in range(rng.randrange(5))
    }


def hostile(url: str, passes: int, per_endpoint: int) -> int:
    rng = random.Random(7)
    server_errors = 0
    for _ in range(passes):
        for path in POSTS:
            for n in range(per_endpoint):
                body = (
                    {"model": "m", "messages": junk(rng), "input": junk(rng), "tools": junk(rng)}
                    if n % 2
                    else junk(rng)
                )
                raw = json.dumps(body).encode()
                headers = {"content-encoding": "gzip"} if n % 17 == 0 else None
                if post(url, path, raw, headers) >= 500:
                    server_errors += 1
    return server_errors


def stream_chunks(total: int, piece: int = 64 * 1024) -> list[bytes]:
    text = "y" * piece
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    line = b"data: " + json.dumps(chunk).encode() + b"\n\n"
    end = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    return [line] * (total // piece) + [
        b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n"
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller scenarios, 5 s settle")
    parser.add_argument(
        "--settle", type=float, default=60.0, help="seconds before the last reading"
    )
    args = parser.parse_args()
    settle = 5.0 if args.quick else args.settle
    fake = FakeUpstream()
    fake.start()
    rows: list[tuple[str, float, float, float, str]] = []
    with tempfile.TemporaryDirectory() as where:
        config = Path(where) / "config.toml"
        config.write_text(CONFIG.format(ledger=Path(where) / "ledger.db", url=fake.url))
        daemon = Daemon(config).start()
        try:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            ask = json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            ).encode()
            post(daemon.url, "/v1/chat/completions", ask)  # warm: imports, pools, the ledger

            def scenario(name: str, run: Any) -> None:
                before = rss_mib(pid)
                note = run()
                after = rss_mib(pid)
                time.sleep(settle)
                rows.append((name, before, after, rss_mib(pid), note))

            big = (8 if args.quick else 30) * MIB
            fake.default("m", Reply(text="z" * big))
            scenario(
                "at-cap",
                lambda: " ".join(
                    str(post(daemon.url, "/v1/chat/completions", ask)) for _ in range(4)
                ),
            )
            fake.default(
                "m", Reply(kind="raw", raw=stream_chunks((10 if args.quick else 50) * MIB))
            )
            streamed = json.dumps(
                {"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]}
            ).encode()
            scenario("long-stream", lambda: str(post(daemon.url, "/v1/chat/completions", streamed)))
            fake.default("m", Reply(text="ok"))
            per = 20 if args.quick else 150
            scenario(
                "hostile",
                lambda: f"{hostile(daemon.url, 3, per)} answers >= 500 of {3 * per * len(POSTS)}",
            )
        finally:
            daemon.stop()
            fake.stop()
    print(f"| scenario | RSS before | right after | {settle:g} s later | note |")
    print("|---|---|---|---|---|")
    for name, before, after, later, note in rows:
        print(f"| {name} | {before:.1f} MiB | {after:.1f} MiB | {later:.1f} MiB | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
