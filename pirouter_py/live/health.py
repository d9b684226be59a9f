"""Per-model health from live traffic: failures put a model in cooldown, a success ends it.

A retryable failure (429, 5xx, timeout, refused connection...) cools a model for `cooldown_secs`,
doubling with each failure in a row up to `max_cooldown_secs`, and never shorter than the
upstream's `Retry-After`. Cooling models are moved to the end of a request's chain (rules and
policy alike; routing/decide.py does it): they are skipped while others can answer, yet a request
never fails that a cooling model could still serve as the last option. The clock is a parameter, so
tests are exact.

A model whose provider refused the connection (or, probed, the key) is also `down`: reported so by
/health however short its cooldown, until the provider answers again, to a request or to the
background probe (server/probes.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class _State:
    failures: int = 0
    until: float = 0.0
    last_error: str | None = None
    down: bool = False  # its provider refused the connection or the key; ends when it answers


class Health:
    def __init__(
        self,
        cooldown_secs: float = 5.0,
        max_cooldown_secs: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = cooldown_secs
        self.max = max_cooldown_secs
        self.clock = clock
        self.states: dict[str, _State] = {}
        # told of every cooldown set here, (alias, seconds, error): shared state (live/shared.py)
        self.on_failed: Callable[[str, float, str | None], None] | None = None
        self.on_succeeded: Callable[[str], None] | None = None

    def cool(self, alias: str, seconds: float, error: str | None) -> None:
        """Another instance found `alias` failing: cool it here too, for what is left of its
        cooldown (unless it cools longer here already)."""
        state = self.states.setdefault(alias, _State())
        until = self.clock() + seconds
        if until > state.until:
            state.until, state.last_error = until, error

    def failed(
        self,
        alias: str,
        retry_after: float | None = None,
        error: str | None = None,
        *,
        down: bool = False,
    ) -> float:
        """Record a retryable failure; returns the cooldown in seconds (0: cooldowns are off).
        With `down`, the model stays down (even with cooldowns off) until it answers."""
        if self.max <= 0 and not down:
            return 0.0
        state = self.states.setdefault(alias, _State())
        state.failures += 1
        state.down = state.down or down
        if self.max <= 0:
            state.last_error = error
            return 0.0
        cooldown = min(self.max, self.base * float(2 ** (state.failures - 1)))
        if retry_after is not None:
            cooldown = max(cooldown, retry_after)
        state.until = self.clock() + cooldown
        state.last_error = error
        if self.on_failed is not None:
            self.on_failed(alias, cooldown, error)
        return cooldown

    def succeeded(self, alias: str) -> None:
        if self.states.pop(alias, None) is not None and self.on_succeeded is not None:
            self.on_succeeded(alias)

    def cooling(self, alias: str) -> bool:
        state = self.states.get(alias)
        return state is not None and state.until > self.clock()

    def down(self, alias: str) -> bool:
        state = self.states.get(alias)
        return state is not None and state.down

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each model with a recent failure: in cooldown or not, seconds left, failures, down."""
        now = self.clock()
        return {
            alias: {
                "cooling": s.until > now,
                "cooldown_left_s": round(max(0.0, s.until - now), 3),
                "failures": s.failures,
                "last_error": s.last_error,
                "down": s.down,
            }
            for alias, s in sorted(self.states.items())
        }
