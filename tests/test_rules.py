"""Every rule predicate, table-driven, plus $header: targets (v0.1 semantics)."""

from __future__ import annotations

from typing import Any

import pytest

from pirouter_py.config import Rule
from pirouter_py.features import extract
from pirouter_py.rules import RuleTrace, first_match, resolve_target
from pirouter_py.types import ChatRequest, ToolSpec, text_message


def make_rule(when: dict[str, Any], name: str = "r") -> Rule:
    import re

    rule = Rule.model_validate({"name": name, "when": when, "then": {"primary": "m"}})
    if rule.when.system_matches is not None:
        rule._system_re = re.compile(rule.when.system_matches)
    return rule


def request(
    prompt: str = "hello", *, system: str | None = None, tools: bool = False, model: str = "auto"
) -> ChatRequest:
    messages = ([text_message("system", system)] if system is not None else []) + [
        text_message("user", prompt)
    ]
    return ChatRequest(model, tuple(messages), (ToolSpec("search"),) if tools else ())


def matches(when: dict[str, Any], req: ChatRequest, headers: dict[str, str] | None = None) -> bool:
    rule = make_rule(when)
    return first_match([rule], req, extract(req), headers or {}) is rule


CASES: list[tuple[str, dict[str, Any], ChatRequest, dict[str, str], bool]] = [
    ("always", {"always": True}, request(system=""), {}, True),
    ("always ignores other keys", {"always": True, "has_tools": True}, request(), {}, True),
    ("has_tools true, tools", {"has_tools": True}, request(tools=True), {}, True),
    ("has_tools true, none", {"has_tools": True}, request(), {}, False),
    ("has_tools false, none", {"has_tools": False}, request(), {}, True),
    ("has_tools false, tools", {"has_tools": False}, request(tools=True), {}, False),
    ("tokens_in_gt above", {"tokens_in_gt": 6}, request("hello world"), {}, True),  # 7
    ("tokens_in_gt equal", {"tokens_in_gt": 7}, request("hello world"), {}, False),
    ("tokens_in_lt below", {"tokens_in_lt": 8}, request("hello world"), {}, True),
    ("tokens_in_lt equal", {"tokens_in_lt": 7}, request("hello world"), {}, False),
    (
        "system regex (?i)",
        {"system_matches": "(?i)coding"},
        request(system="You are a Coding assistant"),
        {},
        True,
    ),
    (
        "system regex no match",
        {"system_matches": "(?i)coding"},
        request(system="You are a poet"),
        {},
        False,
    ),
    ("system regex, no system", {"system_matches": "^$"}, request(), {}, True),
    ("system regex unanchored", {"system_matches": "poet"}, request(system="a poet."), {}, True),
    ("system regex ignores user", {"system_matches": "hello"}, request("hello"), {}, False),
    ("model_alias_eq", {"model_alias_eq": "sonnet"}, request(model="sonnet"), {}, True),
    ("model_alias_eq case", {"model_alias_eq": "sonnet"}, request(model="Sonnet"), {}, False),
    (
        "header equals",
        {"header": {"name": "X-Team", "equals": "infra"}},
        request(),
        {"x-team": "infra"},
        True,
    ),
    (
        "header equals other",
        {"header": {"name": "x-team", "equals": "infra"}},
        request(),
        {"x-team": "Infra"},
        False,
    ),
    (
        "header equals absent",
        {"header": {"name": "x-team", "equals": "infra"}},
        request(),
        {},
        False,
    ),
    (
        "header any_value",
        {"header": {"name": "x-foo", "any_value": True}},
        request(),
        {"x-foo": "bar"},
        True,
    ),
    (
        "header any_value empty",
        {"header": {"name": "x-foo", "any_value": True}},
        request(),
        {"x-foo": ""},
        False,
    ),
    (
        "header any_value absent",
        {"header": {"name": "x-foo", "any_value": True}},
        request(),
        {},
        False,
    ),
    (
        "header equals wins over any_value",
        {"header": {"name": "x-foo", "equals": "a", "any_value": True}},
        request(),
        {"x-foo": "b"},
        False,
    ),
    ("header neither", {"header": {"name": "x-foo"}}, request(), {"x-foo": "bar"}, False),
    ("all must hold", {"has_tools": True, "tokens_in_lt": 100}, request(tools=True), {}, True),
    ("one fails", {"has_tools": True, "tokens_in_gt": 100}, request(tools=True), {}, False),
]


@pytest.mark.parametrize(
    ("when", "req", "headers", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_predicate(
    when: dict[str, Any], req: ChatRequest, headers: dict[str, str], expected: bool
) -> None:
    assert matches(when, req, headers) is expected


def test_first_match_wins_and_traces_each_rule_tried() -> None:
    rules = [
        make_rule({"has_tools": True}, "tools"),
        make_rule({"tokens_in_gt": 1}, "long"),
        make_rule({"always": True}, "default"),
    ]
    req = request("hello world")
    trace: list[RuleTrace] = []
    assert first_match(rules, req, extract(req), {}, trace) is rules[1]
    assert trace == [
        RuleTrace("tools", False, "has_tools = true, but the request offers no tools"),
        RuleTrace("long", True, "tokens_in_gt holds"),
    ]


def test_no_rule_matches() -> None:
    req = request()
    assert first_match([make_rule({"has_tools": True})], req, extract(req), {}) is None


@pytest.mark.parametrize(
    ("target", "headers", "expected"),
    [
        ("sonnet", {"x-pirouter-route": "opus"}, "sonnet"),
        ("$header:x-pirouter-route", {"x-pirouter-route": "opus"}, "opus"),
        ("$header:X-Pirouter-Route", {"x-pirouter-route": "opus"}, "opus"),
        ("$header:x-pirouter-route", {"x-pirouter-route": ""}, ""),
        ("$header:x-pirouter-route", {}, "$header:x-pirouter-route"),
    ],
)
def test_header_targets(target: str, headers: dict[str, str], expected: str) -> None:
    assert resolve_target(target, headers) == expected
