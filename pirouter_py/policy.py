"""The profile router: when no rule matches, pick the primary and fallbacks from the catalog.

Reference §3.4–3.5 exactly. Candidates are enabled models in alias byte order, filtered by the
profile (cloud-only drops local models), by capability (tools; images need supports_vision) and by
context window. If any candidate reaches the quality the difficulty requires, the weaker ones are
dropped (otherwise under-qualified routing is allowed). Each profile orders the rest by its own
keys; alias is always the last key, so the order is total. Fallbacks climb from the cheapest model
of the primary's tier upward and never go below it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pirouter_py.config import QUALITY_RANK, Config, ModelConfig, Profile
from pirouter_py.errors import RoutingError
from pirouter_py.features import REQUIRED_QUALITY, Difficulty, Features

# v0.1 names profiles in its "no enabled model" error by their Rust Debug form.
PROFILE_DEBUG_NAMES: dict[str, str] = {
    "local-first": "LocalFirst",
    "balanced": "Balanced",
    "best-quality": "BestQuality",
    "cloud-only": "CloudOnly",
}
Verdict = Literal["primary", "fallback", "ranked", "dropped"]
SortKey = tuple[float | int | bool | str, ...]


@dataclass(frozen=True, slots=True)
class CandidateTrace:
    """One catalog model as the policy saw it: its place in the order, or why it was dropped."""

    alias: str
    verdict: Verdict
    reason: str
    position: int | None = None  # 1-based place in the profile's order; None when dropped


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    primary: str
    cascade: tuple[str, ...]
    rule: str  # "policy:<profile>:<difficulty>"
    candidates: tuple[CandidateTrace, ...] = ()


def _order(profile: Profile, required: int) -> Callable[[tuple[str, ModelConfig]], SortKey]:
    def dist(m: ModelConfig) -> int:
        return max(0, m.rank - required)

    if profile == "local-first":
        return lambda am: (not am[1].local, dist(am[1]), am[1].cost, am[0])
    if profile == "best-quality":

        def best(am: tuple[str, ModelConfig]) -> SortKey:
            window = am[1].context_window
            return (
                -am[1].rank,
                -(window if window is not None else float("inf")),
                am[1].cost,
                am[0],
            )

        return best
    return lambda am: (dist(am[1]), am[1].cost, not am[1].local, am[0])


def _static_drop(model: ModelConfig, profile: Profile, tools: bool, images: bool) -> str | None:
    """Why a model can never take requests of this kind (whatever their size), or None."""
    if not model.enabled:
        return "disabled (enabled = false)"
    if profile == "cloud-only" and model.local:
        return "local model, and the profile is cloud-only"
    if tools and not model.supports_tools:
        return "no tool support (supports_tools = false), and the request offers tools"
    if images and not model.supports_vision:
        return "no image input (supports_vision = false), and the request has images"
    return None


def _fits(model: ModelConfig, tokens: int) -> bool:
    return model.context_window is None or model.context_window >= tokens


@dataclass(frozen=True, slots=True)
class _Orders:
    """What a kind of request sees of the catalog, computed once per config (a request then
    only filters these lists, and filtering keeps their order)."""

    ranked: tuple[tuple[str, ModelConfig], ...]  # the capable models, in the profile's order
    climb: tuple[tuple[str, ModelConfig], ...]  # the same, in fallback order
    dropped: tuple[tuple[str, str], ...]  # (alias, why) for the rest, in alias order


def _orders(
    config: Config, profile: Profile, level: Difficulty, tools: bool, images: bool
) -> _Orders:
    cache = config.policy_cache
    key = (profile, level, tools, images)
    orders = cache.get(key)
    if orders is None:
        capable, dropped = [], []
        for alias in config.aliases:
            model = config.models[alias]
            reason = _static_drop(model, profile, tools, images)
            if reason is None:
                capable.append((alias, model))
            else:
                dropped.append((alias, reason))
        required = QUALITY_RANK[REQUIRED_QUALITY[level]]
        orders = _Orders(
            tuple(sorted(capable, key=_order(profile, required))),
            tuple(sorted(capable, key=lambda am: (am[1].rank, am[1].cost, am[0]))),
            tuple(dropped),
        )
        cache[key] = orders
    return orders


def _describe(model: ModelConfig) -> str:
    place = "local" if model.local else "cloud"
    return f"{model.quality}, ${model.cost:g}/M in+out, {place}"


def choose(
    config: Config,
    features: Features,
    level: Difficulty,
    profile: Profile,
    explain: bool = False,
) -> PolicyChoice:
    """The policy decision for a request no rule matched; raises RoutingError when none fits."""
    required_name = REQUIRED_QUALITY[level]
    required = QUALITY_RANK[required_name]
    tokens = features.estimated_tokens
    orders = _orders(config, profile, level, features.has_tools, features.has_images)
    pool = [am for am in orders.ranked if _fits(am[1], tokens)]
    if not pool:
        images = ", images=true" if features.has_images else ""
        raise RoutingError(
            "no enabled model satisfies routing constraints: "
            f"profile={PROFILE_DEBUG_NAMES[profile]}, tools={str(features.has_tools).lower()}, "
            f"estimated_tokens={tokens}{images}"
        )
    adequate = [am for am in pool if am[1].rank >= required]
    below = pool if adequate else []
    pool = adequate or pool
    primary, primary_model = pool[0]
    cascade = _climb(config, orders, {a for a, _ in pool}, primary, primary_model.rank, tokens)

    candidates: tuple[CandidateTrace, ...] = ()
    if explain:
        ranked = [
            CandidateTrace(
                alias,
                "primary" if alias == primary else "fallback" if alias in cascade else "ranked",
                _describe(model),
                position,
            )
            for position, (alias, model) in enumerate(pool, 1)
        ]
        too_small = [
            (a, f"context window {m.context_window} < estimated {tokens} tokens")
            for a, m in orders.ranked
            if not _fits(m, tokens)
        ]
        dropped = [
            CandidateTrace(a, "dropped", why) for a, why in sorted([*orders.dropped, *too_small])
        ]
        dropped += [
            CandidateTrace(a, "dropped", f"{m.quality} is below the required {required_name}")
            for a, m in sorted(below)
            if m.rank < required
        ]
        candidates = (*ranked, *dropped)
    return PolicyChoice(primary, cascade, f"policy:{profile}:{level}", candidates)


def _climb(
    config: Config, orders: _Orders, pool: set[str], primary: str, rank: int, tokens: int
) -> tuple[str, ...]:
    """Fallbacks: from the cheapest model of the primary's tier upward, never below it."""
    if not config.routing.auto_cascade:
        return ()
    limit = config.routing.max_policy_fallbacks
    climb = [
        a
        for a, m in orders.climb
        if a in pool and a != primary and m.rank >= rank and _fits(m, tokens)
    ]
    return tuple(climb[:limit])


def fallbacks_for(
    config: Config, features: Features, level: Difficulty, profile: Profile, primary: str
) -> tuple[str, ...]:
    """Policy fallbacks for a model the client named ([routing] honor_requested_model)."""
    orders = _orders(config, profile, level, features.has_tools, features.has_images)
    capable = {a for a, m in orders.ranked if _fits(m, features.estimated_tokens)}
    return _climb(
        config, orders, capable, primary, config.models[primary].rank, features.estimated_tokens
    )
