"""What the router reads off a request: token estimate, tools, images, system text, difficulty.

Pure functions of the request and its headers. The estimate is v0.1's exactly (UTF-8 bytes of all
message text // 3, plus 4 per message), so `tokens_in_gt`/`tokens_in_lt` rules route as before.
Difficulty differs from v0.1 in one deliberate way: keywords match whole words in the forms
listed, case-insensitively, so "decode" is not "code", "latest" and "testimony" are not "test" and
"plants" is not "plan", while "debugging" still counts as "debug"; and at most SCAN_CHARS of the
text are searched (its start and its end), so a decision costs the same at any prompt size.
"""

from __future__ import annotations

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
# Difficulty keywords: whole words, in the forms listed (a prefix is not a word: "plants" is not
# "plan", "testimony" not "test", "decode" not "code"). A stem is searched, then the whole word
# around each find is looked up (str.find is fast; a regex alternation over the text was not).
HARD_WORDS: dict[str, tuple[str, ...]] = {
    "debug": ("debug", "debugs", "debugging", "debugged", "debugger"),
    "refactor": ("refactor", "refactors", "refactoring", "refactored"),
    "architecture": ("architecture", "architectures", "architectural"),
    "proof": ("proof", "proofs"),
    "optimize": (
        *("optimize", "optimizes", "optimizing", "optimized", "optimization"),
        *("optimise", "optimises", "optimising", "optimised", "optimisation"),
    ),
    "security": ("security",),
    "race condition": ("race condition", "race conditions"),
    "distributed": ("distributed",),
    "schema migration": ("schema migration", "schema migrations"),
}
STANDARD_WORDS: dict[str, tuple[str, ...]] = {
    "code": ("code", "codes", "coding"),
    "sql": ("sql",),
    "test": ("test", "tests", "testing", "tested"),
    "plan": ("plan", "plans", "planning", "planned"),
    "analyze": ("analyze", "analyzes", "analyzing", "analyse", "analyses", "analysing", "analysis"),
    "compare": ("compare", "compares", "comparing", "comparison"),
    "summarize": ("summarize", "summarizes", "summarise", "summarises", "summary"),
    "translate": ("translate", "translates", "translating", "translation"),
}
SCAN_CHARS = 4_000  # text searched for keywords at most: its first and last 2,000 characters


def _stem(forms: tuple[str, ...]) -> str:
    """The longest prefix all forms share (what is searched for)."""
    stem = forms[0]
    for form in forms[1:]:
        while not form.startswith(stem):
            stem = stem[:-1]
    return stem


_TABLES = tuple(
    (level, tuple((word, _stem(forms), frozenset(forms)) for word, forms in table.items()))
    for level, table in (("hard", HARD_WORDS), ("standard", STANDARD_WORDS))
)


def _bounded(text: str) -> str:
    if len(text) <= SCAN_CHARS:
        return text
    half = SCAN_CHARS // 2
    return text[:half] + "\n" + text[-half:]


def _whole(text: str, at: int, forms: frozenset[str]) -> bool:
    """Is one of `forms` at `at`, as a whole word?"""
    for form in forms:
        end = at + len(form)
        if text.startswith(form, at) and (end == len(text) or not text[end].isalnum()):
            return True
    return False


def keyword(text: str) -> tuple[Difficulty, str] | None:
    """The hardest difficulty keyword in `text` (whole words, case-insensitive), or None."""
    lowered = _bounded(text).lower()
    for level, words in _TABLES:
        for word, stem, forms in words:
            at = lowered.find(stem)
            while at >= 0:
                if (at == 0 or not lowered[at - 1].isalnum()) and _whole(lowered, at, forms):
                    return level, word  # type: ignore[return-value]
                at = lowered.find(stem, at + 1)
    return None


@frozen
class Features:
    """The request signals rules and the policy look at."""

    estimated_tokens: int
    has_tools: bool
    has_images: bool
    system_text: str  # all system messages' text joined with "\n" ("" when there are none)


def estimate_tokens(request: ChatRequest) -> int:
    """v0.1's estimate: UTF-8 bytes of every message's text // 3 + 4 per message."""
    total = 0
    for m in request.messages:
        text = m.text
        # an ASCII string's UTF-8 length is its length (isascii is a flag: no scan, no copy)
        total += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
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
    found = keyword(text)
    if found is not None:
        return found[0], f"keyword {found[1]!r}"
    return "easy", "no difficulty keyword"
