"""State shared by several pirouter instances through Redis (`[state] url`): budgets' spend,
`rpm` and `tpm` limits, session pins, cooldowns and resting provider keys, so a team's gateways
spend one budget, keep one rate limit, keep a conversation on one model whichever instance a turn
lands on, and stop sending to a failing model or a throttled key together.

The request path never waits on Redis but for a session's pin (a bounded lookup, PIN_S), and
nothing it needs is lost when Redis is away:
- what an instance spends, the requests it starts and the pins it sets are queued in memory and
  written by one sync task every SYNC_S (spend with HINCRBYFLOAT into a hash per day and per
  month; requests as per-second counters per model that expire; pins in a hash per session);
- the same task reads back the totals of every instance: today's and this month's spend (which
  then replace the local figures the budgets check) and the requests the *other* instances
  started in the last minute per model (which the local `rpm` buckets count against their room);
- when Redis cannot be reached, each instance goes on with its own state (its spend, buckets and
  pins kept locally as without Redis), says so in `/health` (`state`) and the log, keeps what it
  queued (bounded) and writes it once Redis answers again.

The driver (redis-py's asyncio client) is imported only when `[state] url` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pirouter_py.errors import PirouterError, install_hint
from pirouter_py.observe.log import get_logger

log = get_logger("pirouter")

SYNC_S = 0.1  # how often queued changes are written and the shared totals read
PIN_S = 0.05  # the longest a request waits for a session's pin from Redis
KEEP_DAYS = 40  # how long the spend hashes live
QUEUE_MAX = 100_000  # changes kept while Redis is away


class Shared:
    """One instance's link to the shared state."""

    def __init__(
        self,
        url: str,
        prefix: str,
        traffic: Callable[[], Any],
        providers: Callable[[], Mapping[str, Any]] = dict,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.traffic = traffic  # the current Traffic (a reload swaps it; spend is shared)
        self.providers = providers  # the current providers (a reload makes new ones)
        self.me = f"{os.uname().nodename}:{os.getpid()}"
        self.client: Any = None
        self.ok = False
        self.error: str | None = "not connected yet"
        self.spent: list[tuple[str, str | None, float, float]] = []  # alias, client, usd, when
        self.starts: Counter[tuple[str, int]] = Counter()  # (alias, second) -> requests
        self.tokens: Counter[tuple[str, int]] = Counter()  # (alias, second) -> input tokens
        self.pins: dict[str, tuple[str, float]] = {}
        self.cools: dict[str, tuple[float, str | None]] = {}  # alias -> (until, wall clock; why)
        self.rests: dict[str, tuple[float, str | None]] = {}  # "<provider> <key variable>" -> same
        self._task: asyncio.Task[None] | None = None

    # --- the request path (no waiting) -----------------------------------------------------

    def spend(self, alias: str, client: str | None, usd: float) -> None:
        if usd > 0 and len(self.spent) < QUEUE_MAX:
            self.spent.append((alias, client, usd, time.time()))

    def started(self, alias: str, tokens: int) -> None:
        second = int(time.time())
        self.starts[(alias, second)] += 1
        self.tokens[(alias, second)] += tokens

    def settled(self, alias: str, tokens: int) -> None:
        """An attempt used `tokens` more (or fewer) than its estimate: counted this second."""
        self.tokens[(alias, int(time.time()))] += tokens

    def pinned(self, session: str, alias: str) -> None:
        self.pins[session] = (alias, time.time())

    def cooled(self, alias: str, seconds: float, error: str | None) -> None:
        self.cools[alias] = (time.time() + seconds, error)

    def recovered(self, alias: str) -> None:
        self.cools[alias] = (0.0, None)  # a success here ends the cooldown everywhere

    def watch_keys(self) -> None:
        """Hear of keys resting here (a 429 or a refusal, providers/base.py) and of keys that
        answered again, for every provider of the current config: a reload's new providers are
        watched from the next sync on."""
        for name, provider in self.providers().items():
            rested = getattr(provider, "rested", None)
            if rested is None or rested.on_failed is not None:
                continue

            def failed(env: str, seconds: float, why: str | None, name: str = name) -> None:
                self.rests[f"{name} {env}"] = (time.time() + seconds, why)

            def succeeded(env: str, name: str = name) -> None:
                self.rests[f"{name} {env}"] = (0.0, None)

            rested.on_failed, rested.on_succeeded = failed, succeeded

    async def pin(self, session: str) -> tuple[str, float] | None:
        """The model that served this session last on any instance, and when; None when Redis
        has none or does not answer within PIN_S."""
        if not self.ok or self.client is None:
            return None
        try:
            async with asyncio.timeout(PIN_S):
                found = await self.client.hmget(self._key("pin", session), "alias", "ts")
        except Exception:  # Redis away: the local pin decides
            return None
        if not found or found[0] is None:
            return None
        return found[0].decode(), float(found[1])

    # --- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            import redis.asyncio as redis  # only with [state] url
        except ImportError:
            raise PirouterError(
                f"[state] url needs the Redis driver: {install_hint('team')}"
            ) from None

        self.client = redis.from_url(
            self.url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=5
        )
        self._task = asyncio.create_task(self._sync_forever(), name="shared-state")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sync(), 1.0)  # what this instance spent last
            with contextlib.suppress(Exception):
                await self.client.aclose()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": _masked(self.url), "shared": self.ok}
        if not self.ok:
            out["error"] = self.error
            out["queued"] = len(self.spent) + len(self.pins)
        return out

    async def _sync_forever(self) -> None:
        while True:
            try:
                await self.sync()
                if not self.ok:
                    log.info("shared_state_reachable", url=_masked(self.url))
                self.ok, self.error = True, None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: go on with local state
                if self.ok or self.error == "not connected yet":
                    log.warning(
                        "shared_state_unreachable",
                        url=_masked(self.url),
                        error=str(exc),
                        fallback="this instance's own budgets, limits and pins",
                    )
                self.ok, self.error = False, str(exc) or type(exc).__name__
            await asyncio.sleep(SYNC_S)

    # --- one sync ----------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def sync(self) -> None:
        """Write what was queued, then read the shared totals into the local state. What was
        queued is dropped only once Redis took it."""
        traffic = self.traffic()
        now = time.time()
        day = datetime.fromtimestamp(now).strftime("%Y-%m-%d")
        month = day[:7]
        self.watch_keys()
        spent, starts, pins, cools = self.spent, self.starts, self.pins, self.cools
        rests = self.rests
        tokens = self.tokens
        pipe = self.client.pipeline(transaction=False)
        written: dict[str, int] = {}  # keys written, and how long they live (s)
        for alias, client, usd, when in spent:
            stamp = datetime.fromtimestamp(when).strftime("%Y-%m-%d")
            for period in (stamp, stamp[:7]):
                for table, name in (("spend", alias), ("client-spend", client)):
                    if name is not None:
                        key = self._key(table, period)
                        pipe.hincrbyfloat(key, name, usd)
                        written[key] = KEEP_DAYS * 86_400
        for kind, counts in (("rpm", starts), ("tpm", tokens)):
            for (alias, second), n in counts.items():  # a hash per model: "<second> <instance>"
                key = self._key(kind, alias)
                pipe.hincrby(key, f"{second} {self.me}", n)
                written[key] = 120
        for session, (alias, ts) in pins.items():
            key = self._key("pin", session)
            pipe.hset(key, mapping={"alias": alias, "ts": ts})
            written[key] = 86_400
        for table, changes in (("cool", cools), ("rest", rests)):
            for name, (until, why) in changes.items():
                if until:
                    pipe.hset(self._key(table), name, f"{until} {why or ''}")
                    written[self._key(table)] = 3_600
                else:
                    pipe.hdel(self._key(table), name)
        for key, seconds in written.items():
            pipe.expire(key, seconds)
        pipe.hgetall(self._key("spend", day))
        pipe.hgetall(self._key("spend", month))
        pipe.hgetall(self._key("client-spend", day))
        pipe.hgetall(self._key("client-spend", month))
        pipe.hgetall(self._key("cool"))
        pipe.hgetall(self._key("rest"))
        limited = [("rpm", a) for a in traffic.limits.rpm] + [
            ("tpm", a) for a in traffic.limits.tpm
        ]
        for kind, alias in limited:
            pipe.hgetall(self._key(kind, alias))
        self.spent, self.starts, self.pins, self.cools = [], Counter(), {}, {}
        self.tokens, self.rests = Counter(), {}
        try:
            results = await pipe.execute()
        except BaseException:  # not taken: keep it for the next sync
            self.spent = spent + self.spent
            self.starts.update(starts)
            self.tokens.update(tokens)
            self.pins = {**pins, **self.pins}
            self.cools = {**cools, **self.cools}
            self.rests = {**rests, **self.rests}
            raise
        reads = results[len(results) - 6 - len(limited) :]
        providers = self.providers()
        for field, found in reads.pop(5).items():  # keys resting on any instance
            until, _, why = found.decode().partition(" ")
            name, _, env = field.decode().partition(" ")
            rested = getattr(providers.get(name), "rested", None)
            if float(until) > now and rested is not None:
                rested.cool(env, float(until) - now, why or None)
        for alias, found in reads.pop(4).items():  # cooldowns set on any instance
            until, _, why = found.decode().partition(" ")
            if float(until) > now and traffic.health is not None:
                traffic.health.cool(alias.decode(), float(until) - now, why or None)
        totals = [{k.decode(): float(v) for k, v in r.items()} for r in reads[:4]]
        spend = traffic.budgets.spend
        spend.roll(now)
        spend.today, spend.this_month = totals[0], totals[1]
        spend.clients_today, spend.clients_month = totals[2], totals[3]
        for alias, client, usd, _ in self.spent:  # spent while the sync ran: not in the totals
            spend.today[alias] = spend.today.get(alias, 0.0) + usd
            spend.this_month[alias] = spend.this_month.get(alias, 0.0) + usd
            if client is not None:
                spend.clients_today[client] = spend.clients_today.get(client, 0.0) + usd
                spend.clients_month[client] = spend.clients_month.get(client, 0.0) + usd
        others: dict[str, dict[str, float]] = {"rpm": {}, "tpm": {}}
        since = int(now) - 59
        stale: dict[str, list[bytes]] = {}
        for (kind, alias), counts in zip(limited, reads[4:], strict=True):
            count = 0
            for field, n in counts.items():
                second, _, who = field.decode().partition(" ")
                if int(second) < since - 60:
                    stale.setdefault(self._key(kind, alias), []).append(field)
                elif int(second) >= since and who != self.me:
                    count += int(n)
            others[kind][alias] = count
        traffic.limits.others, traffic.limits.others_tokens = others["rpm"], others["tpm"]
        for key, fields in stale.items():  # seconds long past the window, of every instance
            await self.client.hdel(key, *fields)


def _masked(url: str) -> str:
    """The URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
