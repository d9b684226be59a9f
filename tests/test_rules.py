"""Every rule predicate, table-driven, plus $header: targets (v0.1 semantics)."""

from __future__ import annotations

from typing import Any

import pytest

from pirouter_py.config.rules import Rule, check_rules
from pirouter_py.routing.features import Difficulty, difficulty, extract
from pirouter_py.routing.rules import Facts, RuleTrace, first_match, resolve_target
from pirouter_py.types import ChatRequest, ToolSpec, text_message


def make_rule(when: dict[str, Any], name: str = "r") -> Rule:
    rule = Rule.model_validate({"name": name, "when": when, "then": {"primary": "m"}})
    problems: list[str] = []
    check_rules([rule], ["m"], lambda _p, m: problems.append(m), lambda _p, _m: None)
    assert not problems
    return rule


def request(
    prompt: str = "hello",
    *,
    system: str | None = None,
    tools: bool = False,
    model: str = "auto",
    **fields: Any,
) -> ChatRequest:
    messages = ([text_message("system", system)] if system is not None else []) + [
        text_message("user", prompt)
    ]
    return ChatRequest(model, tuple(messages), (ToolSpec("search"),) if tools else (), **fields)


def facts(
    req: ChatRequest, headers: dict[str, str] | None = None, profile: str = "balanced"
) -> Facts:
    headers = headers or {}
    features = extract(req)
    level: Difficulty = difficulty(req, features, headers)[0]
    return Facts(req, features, headers, profile, level)


def matches(when: dict[str, Any], req: ChatRequest, headers: dict[str, str] | None = None) -> bool:
    rule = make_rule(when)
    return first_match([rule], facts(req, headers)) is rule


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
    assert first_match(rules, facts(req), trace) is rules[1]
    assert [(t.name, t.matched, t.reason) for t in trace] == [
        ("tools", False, "has_tools = true, but the request offers no tools"),
        ("long", True, "tokens_in_gt holds"),
    ]


def test_no_rule_matches() -> None:
    req = request()
    assert first_match([make_rule({"has_tools": True})], facts(req)) is None


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


def conversation(*turns: tuple[str, str], **fields: Any) -> ChatRequest:
    return ChatRequest("auto", tuple(text_message(role, text) for role, text in turns), **fields)


TWO_TURNS = conversation(
    ("user", "write a limerick"), ("assistant", "There once..."), ("user", "now shorter")
)
UA = {"user-agent": "aider/0.60 python-requests"}

