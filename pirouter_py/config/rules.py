"""The `[[rules]]` tables: their pydantic models and their checks at load.

v0.1's `when` keys (`always`, `has_tools`, `tokens_in_gt`, `tokens_in_lt`, `system_matches`,
`model_alias_eq`, `header`) keep their meaning. Added predicates: `prompt_matches`,
`last_user_matches`, `has_images`, `max_tokens_gt`, `client_matches`, `profile_eq`, `difficulty`,
`stream`; and composition with `any = [...]`, `all = [...]`, `not = {...}`, nestable. Every
predicate set in one table must hold. `then` names models (`primary`, `cascade`) as in v0.1, or
hands the request to the policy (`profile`, `difficulty`), and may override the `[cascade]`
escalation triggers for the requests it takes (`escalation = {...}`).

Regexes are compiled once, here, and kept on the table that holds them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

HEADER_TARGET = "$header:"
Profile = Literal["local-first", "balanced", "best-quality", "cloud-only"]
DifficultyName = Literal["easy", "standard", "hard"]
TurnName = Literal["user", "tool_result", "background", "compaction", "subagent"]
KeyPath = tuple[str | int, ...]
Report = Callable[[KeyPath, str], None]

# Predicates that take a regex, and what each one searches.
REGEX_KEYS = ("system_matches", "prompt_matches", "last_user_matches", "client_matches")
# Every `when` key that is a condition (besides `always`), in evaluation order.
CONDITIONS = (
    "has_tools",
    "tokens_in_gt",
    "tokens_in_lt",
    "system_matches",
    "model_alias_eq",
    "header",
    "prompt_matches",
    "last_user_matches",
    "has_images",
    "max_tokens_gt",
    "client_matches",
    "profile_eq",
    "difficulty",
    "stream",
    "turn",
    "effort",
    "all_",
    "any_",
    "not_",
)


class _Table(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True, populate_by_name=True)


class HeaderMatch(_Table):
    name: str
    equals: str | None = None
    any_value: bool = False

    @field_validator("name")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class When(_Table):
    always: bool = False
    has_tools: bool | None = None
    tokens_in_gt: int | None = Field(default=None, ge=0)
    tokens_in_lt: int | None = Field(default=None, ge=0)
    system_matches: str | None = None  # regex over the system messages' text
    model_alias_eq: str | None = None
    header: HeaderMatch | None = None
    prompt_matches: str | None = None  # regex over every user message's text
    last_user_matches: str | None = None  # regex over the last user message's text
    has_images: bool | None = None
    max_tokens_gt: int | None = Field(default=None, ge=0)  # the client's max_tokens
    client_matches: str | None = None  # regex over the User-Agent header
    profile_eq: Profile | None = None  # the profile in effect for this request
    difficulty: DifficultyName | list[DifficultyName] | None = None  # the estimated difficulty
    stream: bool | None = None
    turn: TurnName | list[TurnName] | None = None  # the kind of turn (agent traffic)
    effort: bool | None = None  # the client asked for thinking or a reasoning effort
    all_: list[When] | None = Field(default=None, alias="all")
    any_: list[When] | None = Field(default=None, alias="any")
    not_: When | None = Field(default=None, alias="not")
    _regex: dict[str, re.Pattern[str]] = PrivateAttr(default_factory=dict)

    def is_empty(self) -> bool:
        """No effective condition: v0.1 rejects such a rule at load."""
        return not self.always and all(getattr(self, key) is None for key in CONDITIONS)

    def regex(self, key: str) -> re.Pattern[str]:
        """The compiled regex of a `*_matches` key that is set (compiled at load)."""
        return self._regex[key]

    def difficulties(self) -> tuple[str, ...]:
        d = self.difficulty
        return () if d is None else (d,) if isinstance(d, str) else tuple(d)

    def turns(self) -> tuple[str, ...]:
        t = self.turn
        return () if t is None else (t,) if isinstance(t, str) else tuple(t)


class Escalation(_Table):
    """Per-rule overrides of `[cascade]` triggers; unset keys keep the `[cascade]` value."""

    on_http_error: bool | None = None
    on_short_response: bool | None = None
    min_output_tokens: int | None = Field(default=None, ge=0)
    min_output_chars: int | None = Field(default=None, ge=0)
    on_marker: str | None = None
    on_truncated: bool | None = None
    on_empty: bool | None = None
    require_match: str | None = None
    forbid_match: str | None = None
    json_check: bool | None = Field(default=None, alias="json")
    tool_calls_valid: bool | None = None
    refusal: bool | None = None
    repetition: bool | None = None
    retries: int | None = Field(default=None, ge=0)

    @field_validator("require_match", "forbid_match")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a regular expression ({exc})") from None
        return value

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Then(_Table):
    primary: str | None = None
    cascade: list[str] = Field(default_factory=list)
    profile: Profile | None = None  # hand the request to the policy with this profile
    difficulty: DifficultyName | None = None  # ... and/or with this difficulty
    escalation: Escalation | None = None
    # A stream cut after it began is continued by the chain's next model, spliced into the same
    # answer; false where exactness matters (the cut then ends the stream with an error event).
    continue_on_cut: bool = True


class Rule(_Table):
    name: str
    when: When
    then: Then
    _cascade: Any = PrivateAttr(default=None)  # the [cascade] merged with then.escalation

    @property
    def cascade_config(self) -> Any:
        """This rule's escalation settings, or None when it keeps `[cascade]`'s."""
        return self._cascade


When.model_rebuild()


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """ "; did you mean `x`?" for the closest choice, or ""."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


