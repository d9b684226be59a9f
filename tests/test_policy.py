"""The profile router on v0.1's example catalog, every profile; expectations derived by hand.

The catalog (alias: quality rank, in+out $/M, context, tools, local):
  gpt-4o 2 12.5 128k T · gpt-4o-mini 1 0.75 128k T · haiku 0 4.8 200k T ·
  llama3.2-local 0 0 8192 - local · opus 3 90 200k T · qwen2.5-coder-local 1 0 32768 T local ·
  sonnet 2 18 200k T
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pirouter_py.config import Config, LoadedConfig, load_config
from pirouter_py.errors import RoutingError
from pirouter_py.routing.decide import decide
from pirouter_py.types import ChatRequest, ImagePart, Message, TextPart, ToolSpec, text_message

LOCAL_EASY = ("llama3.2-local", ("haiku", "qwen2.5-coder-local", "gpt-4o-mini"))
HARD = ("gpt-4o", ("sonnet", "opus"))
TOP = ("opus", ())

# prompt, tools, profile -> (primary, cascade), derived from reference §3.3–3.5.
TABLE: list[tuple[str, bool, str, tuple[str, tuple[str, ...]]]] = [
    # easy (needs basic): balanced orders by distance from basic, then cost, then local first
    ("hello world", False, "balanced", LOCAL_EASY),
    ("hello world", False, "local-first", LOCAL_EASY),
    ("hello world", False, "best-quality", TOP),
    ("hello world", False, "cloud-only", ("haiku", ("gpt-4o-mini", "gpt-4o", "sonnet"))),
    # hard (keyword "debug"; needs strong): gpt-4o is the cheapest strong model
    ("debug this distributed SQL migration", False, "balanced", HARD),
    ("debug this distributed SQL migration", False, "local-first", HARD),
    ("debug this distributed SQL migration", False, "best-quality", TOP),
    ("debug this distributed SQL migration", False, "cloud-only", HARD),
    # tools make it hard; llama3.2-local has no tools
    ("search the web for me", True, "balanced", HARD),
    ("search the web for me", True, "local-first", HARD),
    ("search the web for me", True, "best-quality", TOP),
    ("search the web for me", True, "cloud-only", HARD),
    # standard (keyword "translate"): qwen is standard and free
    (
        "translate this paragraph",
        False,
        "balanced",
        ("qwen2.5-coder-local", ("gpt-4o-mini", "gpt-4o", "sonnet")),
    ),
    (
        "translate this paragraph",
        False,
        "local-first",
        ("qwen2.5-coder-local", ("gpt-4o-mini", "gpt-4o", "sonnet")),
    ),
    ("translate this paragraph", False, "best-quality", TOP),
    (
        "translate this paragraph",
        False,
        "cloud-only",
        ("gpt-4o-mini", ("gpt-4o", "sonnet", "opus")),
    ),
    # size: 5000 x is easy (1670 tokens); 30000 x is standard and too long for llama (10004);
    # 100000 x is hard and too long for qwen too (33337)
    ("x" * 5000, False, "balanced", LOCAL_EASY),
    ("x" * 30000, False, "balanced", ("qwen2.5-coder-local", ("gpt-4o-mini", "gpt-4o", "sonnet"))),
    (
        "x" * 30000,
        False,
        "local-first",
        ("qwen2.5-coder-local", ("gpt-4o-mini", "gpt-4o", "sonnet")),
    ),
    ("x" * 100000, False, "balanced", HARD),
    ("x" * 100000, False, "best-quality", TOP),
    # the keyword fix: "decode" is not "code" (v0.1 routed this as standard)
    ("decode this", False, "balanced", LOCAL_EASY),
]


@pytest.fixture
def example_config(example: LoadedConfig) -> Config:
    """v0.1's example catalog as v0.1 routes it: agent-aware turns off."""
    config = example.config
    return config.model_copy(update={"routing": config.routing.model_copy(update={"turns": False})})


def ask(prompt: str, tools: bool = False, model: str = "auto") -> ChatRequest:
    return ChatRequest(
        model,
        (text_message("user", prompt),),
        (ToolSpec("tool", None, {"type": "object", "properties": {}}),) if tools else (),
    )


@pytest.mark.parametrize(
    ("prompt", "tools", "profile", "expected"),
    TABLE,
    ids=[f"{t[2]}-{t[0][:20]}-{'tools' if t[1] else 'plain'}" for t in TABLE],
)
def test_every_profile_on_the_example_catalog(
    example_config: Config,
    prompt: str,
    tools: bool,
    profile: str,
    expected: tuple[str, tuple[str, ...]],
) -> None:
    decision = decide(example_config, ask(prompt, tools), {}, profile=profile)  # type: ignore[arg-type]
    assert (decision.primary, decision.cascade) == expected
    assert decision.rule == f"policy:{profile}:{decision.difficulty}"


