"""Prices: the one place a cost in USD is computed from tokens and a model's rates.

Uncached input at `input_per_m`, cached reads and writes at `cache_read_per_m` /
`cache_write_per_m` (else `input_per_m`), output at `output_per_m`, all per million tokens. The
ledger, metrics, budgets and stats all price through here. An unknown alias costs 0 (as in v0.1).
"""

from __future__ import annotations

from pirouter_py.config import ModelConfig
from pirouter_py.record import Attempt


def cost(
    model: ModelConfig | None,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float:
    """USD for tokens at `model`'s rates; `input_tokens` includes the cached ones."""
    if model is None:
        return 0.0
    cached = cache_read_tokens + cache_write_tokens
    read = model.cache_read_per_m if model.cache_read_per_m is not None else model.input_per_m
    write = model.cache_write_per_m if model.cache_write_per_m is not None else model.input_per_m
    return (
        max(0, input_tokens - cached) * model.input_per_m
        + cache_read_tokens * read
        + cache_write_tokens * write
        + output_tokens * model.output_per_m
    ) / 1e6


def attempt_cost(model: ModelConfig | None, a: Attempt) -> float:
    """USD for one attempt, priced by its alias."""
    return cost(model, a.input_tokens, a.output_tokens, a.cache_read_tokens, a.cache_write_tokens)
