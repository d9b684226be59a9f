"""Token estimate (v0.1's exactly) and difficulty (whole-word keywords, the deliberate fix)."""

from __future__ import annotations

import pytest

from pirouter_py.routing.features import difficulty, estimate_tokens, extract
from pirouter_py.types import ChatRequest, ImagePart, Message, TextPart, ToolSpec, text_message


def req(*texts: str, system: str | None = None, tools: bool = False) -> ChatRequest:
    messages = ([text_message("system", system)] if system is not None else []) + [
        text_message("user", t) for t in texts
    ]
    return ChatRequest("auto", tuple(messages), (ToolSpec("t"),) if tools else ())


@pytest.mark.parametrize(
    ("text", "estimate"),
    [
        ("hello", 5),
        ("hello world", 7),
        ("x" * 5000, 1670),
        ("x" * 30000, 10004),
        ("x" * 100000, 33337),
        ("", 4),
        ("héllo", 6),
        ("日本語", 7),
    ],
)
def test_estimate_is_utf8_bytes_over_three_plus_four_per_message(text: str, estimate: int) -> None:
    assert estimate_tokens(req(text)) == estimate


def test_estimate_counts_every_role_and_skips_images() -> None:
    request = ChatRequest(
        "auto",
        (
            text_message("system", "abc"),
            Message("user", (TextPart("abcdef"), ImagePart("https://x/y.png"))),
            text_message("assistant", "abc"),
        ),
    )
    assert estimate_tokens(request) == 12 // 3 + 12
    assert extract(request).has_images and not extract(request).has_tools


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("hello world", "easy"),
        ("debug this distributed SQL migration", "hard"),
        ("I am debugging a crash", "hard"),  # a listed form: "debugging" counts as "debug"
        ("Refactor the parser", "hard"),  # case-insensitive
        ("find the race condition", "hard"),
        ("plan a schema migration", "hard"),  # hard words win over standard ones
        ("translate this paragraph", "standard"),
        ("write some CODE", "standard"),
        ("testing the API", "standard"),
        ("decode this base64", "easy"),  # v0.1 said standard: "decode" contains "code"
        ("what is the latest news", "easy"),  # v0.1: "latest" contains "test"
        ("give an explanation", "easy"),  # v0.1: "explanation" contains "plan"
        # whole words, not prefixes: every ARC prompt mentions plants, GSM8K ones planets
        ("Which plants grow in shade?", "easy"),
        ("the planet and the plane", "easy"),
        ("his testimony was clear", "easy"),
        ("planning the trip", "standard"),  # a listed form
        ("a race conditioning", "easy"),
        ("two race conditions", "hard"),
        ("optimisation of a loop", "hard"),  # British spelling listed
        ("SQL.", "standard"),  # punctuation ends a word
        ("x" * 24004, "standard"),  # estimate 8005 > 8000
        ("x" * 23990, "easy"),  # estimate 8000 is not > 8000
        ("x" * 96004, "hard"),  # estimate 32005 > 32000
    ],
)
def test_difficulty_from_size_and_keywords(text: str, level: str) -> None:
    request = req(text)
    assert difficulty(request, extract(request), {})[0] == level


def test_only_system_and_user_text_is_searched() -> None:
    request = ChatRequest(
        "auto", (text_message("user", "hi"), text_message("assistant", "let me debug that"))
    )
    assert difficulty(request, extract(request), {})[0] == "easy"
    request = req("hi", system="You debug kernels")
    assert difficulty(request, extract(request), {})[0] == "hard"


def test_tools_make_a_request_hard() -> None:
    request = req("hi", tools=True)
    assert difficulty(request, extract(request), {}) == ("hard", "the request offers tools")


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("easy", "easy"),
        ("basic", "easy"),
        ("standard", "standard"),
        ("normal", "standard"),
        ("medium", "standard"),
        ("hard", "hard"),
        ("strong", "hard"),
        ("PREMIUM", "hard"),
        (" Easy ", "easy"),
    ],
)
def test_difficulty_header_overrides_heuristics(value: str, level: str) -> None:
    request = req("debug this", tools=True)
    assert difficulty(request, extract(request), {"x-pirouter-difficulty": value})[0] == level


def test_unknown_difficulty_header_falls_back_to_heuristics() -> None:
    request = req("translate this")
    assert difficulty(request, extract(request), {"x-pirouter-difficulty": "extreme"}) == (
        "standard",
        "keyword 'translate'",
    )


def test_a_long_prompt_is_searched_at_its_start_and_end_only() -> None:
    from pirouter_py.routing.features import SCAN_CHARS, keyword

    filler = "word " * (SCAN_CHARS // 4)
    assert keyword("debug " + filler) == ("hard", "debug")
    assert keyword(filler + " debug") == ("hard", "debug")
    assert keyword(filler + " debug " + filler) is None  # past the bound, in the middle
