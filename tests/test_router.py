"""decide(): rules first, then policy; v0.1's routing_smoke tests on its mini config; images."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pirouter_py.config import Config, load_config
from pirouter_py.errors import ConfigError, RoutingError
from pirouter_py.routing.decide import decide
from pirouter_py.types import ChatRequest, ImagePart, Message, TextPart, ToolSpec, text_message
from tests.conftest import EXAMPLE


def ask(prompt: str, tools: bool = False) -> ChatRequest:
    return ChatRequest(
        "auto", (text_message("user", prompt),), (ToolSpec("search", None, {}),) if tools else ()
    )


def with_image(prompt: str = "what is this") -> ChatRequest:
    return ChatRequest("auto", (Message("user", (TextPart(prompt), ImagePart("https://e/x.png"))),))


def test_short_request_hits_default(mini_config: Config) -> None:
    d = decide(mini_config, ask("hello"), {})
    assert (d.rule, d.primary, d.cascade, d.source) == ("default", "haiku", ("sonnet",), "rule")


def test_long_request_routes_to_sonnet(mini_config: Config) -> None:
    d = decide(mini_config, ask("x" * 5000), {})
    assert (d.rule, d.primary, d.cascade) == ("long-context", "sonnet", ("opus",))
    assert d.features.estimated_tokens == 1670


def test_tool_use_takes_precedence_over_default(mini_config: Config) -> None:
    assert decide(mini_config, ask("hi", tools=True), {}).rule == "tool-use"


def test_validates_unknown_alias(write_config: Callable[[str], Path]) -> None:
    path = write_config(
        '[providers.anthropic]\n[models.haiku]\nprovider = "anthropic"\n'
        'model_id = "h"\n[[rules]]\nname = "broken"\nwhen = { always = true }\n'
        'then = { primary = "does-not-exist" }\n'
    )
    with pytest.raises(ConfigError, match="unknown model alias `does-not-exist`"):
        load_config(path)


def test_rejects_empty_predicate(write_config: Callable[[str], Path]) -> None:
    path = write_config(
        '[providers.anthropic]\n[models.haiku]\nprovider = "anthropic"\n'
        'model_id = "h"\n[[rules]]\nname = "empty"\nwhen = {}\n'
        'then = { primary = "haiku" }\n'
    )
    with pytest.raises(ConfigError, match="empty predicate"):
        load_config(path)


def test_header_override_in_example_config(example_config: Config) -> None:
    d = decide(example_config, ask("hello"), {"x-pirouter-route": "opus"}, explain=True)
    assert (d.rule, d.primary, d.cascade) == ("explicit-override", "opus", ())
    assert [(t.name, t.matched) for t in d.rule_traces] == [("explicit-override", True)]


def test_empty_header_value_is_an_unknown_alias(write_config: Callable[[str], Path]) -> None:
    text = EXAMPLE.read_text() + (
        '[[rules]]\nname = "pin"\nwhen = { always = true }\nthen = { primary = "$header:x-pin" }\n'
    )
    cfg = load_config(write_config(text)).config
    # An empty header fails any_value (v0.1), but a present, empty value still becomes the alias.
    with pytest.raises(RoutingError, match=r"^rule `pin` selected unknown model alias ``$"):
        decide(cfg, ask("hello"), {"x-pin": "", "x-pirouter-route": ""})
    with pytest.raises(
        RoutingError, match=r"^rule `pin` selected unknown model alias `\$header:x-pin`$"
    ):
        decide(cfg, ask("hello"), {})


def test_rule_to_a_model_without_vision_is_a_clear_error(example_config: Config) -> None:
    with pytest.raises(RoutingError) as caught:
        decide(example_config, with_image(), {"x-pirouter-route": "haiku"})
    assert caught.value.message == (
        "rule `explicit-override` selected `haiku`, which does not accept images "
        "(supports_vision = false); send the request without images or route it to a model "
        "with supports_vision = true"
    )
    assert caught.value.http_status == 400


def test_rule_cascade_leaves_out_models_without_vision(write_config: Callable[[str], Path]) -> None:
    text = EXAMPLE.read_text() + (
        '[[rules]]\nname = "vision"\nwhen = { always = true }\n'
        'then = { primary = "gpt-4o", cascade = ["haiku", "sonnet"] }\n'
    )
    cfg = load_config(write_config(text)).config
    d = decide(cfg, with_image(), {})
    assert (d.primary, d.cascade) == ("gpt-4o", ("sonnet",))
    assert d.notes == ("left out of the cascade, no image input: haiku",)
    assert decide(cfg, ask("plain"), {}).cascade == ("haiku", "sonnet")


def test_rule_targets_are_not_capped_or_capability_checked(mini_config: Config) -> None:
    # v0.1: a matched rule's list is used as written (no tool, context or enabled check).
    d = decide(mini_config, ask("x" * 700000), {})
    assert (d.primary, d.cascade) == ("sonnet", ("opus",))


CATALOG = """
[providers.ollama]
[providers.anthropic]
api_key = "x"
[models.local]
provider = "ollama"
model_id = "l"
quality = "basic"
local = true
[models.haiku]
provider = "anthropic"
model_id = "h"
quality = "basic"
input_per_m = 1.0
[models.sonnet]
provider = "anthropic"
model_id = "s"
quality = "strong"
input_per_m = 3.0
"""


def test_then_profile_hands_the_request_to_the_policy(write_config: Callable[[str], Path]) -> None:
    cfg = load_config(
        write_config(
            CATALOG + '[[rules]]\nname = "chat"\nwhen = { stream = true }\n'
            'then = { profile = "best-quality" }\n'
        )
    ).config
    streamed = ChatRequest("auto", (text_message("user", "hi"),), stream=True)
    d = decide(cfg, streamed, {})
    assert (d.rule, d.source, d.profile, d.primary) == ("chat", "policy", "best-quality", "sonnet")
    assert d.candidates == ()  # no explanation asked for
    assert any("hands the request to the policy (policy:best-quality:easy)" in n for n in d.notes)
    # The rule does not match a non-streaming request: the configured profile routes it.
    assert decide(cfg, ask("hi"), {}).primary == "local"


def test_then_difficulty_overrides_the_estimate(write_config: Callable[[str], Path]) -> None:
    cfg = load_config(
        write_config(
            CATALOG
            + '[[rules]]\nname = "sql"\nwhen = { prompt_matches = "(?i)\\\\bselect\\\\b" }\n'
            'then = { difficulty = "hard" }\n'
        )
    ).config
    d = decide(cfg, ask("SELECT 1"), {}, explain=True)
    assert (d.rule, d.difficulty, d.primary) == ("sql", "hard", "sonnet")
    assert d.difficulty_reason == "rule `sql` sets difficulty"
    assert d.candidates  # explained like any policy decision
    assert decide(cfg, ask("hello"), {}).primary == "local"


def test_profile_header_and_profile_eq(write_config: Callable[[str], Path]) -> None:
    cfg = load_config(
        write_config(
            CATALOG + '[[rules]]\nname = "local"\nwhen = { profile_eq = "local-first" }\n'
            'then = { primary = "local" }\n'
        )
    ).config
    assert decide(cfg, ask("hi"), {"x-pirouter-profile": "Local-First"}).rule == "local"
    assert decide(cfg, ask("hi"), {"x-pirouter-profile": "nonsense"}).rule.startswith("policy:")
    d = decide(cfg, ask("hi"), {"x-pirouter-profile": "best-quality"})
    assert (d.profile, d.primary) == ("best-quality", "sonnet")


def test_rule_escalation_overrides_cascade_triggers(write_config: Callable[[str], Path]) -> None:
    cfg = load_config(
        write_config(
            CATALOG + "[cascade]\non_short_response = false\nmin_output_tokens = 8\n"
            '[[rules]]\nname = "strict"\nwhen = { has_tools = true }\n'
            'then = { primary = "haiku", cascade = ["sonnet"], '
            "escalation = { on_short_response = true, min_output_tokens = 50 } }\n"
        )
    ).config
    d = decide(cfg, ask("hi", tools=True), {})
    assert d.escalation is not None
    assert (d.escalation.on_short_response, d.escalation.min_output_tokens) == (True, 50)
    assert d.escalation.on_http_error is True  # unset keys keep [cascade]'s
    assert decide(cfg, ask("hi"), {}).escalation is None


@pytest.mark.parametrize(
    ("then", "problem"),
    [
        ("{ }", "says nothing to do"),
        ('{ primary = "haiku", profile = "balanced" }', "keep one of them"),
        ('{ cascade = ["haiku"], difficulty = "easy" }', "has a cascade but no primary"),
        ('{ profile = "fastest" }', '"fastest" is not one of'),
        ('{ primary = "haiku", escalation = { retries = -1 } }', "must be at least 0"),
    ],
)
def test_bad_then_tables(write_config: Callable[[str], Path], then: str, problem: str) -> None:
    path = write_config(
        CATALOG + f'[[rules]]\nname = "r"\nwhen = {{ always = true }}\nthen = {then}\n'
    )
    with pytest.raises(ConfigError, match=problem) as caught:
        load_config(path)
    assert f"{path}:" in str(caught.value)  # located in the file


def test_the_example_configs_commented_rules_load(write_config: Callable[[str], Path]) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    # each commented rule runs to the first blank line (what follows is other sections')
    blocks = [b.split("\n\n", 1)[0] for b in text.split("# [[rules]]\n")[1:]]
    assert len(blocks) >= 4
    uncommented = "".join(
        "[[rules]]\n"
        + "".join(line[2:] + "\n" for line in b.splitlines() if re.match(r"# [a-z]+ = ", line))
        for b in blocks
    )
    # The example's sample rules name sonnet/opus/gpt-4o-mini, which the example declares.
    loaded = load_config(write_config(text + "\n" + uncommented))
    names = [r.name for r in loaded.config.rules]
    assert "agents-not-streaming-or-long" in names and "chit-chat-stays-local" in names
