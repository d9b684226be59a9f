"""The first-match rule engine: `[[rules]]` top to bottom, the first whose `when` holds wins.

Every condition that is set must hold, except that `always = true` matches at once. Header names
are compared lower-cased; `$header:<name>` targets take the header's value (even an empty one) at
decision time, and stay literal when the header is absent, so alias validation then fails, as in
v0.1. Tracing (for `pirouter route`) is opt-in so the daemon's request path builds no strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pirouter_py.config import CONDITIONS, HEADER_TARGET, Rule, When
from pirouter_py.features import Features
from pirouter_py.types import ChatRequest


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule tried: whether it matched, and the condition that decided it."""

    name: str
    matched: bool
    reason: str


def _check(
    rule: Rule, request: ChatRequest, features: Features, headers: Mapping[str, str]
) -> str | None:
    """None if the rule's predicate holds, else the first condition that fails, as a sentence."""
    cond: When = rule.when
    if cond.always:
        return None
    if cond.has_tools is not None and features.has_tools != cond.has_tools:
        return f"has_tools = {str(cond.has_tools).lower()}, but the request " + (
            "offers tools" if features.has_tools else "offers no tools"
        )
    estimate = features.estimated_tokens
    if cond.tokens_in_gt is not None and not estimate > cond.tokens_in_gt:
        return f"tokens_in_gt = {cond.tokens_in_gt}, but the estimate is {estimate}"
    if cond.tokens_in_lt is not None and not estimate < cond.tokens_in_lt:
        return f"tokens_in_lt = {cond.tokens_in_lt}, but the estimate is {estimate}"
    pattern = rule.system_re
    if pattern is not None and pattern.search(features.system_text) is None:
        return f"system_matches {pattern.pattern!r} finds nothing in the system text"
    if cond.model_alias_eq is not None and request.model != cond.model_alias_eq:
        return (
            f"model_alias_eq = {cond.model_alias_eq!r}, but the request asks for {request.model!r}"
        )
    header = cond.header
    if header is not None:
        value = headers.get(header.name)
        if header.equals is not None:
            if value != header.equals:
                seen = "is absent" if value is None else f"is {value!r}"
                return f"header {header.name} must equal {header.equals!r}, but it {seen}"
        elif not header.any_value:
            return f"header {header.name} has neither equals nor any_value, so it never matches"
        elif not value:
            return f"header {header.name} is " + ("absent" if value is None else "empty")
    return None


def _describe_match(rule: Rule) -> str:
    cond = rule.when
    if cond.always:
        return "always = true"
    held = [key for key in CONDITIONS if getattr(cond, key) is not None]
    return "all of " + ", ".join(held) + " hold" if len(held) > 1 else f"{held[0]} holds"


def first_match(
    rules: Sequence[Rule],
    request: ChatRequest,
    features: Features,
    headers: Mapping[str, str],
    trace: list[RuleTrace] | None = None,
) -> Rule | None:
    """The first rule whose predicate holds, or None; appends each rule tried to `trace`."""
    for rule in rules:
        failed = _check(rule, request, features, headers)
        if trace is not None:
            trace.append(RuleTrace(rule.name, failed is None, failed or _describe_match(rule)))
        if failed is None:
            return rule
    return None


def resolve_target(target: str, headers: Mapping[str, str]) -> str:
    """`$header:<name>` -> that header's value when present; anything else unchanged."""
    if target.startswith(HEADER_TARGET):
        value = headers.get(target[len(HEADER_TARGET) :].lower())
        if value is not None:
            return value
    return target
