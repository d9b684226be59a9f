"""The first-match rule engine: `[[rules]]` top to bottom, the first whose `when` holds wins.

Every predicate set in a `when` table must hold, except that `always = true` matches at once;
`all`, `any` and `not` nest tables. Header names are compared lower-cased; `$header:<name>` targets
take the header's value (even an empty one) at decision time, and stay literal when the header is
absent, so alias validation then fails, as in v0.1.

On the daemon's path evaluation stops at the first predicate that fails and builds no strings.
Tracing (for `pirouter route`) evaluates every predicate of every rule tried and says, for each,
what it saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pirouter_py.config.rules import CONDITIONS, HEADER_TARGET, Rule, When, field_key
from pirouter_py.routing.features import Difficulty, Features
from pirouter_py.types import ChatRequest


@dataclass(frozen=True, slots=True)
class Check:
    """One predicate as evaluated for one request: held or not, and what it saw."""

    key: str  # the TOML key: "has_tools", "any", "not", ...
    held: bool
    detail: str
    children: tuple[Check, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule tried: whether it matched, the sentence that decided it, every predicate."""

    name: str
    matched: bool
    reason: str
    checks: tuple[Check, ...] = ()


class Facts:
    """What rules look at for one request; texts are joined only when a rule asks for them."""

    __slots__ = ("_last_user", "_user_text", "features", "headers", "level", "profile", "request")

    def __init__(
        self,
        request: ChatRequest,
        features: Features,
        headers: Mapping[str, str],
        profile: str,
        level: Difficulty,
    ) -> None:
        self.request = request
        self.features = features
        self.headers = headers
        self.profile = profile
        self.level = level
        self._user_text: str | None = None
        self._last_user: str | None = None

    @property
    def user_text(self) -> str:
        if self._user_text is None:
            self._user_text = "\n".join(m.text for m in self.request.messages if m.role == "user")
        return self._user_text

    @property
    def last_user(self) -> str:
        if self._last_user is None:
            users = [m for m in self.request.messages if m.role == "user"]
            self._last_user = users[-1].text if users else ""
        return self._last_user


def _header(when: When, f: Facts) -> tuple[bool, str]:
    header = when.header
    assert header is not None
    value = f.headers.get(header.name)
    if header.equals is not None:
        if value == header.equals:
            return True, f"header {header.name} is {value!r}"
        seen = "is absent" if value is None else f"is {value!r}"
        return False, f"header {header.name} must equal {header.equals!r}, but it {seen}"
    if not header.any_value:
        return False, f"header {header.name} has neither equals nor any_value, so it never matches"
    if not value:
        return False, f"header {header.name} is " + ("absent" if value is None else "empty")
    return True, f"header {header.name} is set ({value!r})"


def _found(when: When, key: str, text: str, what: str) -> tuple[bool, str]:
    pattern = when.regex(key)
    hit = pattern.search(text)
    if hit is None:
        return False, f"{key} {pattern.pattern!r} finds nothing in {what}"
    return True, f"{key} {pattern.pattern!r} finds {hit.group(0)[:40]!r} in {what}"


def _yes(flag: bool) -> str:
    return str(flag).lower()


def _and(held: bool) -> str:
    return "and" if held else "but"


# Each predicate: (fast test, explanation). The fast test builds no strings; the explanation
# returns the verdict with a sentence, and runs only when tracing.
Test = Callable[[When, Facts], bool]
Explain = Callable[[When, Facts], tuple[bool, str]]


def _has_tools(w: When, f: Facts) -> tuple[bool, str]:
    held = f.features.has_tools == w.has_tools
    offers = "offers tools" if f.features.has_tools else "offers no tools"
    return held, f"has_tools = {_yes(bool(w.has_tools))}, " + (
        f"and the request {offers}" if held else f"but the request {offers}"
    )


