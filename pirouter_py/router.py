"""The routing decision: first-match rules, then the policy. Pure: no I/O, no clock.

`decide()` is what the daemon runs for every request and what `pirouter route` explains. A rule's
targets are validated against the catalog after `$header:` substitution (v0.1's error text); a rule
that sends images to a model without `supports_vision` is a clear error rather than a silent drop.
With `explain=True` the decision carries each rule tried and each catalog model's fate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pirouter_py import features as feats
from pirouter_py import policy, rules
from pirouter_py.config import Config, Profile
from pirouter_py.errors import RoutingError
from pirouter_py.features import Difficulty, Features
from pirouter_py.policy import CandidateTrace
from pirouter_py.rules import RuleTrace
from pirouter_py.types import ChatRequest


@dataclass(frozen=True, slots=True)
class Decision:
    """Which models to try, in order, and why."""

    rule: str  # a [[rules]] name, or "policy:<profile>:<difficulty>"
    primary: str
    cascade: tuple[str, ...]
    source: Literal["rule", "requested", "policy"]
    profile: Profile
    difficulty: Difficulty
    difficulty_reason: str
    features: Features
    rule_traces: tuple[RuleTrace, ...] = ()
    candidates: tuple[CandidateTrace, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def chain(self) -> tuple[str, ...]:
        return (self.primary, *self.cascade)


def decide(
    config: Config,
    request: ChatRequest,
    headers: Mapping[str, str],
    *,
    profile: Profile | None = None,
    explain: bool = False,
) -> Decision:
    """Route `request`; `headers` must answer lower-case names. Raises RoutingError."""
    features = feats.extract(request)
    level, level_reason = feats.difficulty(request, features, headers)
    chosen_profile: Profile = profile or config.routing.profile
    trace: list[RuleTrace] | None = [] if explain else None
    rule = (
        rules.first_match(config.rules, request, features, headers, trace) if config.rules else None
    )
    if rule is not None:
        primary = rules.resolve_target(rule.then.primary, headers)
        cascade = [rules.resolve_target(a, headers) for a in rule.then.cascade]
        for alias in (primary, *cascade):
            if alias not in config.models:
                raise RoutingError(f"rule `{rule.name}` selected unknown model alias `{alias}`")
        notes: list[str] = []
        if features.has_images:
            _check_vision(config, features, primary, f"rule `{rule.name}` selected `{primary}`")
            blind = [a for a in cascade if not config.models[a].supports_vision]
            if blind:
                notes.append("left out of the cascade, no image input: " + ", ".join(blind))
                cascade = [a for a in cascade if a not in blind]
        return Decision(
            rule.name,
            primary,
            tuple(cascade),
            "rule",
            chosen_profile,
            level,
            level_reason,
            features,
            tuple(trace or ()),
            (),
            tuple(notes),
        )
    requested = request.model
    if config.routing.honor_requested_model and requested in config.models:
        _check_vision(config, features, requested, f"the requested model `{requested}`")
        fallbacks = policy.fallbacks_for(config, features, level, chosen_profile, requested)
        return Decision(
            f"requested:{requested}",
            requested,
            fallbacks,
            "requested",
            chosen_profile,
            level,
            level_reason,
            features,
            tuple(trace or ()),
        )
    choice = policy.choose(config, features, level, chosen_profile, explain)
    return Decision(
        choice.rule,
        choice.primary,
        choice.cascade,
        "policy",
        chosen_profile,
        level,
        level_reason,
        features,
        tuple(trace or ()),
        choice.candidates,
    )


def _check_vision(config: Config, features: Features, alias: str, who: str) -> None:
    """A request with images may only go to a model with supports_vision."""
    if features.has_images and not config.models[alias].supports_vision:
        raise RoutingError(
            f"{who}, which does not accept images (supports_vision = false); send the request "
            "without images or route it to a model with supports_vision = true"
        )