# (id, when, request, headers, profile, expected)
NEW_CASES: list[tuple[str, dict[str, Any], ChatRequest, dict[str, str], str, bool]] = [
    (
        "prompt_matches any user turn",
        {"prompt_matches": "limerick"},
        TWO_TURNS,
        {},
        "balanced",
        True,
    ),
    (
        "prompt_matches ignores assistant",
        {"prompt_matches": "There"},
        TWO_TURNS,
        {},
        "balanced",
        False,
    ),
    (
        "prompt_matches ignores system",
        {"prompt_matches": "poet"},
        request(system="poet"),
        {},
        "balanced",
        False,
    ),
    ("last_user_matches last", {"last_user_matches": "^now"}, TWO_TURNS, {}, "balanced", True),
    (
        "last_user_matches not earlier",
        {"last_user_matches": "limerick"},
        TWO_TURNS,
        {},
        "balanced",
        False,
    ),
    ("has_images false, none", {"has_images": False}, request(), {}, "balanced", True),
    ("has_images true, none", {"has_images": True}, request(), {}, "balanced", False),
    (
        "max_tokens_gt above",
        {"max_tokens_gt": 1000},
        request(max_tokens=4096),
        {},
        "balanced",
        True,
    ),
    (
        "max_tokens_gt equal",
        {"max_tokens_gt": 4096},
        request(max_tokens=4096),
        {},
        "balanced",
        False,
    ),
    ("max_tokens_gt unset", {"max_tokens_gt": 0}, request(), {}, "balanced", False),
    ("client_matches", {"client_matches": "(?i)^aider/"}, request(), UA, "balanced", True),
    ("client_matches other", {"client_matches": "^Continue"}, request(), UA, "balanced", False),
    ("client_matches no agent", {"client_matches": "."}, request(), {}, "balanced", False),
    ("profile_eq", {"profile_eq": "local-first"}, request(), {}, "local-first", True),
    ("profile_eq other", {"profile_eq": "local-first"}, request(), {}, "balanced", False),
    ("difficulty one", {"difficulty": "easy"}, request("hi"), {}, "balanced", True),
    (
        "difficulty list",
        {"difficulty": ["standard", "hard"]},
        request("debug it"),
        {},
        "balanced",
        True,
    ),
    ("difficulty miss", {"difficulty": "hard"}, request("hi"), {}, "balanced", False),
    (
        "difficulty from header",
        {"difficulty": "hard"},
        request("hi"),
        {"x-pirouter-difficulty": "premium"},
        "balanced",
        True,
    ),
    ("stream true", {"stream": True}, request(stream=True), {}, "balanced", True),
    ("stream false", {"stream": False}, request(stream=True), {}, "balanced", False),
    (
        "any: one holds",
        {"any": [{"stream": True}, {"has_tools": True}]},
        request(tools=True),
        {},
        "balanced",
        True,
    ),
    (
        "any: none holds",
        {"any": [{"stream": True}, {"has_tools": True}]},
        request(),
        {},
        "balanced",
        False,
    ),
    (
        "all: both hold",
        {"all": [{"stream": True}, {"has_tools": True}]},
        request(tools=True, stream=True),
        {},
        "balanced",
        True,
    ),
    (
        "all: one fails",
        {"all": [{"stream": True}, {"has_tools": True}]},
        request(tools=True),
        {},
        "balanced",
        False,
    ),
    ("not", {"not": {"has_tools": True}}, request(), {}, "balanced", True),
    ("not fails", {"not": {"has_tools": True}}, request(tools=True), {}, "balanced", False),
    ("not not", {"not": {"not": {"stream": True}}}, request(stream=True), {}, "balanced", True),
    (
        "nested any inside all inside not",
        {"not": {"all": [{"stream": True}, {"any": [{"has_tools": True}, {"max_tokens_gt": 10}]}]}},
        request(stream=True, max_tokens=50),
        {},
        "balanced",
        False,
    ),
    (
        "keys and combinators AND together",
        {"stream": True, "any": [{"has_tools": True}]},
        request(tools=True),
        {},
        "balanced",
        False,
    ),
    (
        "always inside any",
        {"any": [{"has_tools": True}, {"always": True}]},
        request(),
        {},
        "balanced",
        True,
    ),
]


@pytest.mark.parametrize(
    ("when", "req", "headers", "profile", "expected"),
    [c[1:] for c in NEW_CASES],
    ids=[c[0] for c in NEW_CASES],
)
def test_new_predicates_and_combinators(
    when: dict[str, Any], req: ChatRequest, headers: dict[str, str], profile: str, expected: bool
) -> None:
    rule = make_rule(when)
    assert (first_match([rule], facts(req, headers, profile)) is rule) is expected
    # The traced path (pirouter route) must agree with the fast path (the daemon).
    trace: list[RuleTrace] = []
    assert (first_match([rule], facts(req, headers, profile), trace) is rule) is expected
    assert trace[0].matched is expected


def test_trace_explains_every_predicate_even_after_one_fails() -> None:
    rule = make_rule(
        {
            "has_tools": True,
            "prompt_matches": "limerick",
            "any": [{"stream": True}, {"client_matches": "aider"}],
            "not": {"difficulty": "hard"},
        }
    )
    trace: list[RuleTrace] = []
    assert first_match([rule], facts(TWO_TURNS, UA), trace) is None
    checks = {c.key: c for c in trace[0].checks}
    assert list(checks) == ["has_tools", "prompt_matches", "any", "not"]
    assert not checks["has_tools"].held
    assert checks["prompt_matches"].held
    assert "'limerick'" in checks["prompt_matches"].detail
    assert checks["any"].held and checks["any"].detail == "1 of 2 hold"
    assert [c.held for c in checks["any"].children] == [False, True]
    assert "aider" in checks["any"].children[1].children[0].detail
    assert checks["not"].held
    assert trace[0].reason == "has_tools = true, but the request offers no tools"


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        ({"any": []}, "empty array"),
        ({"not": {}}, "empty predicate"),
        ({"all": [{"prompt_matches": "("}]}, "invalid prompt_matches regex"),
        ({"client_matches": "[a"}, "invalid client_matches regex"),
    ],
)
def test_bad_rule_tables_are_reported(when: dict[str, Any], problem: str) -> None:
    rule = Rule.model_validate({"name": "r", "when": when, "then": {"primary": "m"}})
    problems: list[tuple[Any, str]] = []
    check_rules([rule], ["m"], lambda p, m: problems.append((p, m)), lambda _p, _m: None)
    assert problems and problem in problems[0][1]
