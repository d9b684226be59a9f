"""What keeps the event loop responsive under load. The start gate (server/loop.py): a burst of
starts goes through `per_turn` at a time, in arrival order, with the loop turning (and polling
sockets) between; a cancelled waiter gives its place up; below the limit nothing waits. The
collector (loop.settle_gc): what was alive at start is frozen, and young garbage is collected
less often."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys

from pirouter_py.server.loop import GC_THRESHOLDS, StartGate, settle_gc


class Turns:
    """Counts event-loop turns: a callback that queues itself again each time it runs."""

    def __init__(self) -> None:
        self.n = 0
        self.running = True
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        if self.running:
            self.n += 1
            asyncio.get_running_loop().call_soon(self._tick)


def test_a_burst_goes_through_per_turn_in_order() -> None:
    async def main() -> list[tuple[int, int]]:
        gate, turns = StartGate(per_turn=3), Turns()
        through: list[tuple[int, int]] = []

        async def start(i: int) -> None:
            await gate.enter()
            through.append((i, turns.n))

        await asyncio.gather(*(start(i) for i in range(8)))
        turns.running = False
        return through

    through = asyncio.run(main())
    assert [i for i, _ in through] == list(range(8))
    by_turn: dict[int, int] = {}
    for _, turn in through:
        by_turn[turn] = by_turn.get(turn, 0) + 1
    assert list(by_turn.values()) == [3, 3, 2]  # three turns, at most 3 in each


def test_sockets_are_polled_between_turns() -> None:
    """The point of the gate: I/O that arrives during a burst is handled before the burst ends."""

    async def main() -> tuple[int, int]:
        gate = StartGate(per_turn=2)
        order: list[str] = []
        reader, writer = await asyncio.open_connection(*server_address)
        writer.write(b"x")
        await writer.drain()

        async def start(i: int) -> None:
            await gate.enter()
            order.append(f"start{i}")

        async def read() -> None:
            await reader.read(1)
            order.append("read")

        await asyncio.gather(*(start(i) for i in range(20)), read())
        writer.close()
        return order.index("read"), len(order)

    async def with_server() -> tuple[int, int]:
        nonlocal server_address
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        server_address = server.sockets[0].getsockname()[:2]
        async with server:
            return await main()

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(await r.read(1))
        await w.drain()
        w.close()

    server_address: tuple[str, int] = ("", 0)
    position, total = asyncio.run(with_server())
    assert position < total - 1  # the read did not wait for all 20 starts


def test_a_cancelled_waiter_gives_its_place_up() -> None:
    async def main() -> list[int]:
        gate = StartGate(per_turn=1)
        through: list[int] = []

        async def start(i: int) -> None:
            await gate.enter()
            through.append(i)

        tasks = [asyncio.create_task(start(i)) for i in range(4)]
        await asyncio.sleep(0)  # 0 went through; 1, 2, 3 wait
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return through

    assert asyncio.run(main()) == [0, 2, 3]


def test_below_the_limit_nothing_waits() -> None:
    async def main() -> int:
        gate, turns = StartGate(per_turn=4), Turns()
        for _ in range(4):
            await gate.enter()
        n = turns.n
        turns.running = False
        return n

    assert asyncio.run(main()) == 0  # four entries within the first turn


def test_settle_gc_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    try:
        settle_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 10_000  # the modules, classes and functions loaded
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_daemon_loads_without_rich_and_rich_still_loads_after() -> None:
    """rich (~60 ms, ~5 MiB) is for the CLI's tables; structlog would pull it into the daemon.
    prometheus_client (~35 ms) waits for the first scrape."""
    code = (
        "import sys, pirouter_py.server.app, structlog.dev\n"
        "assert 'rich' not in sys.modules, 'rich was imported'\n"
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client was imported'\n"
        "assert structlog.dev.rich is None\n"
        "import rich.console\n"
        "from pirouter_py.observe.metrics import Metrics\n"
        "body, kind = Metrics(in_flight=lambda: 2, ledger_backlog=lambda: 0).render()\n"
        "assert b'pirouter_in_flight_requests 2.0' in body and kind.startswith('text/plain')\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