def test_requested_model_is_ignored_by_the_policy(example_config: Config) -> None:
    decision = decide(example_config, ask("translate this paragraph", model="sonnet"), {})
    assert (decision.rule, decision.primary) == ("policy:balanced:standard", "qwen2.5-coder-local")


# --- v0.1's policy unit tests (src/router/policy.rs) -------------------------------------------

TWO = """
[providers.ollama]
base_url = "http://127.0.0.1:11434"
[providers.anthropic]
base_url = "https://api.anthropic.com"
api_key = "x"
[models.tiny-local]
provider = "ollama"
model_id = "llama3.2:3b"
quality = "basic"
context_window = 8192
local = true
[models.sonnet]
provider = "anthropic"
model_id = "claude-sonnet"
input_per_m = 3
output_per_m = 15
quality = "strong"
context_window = 200000
supports_tools = true
supports_vision = true
"""


@pytest.fixture
def two(write_config: Callable[[str], Path]) -> Callable[[str], Config]:
    return lambda extra: load_config(write_config(TWO + extra)).config


def test_local_first_uses_local_for_easy_prompt(two: Callable[[str], Config]) -> None:
    cfg = two('[routing]\nprofile = "local-first"\n')
    assert decide(cfg, ask("hello"), {}).primary == "tiny-local"


def test_hard_prompt_uses_strong_model(two: Callable[[str], Config]) -> None:
    cfg = two("")
    assert decide(cfg, ask("debug this distributed race condition"), {}).primary == "sonnet"


def test_header_override_must_name_known_alias(two: Callable[[str], Config]) -> None:
    cfg = two(
        '[[rules]]\nname = "override"\nwhen = { header = { name = "x-pirouter-route", '
        'any_value = true } }\nthen = { primary = "$header:x-pirouter-route" }\n'
    )
    with pytest.raises(RoutingError) as caught:
        decide(cfg, ask("hello"), {"x-pirouter-route": "missing"})
    assert caught.value.message == "rule `override` selected unknown model alias `missing`"


def test_difficulty_header_overrides_heuristic(two: Callable[[str], Config]) -> None:
    cfg = two('[routing]\nprofile = "local-first"\n')
    decision = decide(
        cfg, ask("debug this distributed race condition"), {"x-pirouter-difficulty": "easy"}
    )
    assert (decision.primary, decision.rule) == ("tiny-local", "policy:local-first:easy")


# --- edges ---------------------------------------------------------------------------------------


def with_image(prompt: str, tools: bool = False) -> ChatRequest:
    offered = (ToolSpec("tool", None, {"type": "object", "properties": {}}),) if tools else ()
    return ChatRequest(
        "auto", (Message("user", (TextPart(prompt), ImagePart("https://e.x/cat.png"))),), offered
    )


SONNET_OFF = ('model_id = "claude-sonnet"\n', 'model_id = "claude-sonnet"\nenabled = false\n')
TINY_OFF = ('model_id = "llama3.2:3b"\n', 'model_id = "llama3.2:3b"\nenabled = false\n')
NO_VISION = ("supports_vision = true\n", "")
TINY_SEES = ("local = true\n", "local = true\nsupports_vision = true\n")
ASKED = "(request: profile = "
# edits of TWO, [routing] profile, request -> the message: the constraint that failed first, in
# the config's own spelling, what to do, then what the request asked
NOTHING_FITS: list[tuple[tuple[tuple[str, str], ...], str, ChatRequest, str]] = [
    (
        (),
        "cloud-only",
        ask("x" * 700000),
        "no model's context window holds the request's estimated 233337 tokens (the largest "
        "that could take it: sonnet, context_window = 200000): use a model with a larger "
        f'context_window, or send a shorter request {ASKED}"cloud-only", estimated 233337 tokens)',
    ),
    (
        (NO_VISION,),
        "balanced",
        with_image("what is this"),
        "no model takes images: enable a model with supports_vision = true, or send the "
        f'request without images {ASKED}"balanced", images, estimated 8 tokens)',
    ),
    (
        (SONNET_OFF,),
        "local-first",
        ask("hi", tools=True),
        "no model takes tools: enable a model with supports_tools = true, or send the request "
        f'without tools {ASKED}"local-first", tools, estimated 4 tokens)',
    ),
    (
        (SONNET_OFF,),
        "cloud-only",
        ask("hi"),
        "no cloud model for the cloud-only profile: enable a cloud model, or set [routing] "
        f'profile to another profile {ASKED}"cloud-only", estimated 4 tokens)',
    ),
    (
        (SONNET_OFF, TINY_OFF),
        "balanced",
        ask("hi"),
        "every model is disabled: enable one with `pirouter models enable ALIAS` (enabled = "
        f'true) {ASKED}"balanced", estimated 4 tokens)',
    ),
    (
        (NO_VISION, TINY_SEES),
        "balanced",
        with_image("what is this", tools=True),
        "no enabled model has image input (supports_vision = true) and tool support "
        "(supports_tools = true): enable one that has them all "
        f'{ASKED}"balanced", tools, images, estimated 8 tokens)',
    ),
]


