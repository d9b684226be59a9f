"""What keeps the event loop responsive under load: fair starts, and a settled collector.

Fair starts: a burst of new requests must not stall the streams already running.

Starting a request (decode, route, open the upstream call) costs a few hundred µs of the event
loop. When hundreds arrive in one loop turn, asyncio runs all their starts back to back before
it looks at a socket again, so every stream already relaying waits for the whole burst: 512
streams starting together held the others' chunks for 100-300 ms. The gate lets `per_turn`
starts through per loop turn; later arrivals queue in order and go on the next turns, with the
loop polling sockets (and relaying chunks) in between. Below `per_turn` arrivals per turn it
costs one counter increment, and one `call_soon` per turn.
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque

PER_TURN = 8


class StartGate:
    def __init__(self, per_turn: int = PER_TURN) -> None:
        self.per_turn = per_turn
        self.used = 0  # starts let through in this turn
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.scheduled = False

    async def enter(self) -> None:
        """Return when this request may start; in arrival order under a burst."""
        if self.used < self.per_turn and not self.waiting:
            self._count()
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        await waiter  # a cancelled waiter is skipped by _turn

    def _count(self) -> None:
        self.used += 1
        if not self.scheduled:
            self.scheduled = True
            # Runs after the callbacks already queued, i.e. at the end of this turn.
            asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        self.scheduled = False
        self.used = 0
        while self.waiting and self.used < self.per_turn:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._count()


# Collect young garbage every 10,000 allocations rather than 700: request objects rarely form
# cycles (reference counting frees them), so most collections found nothing and cost ~10 % of the
# CPU per request at saturation (bench/). The older generations are collected less often too.
GC_THRESHOLDS = (10_000, 20, 20)


def settle_gc() -> None:
    """Once started: move everything alive (modules, config, the app) out of the collector's
    sight, so that a full collection walks only what requests allocate. Without this one took
    30-55 ms under 512 streams, a pause every stream felt."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