def _gt(w: When, f: Facts) -> tuple[bool, str]:
    n, est = w.tokens_in_gt, f.features.estimated_tokens
    assert n is not None
    held = est > n
    return held, f"tokens_in_gt = {n}, {_and(held)} the estimate is {est}"


def _lt(w: When, f: Facts) -> tuple[bool, str]:
    n, est = w.tokens_in_lt, f.features.estimated_tokens
    assert n is not None
    held = est < n
    return held, f"tokens_in_lt = {n}, {_and(held)} the estimate is {est}"


def _alias(w: When, f: Facts) -> tuple[bool, str]:
    held = f.request.model == w.model_alias_eq
    return held, (
        f"model_alias_eq = {w.model_alias_eq!r}, {_and(held)} the request asks "
        f"for {f.request.model!r}"
    )


def _images(w: When, f: Facts) -> tuple[bool, str]:
    held = f.features.has_images == w.has_images
    has = "has images" if f.features.has_images else "has no images"
    return held, f"has_images = {_yes(bool(w.has_images))}, {_and(held)} the request {has}"


def _max_tokens(w: When, f: Facts) -> tuple[bool, str]:
    n, asked = w.max_tokens_gt, f.request.max_tokens
    assert n is not None
    held = asked is not None and asked > n
    seen = "sets none" if asked is None else f"asks for {asked}"
    return held, f"max_tokens_gt = {n}, {_and(held)} the request {seen}"


def _profile(w: When, f: Facts) -> tuple[bool, str]:
    held = f.profile == w.profile_eq
    return held, f"profile_eq = {w.profile_eq!r}, {_and(held)} the profile is {f.profile!r}"


def _difficulty(w: When, f: Facts) -> tuple[bool, str]:
    wanted = w.difficulties()
    held = f.level in wanted
    return held, (f"difficulty in {list(wanted)}, {_and(held)} the request is {f.level!r}")


def _stream(w: When, f: Facts) -> tuple[bool, str]:
    held = f.request.stream == w.stream
    streams = "streams" if f.request.stream else "does not stream"
    return held, f"stream = {_yes(bool(w.stream))}, {_and(held)} the request {streams}"


def _turn(w: When, f: Facts) -> tuple[bool, str]:
    wanted = w.turns()
    held = f.features.turn in wanted
    return held, f"turn in {list(wanted)}, {_and(held)} the request is a {f.features.turn!r} turn"


def _effort(w: When, f: Facts) -> tuple[bool, str]:
    asked = f.features.effort
    held = (asked is not None) == w.effort
    seen = f"asks for {asked!r}" if asked is not None else "asks for none"
    return held, f"effort = {_yes(bool(w.effort))}, {_and(held)} the request {seen}"


PREDICATES: dict[str, tuple[Test, Explain]] = {
    "has_tools": (lambda w, f: f.features.has_tools == w.has_tools, _has_tools),
    "tokens_in_gt": (lambda w, f: f.features.estimated_tokens > w.tokens_in_gt, _gt),  # type: ignore[operator]
    "tokens_in_lt": (lambda w, f: f.features.estimated_tokens < w.tokens_in_lt, _lt),  # type: ignore[operator]
    "system_matches": (
        lambda w, f: w.regex("system_matches").search(f.features.system_text) is not None,
        lambda w, f: _found(w, "system_matches", f.features.system_text, "the system text"),
    ),
    "model_alias_eq": (lambda w, f: f.request.model == w.model_alias_eq, _alias),
    "header": (lambda w, f: _header(w, f)[0], _header),
    "prompt_matches": (
        lambda w, f: w.regex("prompt_matches").search(f.user_text) is not None,
        lambda w, f: _found(w, "prompt_matches", f.user_text, "the user messages"),
    ),
    "last_user_matches": (
        lambda w, f: w.regex("last_user_matches").search(f.last_user) is not None,
        lambda w, f: _found(w, "last_user_matches", f.last_user, "the last user message"),
    ),
    "has_images": (lambda w, f: f.features.has_images == w.has_images, _images),
    "max_tokens_gt": (
        lambda w, f: f.request.max_tokens is not None and f.request.max_tokens > w.max_tokens_gt,  # type: ignore[operator]
        _max_tokens,
    ),
    "client_matches": (
        lambda w, f: w.regex("client_matches").search(f.headers.get("user-agent", "")) is not None,
        lambda w, f: _found(w, "client_matches", f.headers.get("user-agent", ""), "the user agent"),
    ),
    "profile_eq": (lambda w, f: f.profile == w.profile_eq, _profile),
    "difficulty": (lambda w, f: f.level in w.difficulties(), _difficulty),
    "stream": (lambda w, f: f.request.stream == w.stream, _stream),
    "turn": (lambda w, f: f.features.turn in w.turns(), _turn),
    "effort": (lambda w, f: (f.features.effort is not None) == w.effort, _effort),
}


