"""What the router reads off a request: token estimate, tools, images, system text, difficulty.

Pure functions of the request and its headers. The estimate is v0.1's exactly (UTF-8 bytes of all
message text // 3, plus 4 per message), so `tokens_in_gt`/`tokens_in_lt` rules route as before.
Difficulty differs from v0.1 in one deliberate way: keywords match at the start of a word,
case-insensitively, so "decode" is not "code" and "latest" is not "test", while "debugging" still
counts as "debug".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from pirouter_py.types import ChatRequest, frozen

Difficulty = Literal["easy", "standard", "hard"]
DIFFICULTY_HEADER = "x-pirouter-difficulty"
# Header values accepted for x-pirouter-difficulty (reference §3.3).
DIFFICULTY_WORDS: dict[str, Difficulty] = {
    "easy": "easy",
    "basic": "easy",
    "standard": "standard",
    "normal": "standard",
    "medium": "standard",
    "hard": "hard",
    "strong": "hard",
    "premium": "hard",
}
# The minimum quality tier each difficulty requires (premium is never required).
REQUIRED_QUALITY: dict[Difficulty, str] = {
    "easy": "basic",
    "standard": "standard",
    "hard": "strong",
}
HARD_TOKENS = 32_000  # an estimate above this is hard
STANDARD_TOKENS = 8_000  # an estimate above this is at least standard
HARD_WORDS = (
    "debug",
    "refactor",
    "architecture",
    "proof",
    "optimize",
    "security",
    "race condition",
    "distributed",
    "schema migration",
)
STANDARD_WORDS = ("code", "sql", "test", "plan", "analyze", "compare", "summarize", "translate")


def _word_start(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + ")", re.IGNORECASE)


_HARD = _word_start(HARD_WORDS)
_STANDARD = _word_start(STANDARD_WORDS)


@frozen
class Features:
    """The request signals rules and the policy look at."""

    estimated_tokens: int
    has_tools: bool
    has_images: bool
    system_text: str  # all system messages' text joined with "\n" ("" when there are none)


def estimate_tokens(request: ChatRequest) -> int:
    """v0.1's estimate: UTF-8 bytes of every message's text // 3 + 4 per message."""
    total = sum(len(m.text.encode("utf-8")) for m in request.messages)
    return total // 3 + 4 * len(request.messages)


def extract(request: ChatRequest) -> Features:
    return Features(
        estimated_tokens=estimate_tokens(request),
        has_tools=bool(request.tools),
        has_images=any(m.has_images for m in request.messages),
        system_text="\n".join(m.text for m in request.messages if m.role == "system"),
    )


def difficulty(
    request: ChatRequest, features: Features, headers: Mapping[str, str]
) -> tuple[Difficulty, str]:
    """The difficulty and the reason for it, in the order of reference §3.3."""
    hint = headers.get(DIFFICULTY_HEADER)
    if hint is not None:
        level = DIFFICULTY_WORDS.get(hint.strip().lower())
        if level is not None:
            return level, f"header {DIFFICULTY_HEADER}: {hint}"
    if features.has_tools:
        return "hard", "the request offers tools"
    if features.estimated_tokens > HARD_TOKENS:
        return "hard", f"estimate {features.estimated_tokens} > {HARD_TOKENS} tokens"
    if features.estimated_tokens > STANDARD_TOKENS:
        return "standard", f"estimate {features.estimated_tokens} > {STANDARD_TOKENS} tokens"
    text = "\n".join(m.text for m in request.messages if m.role in ("system", "user"))
    found = _HARD.search(text)
    if found:
        return "hard", f"keyword {found.group(0).lower()!r}"
    found = _STANDARD.search(text)
    if found:
        return "standard", f"keyword {found.group(0).lower()!r}"
    return "easy", "no difficulty keyword"
