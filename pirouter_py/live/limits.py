"""Per-model `rpm` and `tpm` token buckets, kept in memory.

A request takes one request token and its estimated input tokens when an attempt starts; when it
ends, the bucket is trued up with the tokens the upstream reported. A model without room is
*busy*: the router tries it last instead of letting its upstream answer 429. Buckets are full at
start and refill every second; a reload keeps the level of every bucket whose capacity it keeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pirouter_py.config import Config


@dataclass(slots=True)
class _Bucket:
    capacity: float
    level: float
    stamp: float

    def refill(self, now: float) -> float:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.capacity / 60.0)
        self.stamp = now
        return self.level


class Limits:
    """Token buckets for `[models.<alias>] rpm` and `tpm` (full at start, refilled per second)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        now = clock()
        self.rpm = {a: _Bucket(m.rpm, m.rpm, now) for a, m in config.models.items() if m.rpm}
        self.tpm = {a: _Bucket(m.tpm, m.tpm, now) for a, m in config.models.items() if m.tpm}
        # With shared state (live/shared.py): requests other instances started in the last
        # minute, per model (they take room from this instance's rpm buckets), and callbacks
        # told of every request started here and of each true-up of its estimated tokens.
        self.others: dict[str, float] = {}
        self.others_tokens: dict[str, float] = {}
        self.on_take: Callable[[str, int], None] | None = None
        self.on_settle: Callable[[str, int], None] | None = None

    def carried(self, config: Config) -> Limits:
        """Buckets for a reloaded config: those whose capacity is unchanged are shared, so
        requests under either config draw on the same level."""
        new = Limits(config, self.clock)
        new.others, new.others_tokens, new.on_take = self.others, self.others_tokens, self.on_take
        new.on_settle = self.on_settle
        for mine, before in ((new.rpm, self.rpm), (new.tpm, self.tpm)):
            for alias, bucket in mine.items():
                kept = before.get(alias)
                if kept is not None and kept.capacity == bucket.capacity:
                    mine[alias] = kept
        return new

    def busy(self, alias: str, tokens: int) -> str | None:
        """Why `alias` has no room for a request of `tokens` input tokens now, or None."""
        now = self.clock()
        rpm = self.rpm.get(alias)
        if rpm is not None and rpm.refill(now) - self.others.get(alias, 0.0) < 1:
            return f"at its limit of {rpm.capacity:g} requests per minute"
        tpm = self.tpm.get(alias)
        if tpm is not None and tpm.refill(now) - self.others_tokens.get(alias, 0.0) < min(
            tokens, tpm.capacity
        ):
            return f"at its limit of {tpm.capacity:g} tokens per minute"
        return None

    def take(self, alias: str, tokens: int) -> None:
        """An attempt starts: one request, `tokens` estimated input tokens."""
        now = self.clock()
        if (rpm := self.rpm.get(alias)) is not None:
            rpm.refill(now)
            rpm.level -= 1
        if (tpm := self.tpm.get(alias)) is not None:
            tpm.refill(now)
            tpm.level -= tokens
        if self.on_take is not None and (rpm is not None or tpm is not None):
            self.on_take(alias, tokens)

    def settle(self, alias: str, estimated: int, used: int) -> None:
        """An attempt ended having used `used` tokens (input + output) against `estimated`."""
        if (tpm := self.tpm.get(alias)) is not None:
            tpm.refill(self.clock())
            tpm.level -= used - estimated
            if self.on_settle is not None and used != estimated:
                self.on_settle(alias, used - estimated)

    def snapshot(self) -> dict[str, dict[str, float]]:
        now = self.clock()
        out: dict[str, dict[str, float]] = {}
        for name, buckets in (("rpm_left", self.rpm), ("tpm_left", self.tpm)):
            for alias, bucket in buckets.items():
                out.setdefault(alias, {})[name] = round(max(0.0, bucket.refill(now)), 1)
        return out
