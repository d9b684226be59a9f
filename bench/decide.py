"""`python bench/decide.py CONFIG`: the routing decision's own time, in process, at three prompt
sizes (1 KB, 24 KB, 1 MB of user text), as JSON: p50 and p99 in microseconds over 2,000 calls."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from pirouter_py.config import load_config
from pirouter_py.errors import RoutingError
from pirouter_py.routing.decide import decide
from pirouter_py.types import ChatRequest, text_message

SIZES = {"1kb": 1_000, "24kb": 24_000, "1mb": 1_000_000}
CALLS = 2_000


def main() -> None:
    config = load_config(Path(sys.argv[1])).config
    words = "please look at this function and tell me what it does "
    out = {}
    for name, size in SIZES.items():
        text = (words * (size // len(words) + 1))[:size]
        request = ChatRequest("auto", (text_message("user", text),))
        times = []
        for _ in range(CALLS):
            started = time.perf_counter()
            with contextlib.suppress(RoutingError):  # no window takes 1 MB: decided all the same
                decide(config, request, {})
            times.append((time.perf_counter() - started) * 1e6)
        times.sort()
        out[name] = {"p50_us": times[CALLS // 2], "p99_us": times[int(CALLS * 0.99)]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
