"""Recent time to first token per model: an exponentially weighted mean over streamed answers,
seeded from the ledger at start; the policy prefers the faster of models tied on its keys."""

from __future__ import annotations

TTFT_WEIGHT = 0.3  # weight of the newest time-to-first-token sample in the running mean


class Latency:
    """Recent time to first token per model, in milliseconds."""

    def __init__(self) -> None:
        self.ttft: dict[str, float] = {}

    def observe(self, alias: str, ttft_ms: float) -> None:
        old = self.ttft.get(alias)
        self.ttft[alias] = ttft_ms if old is None else old + TTFT_WEIGHT * (ttft_ms - old)
