"""decide(): rules first, then policy; v0.1's routing_smoke tests on its mini config; images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pirouter_py.config import Config, load_config
from pirouter_py.errors import ConfigError, RoutingError
from pirouter_py.router import decide
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
