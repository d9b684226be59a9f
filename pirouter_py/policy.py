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


def _drop_reason(model: ModelConfig, profile: Profile, features: Features) -> str | None:
    if not model.enabled:
        return "disabled (enabled = false)"
    if profile == "cloud-only" and model.local:
        return "local model, and the profile is cloud-only"
    if features.has_tools and not model.supports_tools:
        return "no tool support (supports_tools = false), and the request offers tools"
    if features.has_images and not model.supports_vision:
        return "no image input (supports_vision = false), and the request has images"
    window = model.context_window
    if window is not None and window < features.estimated_tokens:
        return f"context window {window} < estimated {features.estimated_tokens} tokens"
    return None


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
    dropped: list[CandidateTrace] = []
    pool: list[tuple[str, ModelConfig]] = []
    for alias in config.aliases:
        model = config.models[alias]
        reason = _drop_reason(model, profile, features)
        if reason is None:
            pool.append((alias, model))
        elif explain:
            dropped.append(CandidateTrace(alias, "dropped", reason))
    if not pool:
        images = ", images=true" if features.has_images else ""
        raise RoutingError(
            "no enabled model satisfies routing constraints: "
            f"profile={PROFILE_DEBUG_NAMES[profile]}, tools={str(features.has_tools).lower()}, "
            f"estimated_tokens={features.estimated_tokens}{images}"
        )
    adequate = [am for am in pool if am[1].rank >= required]
    if adequate:
        if explain:
            dropped += [
                CandidateTrace(a, "dropped", f"{m.quality} is below the required {required_name}")
                for a, m in pool
                if m.rank < required
            ]
        pool = adequate
    pool.sort(key=_order(profile, required))
    primary, primary_model = pool[0]

    cascade = _climb(config, pool, primary, primary_model)

    candidates: tuple[CandidateTrace, ...] = ()
    if explain:
        ranked = []
        for position, (alias, model) in enumerate(pool, 1):
            verdict: Verdict = (
                "primary" if alias == primary else "fallback" if alias in cascade else "ranked"
            )
            ranked.append(CandidateTrace(alias, verdict, _describe(model), position))
        candidates = (*ranked, *dropped)
    return PolicyChoice(primary, cascade, f"policy:{profile}:{level}", candidates)


def _climb(
    config: Config, pool: list[tuple[str, ModelConfig]], primary: str, primary_model: ModelConfig
) -> tuple[str, ...]:
    """Fallbacks: from the cheapest model of the primary's tier upward, never below it."""
    if not config.routing.auto_cascade:
        return ()
    climb = sorted(
        (am for am in pool if am[1].rank >= primary_model.rank and am[0] != primary),
        key=lambda am: (am[1].rank, am[1].cost, am[0]),
    )
    return tuple(a for a, _ in climb[: config.routing.max_policy_fallbacks])


def fallbacks_for(
    config: Config, features: Features, profile: Profile, primary: str
) -> tuple[str, ...]:
    """Policy fallbacks for a model the client named ([routing] honor_requested_model)."""
    pool = [
        (a, m)
        for a in config.aliases
        for m in (config.models[a],)
        if _drop_reason(m, profile, features) is None
    ]
    return _climb(config, pool, primary, config.models[primary])
