"""Per-model health from live traffic: failures put a model in cooldown, a success ends it.

A retryable failure (429, 5xx, timeout, refused connection...) cools a model for `cooldown_secs`,
doubling with each failure in a row up to `max_cooldown_secs`, and never shorter than the
upstream's `Retry-After`. Cooling models are moved to the end of a request's chain (rules and
policy alike; routing/decide.py does it): they are skipped while others can answer, yet a request
never fails that a cooling model could still serve as the last option. The clock is a parameter, so
tests are exact.
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
        self, alias: str, retry_after: float | None = None, error: str | None = None
    ) -> float:
        """Record a retryable failure; returns the cooldown in seconds (0: cooldowns are off)."""
        if self.max <= 0:
            return 0.0
        state = self.states.setdefault(alias, _State())
        state.failures += 1
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

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each model with a recent failure: in cooldown or not, seconds left, failures."""
        now = self.clock()
        return {
            alias: {
                "cooling": s.until > now,
                "cooldown_left_s": round(max(0.0, s.until - now), 3),
                "failures": s.failures,
                "last_error": s.last_error,
            }
            for alias, s in sorted(self.states.items())
        }