def holds(when: When, facts: Facts) -> bool:
    """Does `when` hold? Stops at the first predicate that fails."""
    if when.always:
        return True
    for key in CONDITIONS:
        value = getattr(when, key)
        if value is None:
            continue
        if key == "all_":
            if not all(holds(part, facts) for part in value):
                return False
        elif key == "any_":
            if not any(holds(part, facts) for part in value):
                return False
        elif key == "not_":
            if holds(value, facts):
                return False
        elif not PREDICATES[key][0](when, facts):
            return False
    return True


def explain(when: When, facts: Facts) -> tuple[bool, tuple[Check, ...]]:
    """Whether `when` holds, with every predicate evaluated and explained."""
    if when.always:
        return True, (Check("always", True, "always = true matches every request"),)
    checks: list[Check] = []
    for key in CONDITIONS:
        value = getattr(when, key)
        if value is None:
            continue
        name = field_key(When, key)
        if key in ("all_", "any_"):
            parts = [explain(part, facts) for part in value]
            held_n = sum(held for held, _ in parts)
            held = held_n == len(parts) if key == "all_" else held_n > 0
            children = tuple(
                Check(f"{name}[{i}]", h, "holds" if h else "fails", sub)
                for i, (h, sub) in enumerate(parts)
            )
            checks.append(Check(name, held, f"{held_n} of {len(parts)} hold", children))
        elif key == "not_":
            inner, sub = explain(value, facts)
            checks.append(
                Check(name, not inner, "the inner table " + ("holds" if inner else "fails"), sub)
            )
        else:
            held, detail = PREDICATES[key][1](when, facts)
            checks.append(Check(name, held, detail))
    return all(c.held for c in checks), tuple(checks)


def _first_failure(checks: Sequence[Check]) -> str:
    failed = next(c for c in checks if not c.held)
    if failed.key in ("any", "all", "not"):
        return f"{failed.key}: {failed.detail}"
    return failed.detail


def _describe_match(checks: Sequence[Check]) -> str:
    if checks[0].key == "always":
        return "always = true"
    held = [c.key for c in checks]
    return "all of " + ", ".join(held) + " hold" if len(held) > 1 else f"{held[0]} holds"


def first_match(
    rules: Sequence[Rule], facts: Facts, trace: list[RuleTrace] | None = None
) -> Rule | None:
    """The first rule whose predicate holds, or None; appends each rule tried to `trace`."""
    for rule in rules:
        if trace is None:
            if holds(rule.when, facts):
                return rule
            continue
        matched, checks = explain(rule.when, facts)
        reason = _describe_match(checks) if matched else _first_failure(checks)
        trace.append(RuleTrace(rule.name, matched, reason, checks))
        if matched:
            return rule
    return None


def resolve_target(target: str, headers: Mapping[str, str]) -> str:
    """`$header:<name>` -> that header's value when present; anything else unchanged."""
    if target.startswith(HEADER_TARGET):
        value = headers.get(target[len(HEADER_TARGET) :].lower())
        if value is not None:
            return value
    return target
