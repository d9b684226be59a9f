"""Client connections, bounded: a connection's first request head must arrive within `[server]
header_timeout_secs` (slowloris), at most `max_connections` are open at once (past it, a new one
gets a 503 and is closed, before the file-descriptor limit would reset it unseen), and both are
logged, at most one line every LOG_EVERY_S with counts. Idle keep-alive connections close after
`idle_timeout_secs` (aiohttp's keep-alive timer, set by `serve`).

`Gate` wraps aiohttp's protocol factory (the runner's `Server`): every connection's protocol is
a `Guarded` around aiohttp's own, which sees every call unchanged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pirouter_py.observe.log import get_logger

log = get_logger("pirouter")

LOG_EVERY_S = 10.0
MAX_AUTO = 4096
_BODY = b'{"error": {"message": "pirouter has too many connections open; retry shortly", "type": "service_unavailable"}}'  # noqa: E501
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


def connection_cap(configured: int) -> int:
    """`[server] max_connections`, or (0) half the descriptor limit less 64 (each client
    connection may hold an upstream one too; the ledger and the rest take the 64), at most
    MAX_AUTO. The soft limit is raised to the hard one first."""
    try:
        import resource  # not on Windows
    except ImportError:
        return configured or 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if configured:
        return configured
    if soft == resource.RLIM_INFINITY:
        return MAX_AUTO
    return max(16, min(MAX_AUTO, (soft - 64) // 2))


class Gate:
    """aiohttp's protocol factory, guarded; every other attribute is the factory's own."""

    def __init__(self, server: Any, cap: int, header_s: float) -> None:
        self.server = server
        self.cap = cap
        self.header_s = header_s
        self.open = 0
        self.refused = 0
        self.slow = 0
        self._told = (0, 0)  # (refused, slow) when last logged
        self._told_at = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)

    def __call__(self) -> asyncio.Protocol:
        return Guarded(self, self.server())

    def note(self) -> None:
        """Log refusals and slow-header closes, at most one line every LOG_EVERY_S."""
        now = time.monotonic()
        if now - self._told_at < LOG_EVERY_S:
            return
        refused, slow = self.refused - self._told[0], self.slow - self._told[1]
        self._told, self._told_at = (self.refused, self.slow), now
        log.warning(
            "client_connections_refused",
            over_cap=refused,
            slow_headers=slow,
            open=self.open,
            cap=self.cap,
            header_timeout_s=self.header_s,
        )


class Guarded(asyncio.Protocol):
    """One client connection: aiohttp's protocol inside, a header deadline around it."""

    __slots__ = ("gate", "inner", "tail", "timer", "transport")

    def __init__(self, gate: Gate, inner: asyncio.Protocol) -> None:
        self.gate = gate
        self.inner: asyncio.Protocol | None = inner
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self.gate
        gate.open += 1
        self.transport = transport  # type: ignore[assignment]
        if gate.open > gate.cap:
            gate.refused += 1
            gate.note()
            self.inner = None
            transport.write(REFUSAL)  # type: ignore[attr-defined]
            transport.close()
            return
        self.timer = asyncio.get_running_loop().call_later(gate.header_s, self._too_slow)
        assert self.inner is not None
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        self.timer = None
        self.gate.slow += 1
        self.gate.note()
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            seen = self.tail + data
            if b"\r\n\r\n" in seen:
                self.timer.cancel()
                self.timer = None
                self.tail = b""
            else:
                self.tail = seen[-3:]
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.open -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()