@pytest.mark.parametrize(
    ("edits", "profile", "request_", "message"),
    NOTHING_FITS,
    ids=["too-long", "images", "tools", "cloud-only", "all-disabled", "images-and-tools"],
)
def test_nothing_fits_names_the_constraint_first(
    write_config: Callable[[str], Path],
    edits: tuple[tuple[str, str], ...],
    profile: str,
    request_: ChatRequest,
    message: str,
) -> None:
    text = TWO
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    cfg = load_config(write_config(text + f'[routing]\nprofile = "{profile}"\n')).config
    with pytest.raises(RoutingError) as caught:
        decide(cfg, request_, {})
    assert caught.value.message == message


def test_nothing_available_names_each_model_left_out(write_config: Callable[[str], Path]) -> None:
    cfg = load_config(write_config(TWO.replace(*TINY_OFF))).config
    with pytest.raises(RoutingError) as caught:
        decide(cfg, ask("hi"), {}, unavailable={"sonnet": "key missing: K is not set"})
    assert caught.value.message == (
        "no model is available: sonnet (key missing: K is not set) "
        f'{ASKED}"balanced", estimated 4 tokens)'
    )


def test_tools_need_supports_tools(two: Callable[[str], Config]) -> None:
    cfg = two('[routing]\nprofile = "local-first"\n')
    assert decide(cfg, ask("hi", tools=True), {}).primary == "sonnet"


def test_under_qualified_routing_when_nothing_is_strong_enough(
    write_config: Callable[[str], Path],
) -> None:
    local_only = TWO[: TWO.index("[models.sonnet]")]
    cfg = load_config(write_config(local_only)).config
    decision = decide(cfg, ask("debug the security proof"), {})
    assert (decision.primary, decision.rule) == ("tiny-local", "policy:balanced:hard")


def test_disabled_models_are_left_to_rules(write_config: Callable[[str], Path]) -> None:
    from tests.conftest import EXAMPLE

    text = EXAMPLE.read_text().replace("local = true\n", "local = true\nenabled = false\n", 1)
    cfg = load_config(write_config(text)).config
    decision = decide(cfg, ask("hello world"), {}, explain=True)
    assert decision.primary == "haiku"
    dropped = {c.alias: c.reason for c in decision.candidates if c.verdict == "dropped"}
    assert dropped == {"llama3.2-local": "disabled (enabled = false)"}


@pytest.mark.parametrize(
    ("setting", "cascade"),
    [
        ("auto_cascade = false", ()),
        ("max_policy_fallbacks = 0", ()),
        ("max_policy_fallbacks = 1", ("haiku",)),
        (
            "max_policy_fallbacks = 9",
            ("haiku", "qwen2.5-coder-local", "gpt-4o-mini", "gpt-4o", "sonnet", "opus"),
        ),
    ],
)
def test_fallback_settings(
    write_config: Callable[[str], Path], setting: str, cascade: tuple[str, ...]
) -> None:
    from tests.conftest import EXAMPLE

    text = EXAMPLE.read_text().replace("[routing]\n", f"[routing]\n{setting}\n", 1)
    text = text.replace("auto_cascade = true\n", "") if "auto_cascade" in setting else text
    text = text.replace("max_policy_fallbacks = 3\n", "") if "max_policy" in setting else text
    cfg = load_config(write_config(text)).config
    assert decide(cfg, ask("hello world"), {}).cascade == cascade


def test_images_need_vision(example_config: Config) -> None:
    request = ChatRequest(
        "auto", (Message("user", (TextPart("what is this"), ImagePart("https://e.x/cat.png"))),)
    )
    decision = decide(example_config, request, {}, explain=True)
    # easy, but only vision models remain: gpt-4o-mini (standard, cheapest), then upward
    assert (decision.primary, decision.cascade) == ("gpt-4o-mini", ("gpt-4o", "sonnet", "opus"))
    reasons = {c.alias: c.reason for c in decision.candidates if c.verdict == "dropped"}
    assert set(reasons) == {"haiku", "llama3.2-local", "qwen2.5-coder-local"}


def test_explanation_ranks_every_kept_model(example_config: Config) -> None:
    decision = decide(example_config, ask("hello world"), {}, explain=True)
    ranked = [(c.position, c.alias, c.verdict) for c in decision.candidates]
    assert ranked == [
        (1, "llama3.2-local", "primary"),
        (2, "haiku", "fallback"),
        (3, "qwen2.5-coder-local", "fallback"),
        (4, "gpt-4o-mini", "fallback"),
        (5, "gpt-4o", "ranked"),
        (6, "sonnet", "ranked"),
        (7, "opus", "ranked"),
    ]
    assert decide(example_config, ask("hello world"), {}).candidates == ()
