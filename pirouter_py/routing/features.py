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
Turn = Literal["user", "tool_result", "background", "compaction", "subagent"]
TURNS: tuple[Turn, ...] = ("user", "tool_result", "background", "compaction", "subagent")
TURN_HEADER = "x-pirouter-turn"  # a client may name its turn (subagent is known only so)
BACKGROUND_MAX_TOKENS = 1024  # a tool-less call asking at most this much is a side call
BACKGROUND_MODELS = ("haiku", "mini", "small", "nano", "flash", "lite")  # side-call model names
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
    turn: Turn = "user"  # what kind of turn of a conversation this request is (see `turn_of`)
    effort: str | None = None  # the thinking or reasoning effort the client asked for


def estimate_tokens(request: ChatRequest) -> int:
    """v0.1's estimate: UTF-8 bytes of every message's text // 3 + 4 per message."""
    total = 0
    for m in request.messages:
        text = m.text
        # an ASCII string's UTF-8 length is its length (isascii is a flag: no scan, no copy)
        total += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return total // 3 + 4 * len(request.messages)


def extract(request: ChatRequest, headers: Mapping[str, str] | None = None) -> Features:
    return Features(
        estimated_tokens=estimate_tokens(request),
        has_tools=bool(request.tools),
        has_images=any(m.has_images for m in request.messages),
        system_text="\n".join(m.text for m in request.messages if m.role == "system"),
        turn=turn_of(request, headers or {}),
        effort=effort_of(request),
    )


def turn_of(request: ChatRequest, headers: Mapping[str, str]) -> Turn:
    """The kind of turn: the client's `x-pirouter-turn`, else `compaction` (Codex's
    compaction_trigger), `tool_result` (the agent going on after its tools ran), `background`
    (a tool-less side call: a small max_tokens, or a small model asked for by name), else a
    `user` turn, a new instruction."""
    named = headers.get(TURN_HEADER)
    if named in TURNS:
        return named
    items = request.raw.get("input") if request.raw is not None else None
    last_item = items[-1] if isinstance(items, list) and items else None
    if isinstance(last_item, dict) and last_item.get("type") == "compaction_trigger":
        return "compaction"
    last = request.messages[-1] if request.messages else None
    if last is not None and last.role == "tool":
        return "tool_result"
    if not request.tools and (
        (request.max_tokens is not None and request.max_tokens <= BACKGROUND_MAX_TOKENS)
        or any(word in request.model.lower() for word in BACKGROUND_MODELS)
    ):
        return "background"
    return "user"


def effort_of(request: ChatRequest) -> str | None:
    """Thinking or reasoning effort asked for, in any protocol's words."""
    raw = request.raw
    if raw is None:
        return None
    effort = raw.get("reasoning_effort")  # OpenAI chat
    reasoning = raw.get("reasoning")  # Responses
    if isinstance(reasoning, dict):
        effort = reasoning.get("effort", effort)
    output = raw.get("output_config")  # Anthropic
    if isinstance(output, dict):
        effort = output.get("effort", effort)
    thinking = raw.get("thinking")
    if effort is None and isinstance(thinking, dict) and thinking.get("type") != "disabled":
        effort = "thinking"
    think = raw.get("think")  # Ollama
    if effort is None and think:
        effort = str(think) if isinstance(think, str) else "thinking"
    return effort if isinstance(effort, str) else None


def instruction(request: ChatRequest) -> str:
    """The latest user instruction: the last user message's text."""
    return next((m.text for m in reversed(request.messages) if m.role == "user"), "")


def difficulty(
    request: ChatRequest,
    features: Features,
    headers: Mapping[str, str],
    *,
    turns: bool = False,
) -> tuple[Difficulty, str]:
    """The difficulty and the reason for it, in the order of reference §3.3. With `turns`
    ([routing] turns): offering tools does not make a request hard (agents offer them on every
    turn), a background or compaction turn is easy, and keywords are read in the latest user
    instruction only, not in an agent's system prompt."""
    hint = headers.get(DIFFICULTY_HEADER)
    if hint is not None:
        level = DIFFICULTY_WORDS.get(hint.strip().lower())
        if level is not None:
            return level, f"header {DIFFICULTY_HEADER}: {hint}"
    if turns:
        return _turn_difficulty(request, features)
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


def _turn_difficulty(request: ChatRequest, features: Features) -> tuple[Difficulty, str]:
    if features.turn in ("background", "compaction"):
        return "easy", f"a {features.turn} turn"
    if features.estimated_tokens > HARD_TOKENS:
        return "hard", f"estimate {features.estimated_tokens} > {HARD_TOKENS} tokens"
    found = keyword(instruction(request))
    if found is not None:
        return found[0], f"keyword {found[1]!r} in the latest instruction"
    if features.estimated_tokens > STANDARD_TOKENS:
        return "standard", f"estimate {features.estimated_tokens} > {STANDARD_TOKENS} tokens"
    return "easy", "no difficulty keyword in the latest instruction"