def field_key(model: type[BaseModel], name: str) -> str:
    """The TOML key of a field (its alias when it has one)."""
    return model.model_fields[name].alias or name


def check_rules(rules: Sequence[Rule], aliases: Sequence[str], error: Report, warn: Report) -> None:
    """v0.1's rule checks (reference §2.9) plus the new forms; compiles every regex."""
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        at: KeyPath = ("rules", index)
        if rule.name in seen:
            error(
                (*at, "name"),
                f"rule name `{rule.name}` is already used by rules[{seen[rule.name]}]; "
                "give each rule its own name",
            )
        seen.setdefault(rule.name, index)
        _check_when(rule, rule.when, (*at, "when"), error, warn)
        then = rule.then
        if then.primary is None and then.profile is None and then.difficulty is None:
            error(
                (*at, "then"),
                f"rule `{rule.name}` says nothing to do; give `primary` (and `cascade`) to name "
                "models, or `profile` and/or `difficulty` to hand the request to the policy",
            )
        if then.primary is not None and then.profile is not None:
            error(
                (*at, "then", "profile"),
                f"rule `{rule.name}` names models (primary) and a profile; keep one of them",
            )
        if then.primary is None and then.cascade:
            error(
                (*at, "then", "cascade"),
                f"rule `{rule.name}` has a cascade but no primary; add `primary`",
            )
        targets = [("primary", then.primary)] if then.primary is not None else []
        targets += [("cascade", a) for a in then.cascade]
        for key, target in targets:
            if not target.startswith(HEADER_TARGET) and target not in aliases:
                error(
                    (*at, "then", key),
                    f"rule `{rule.name}` references unknown model alias `{target}`"
                    + did_you_mean(target, aliases),
                )


def _check_when(rule: Rule, when: When, at: KeyPath, error: Report, warn: Report) -> None:
    if when.is_empty():
        error(
            at,
            f"rule `{rule.name}` has an empty predicate; use `always = true` for a default rule",
        )
    for key in REGEX_KEYS:
        pattern = getattr(when, key)
        if pattern is not None:
            try:
                when._regex[key] = re.compile(pattern)
            except re.error as exc:
                error((*at, key), f"rule `{rule.name}` has invalid {key} regex `{pattern}`: {exc}")
    header = when.header
    if header is not None and header.equals is None and not header.any_value:
        warn(
            (*at, "header"),
            "has neither `equals` nor `any_value = true`, so it never matches; add one of them",
        )
    for name in ("all_", "any_"):
        parts: list[When] | None = getattr(when, name)
        if parts is None:
            continue
        key = field_key(When, name)
        if not parts:
            error((*at, key), "is an empty array; list at least one table like { stream = true }")
        for i, part in enumerate(parts):
            _check_when(rule, part, (*at, key, i), error, warn)
    if when.not_ is not None:
        _check_when(rule, when.not_, (*at, "not"), error, warn)
