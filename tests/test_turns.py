"""Turn-aware signals on agent transcripts in each protocol, and the decisions that follow the
conversation ([routing] turns)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from pirouter_py.config import Config, parse_config
from pirouter_py.routing.decide import decide
from pirouter_py.routing.features import extract
from pirouter_py.types import ChatRequest, Pin
from pirouter_py.wire import anthropic, openai, responses

BASH = {"name": "Bash", "description": "run", "input_schema": {"type": "object"}}
EXEC = {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}
FN = {"type": "function", "function": {"name": "edit", "parameters": {"type": "object"}}}
EDIT = {"name": "edit", "arguments": "{}"}


def claude(messages: list[Any], **extra: Any) -> ChatRequest:
    body = {"model": "auto", "max_tokens": 32000, "messages": messages, "tools": [BASH], **extra}
    return anthropic.decode_request(json.dumps(body).encode())


def codex(items: list[Any], **extra: Any) -> ChatRequest:
    body = {"model": "auto", "input": items, "tools": [EXEC], "store": False, **extra}
    return responses.decode_request(json.dumps(body).encode())


def aider(messages: list[Any], **extra: Any) -> ChatRequest:
    body = {"model": "auto", "messages": messages, **extra}
    return openai.decode_request(json.dumps(body).encode())


USE = {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}
RESULT = {"type": "tool_result", "tool_use_id": "t1", "content": "a.py"}
CALL = {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"}
OUTPUT = {"type": "function_call_output", "call_id": "c1", "output": "ok"}

CASES: list[tuple[str, Callable[[], ChatRequest], dict[str, str], str, str | None]] = [
    ("claude-user", lambda: claude([{"role": "user", "content": "fix it"}]), {}, "user", None),
    (
        "claude-tool-result",
        lambda: claude(
            [
                {"role": "user", "content": "fix it"},
                {"role": "assistant", "content": [USE]},
                {"role": "user", "content": [RESULT]},
            ]
        ),
        {},
        "tool_result",
        None,
    ),
    (
        "claude-title-call",  # a side call: no tools, a small max_tokens
        lambda: anthropic.decode_request(
            json.dumps(
                {"model": "auto", "max_tokens": 100, "messages": [{"role": "user", "content": "x"}]}
            ).encode()
        ),
        {},
        "background",
        None,
    ),
    (
        "claude-thinking",
        lambda: claude(
            [{"role": "user", "content": "hmm"}],
            thinking={"type": "enabled", "budget_tokens": 2048},
        ),
        {},
        "user",
        "thinking",
    ),
    (
        "claude-effort",
        lambda: claude([{"role": "user", "content": "hmm"}], output_config={"effort": "high"}),
        {},
        "user",
        "high",
    ),
    (
        "claude-subagent-header",
        lambda: claude([{"role": "user", "content": "go"}]),
        {"x-pirouter-turn": "subagent"},
        "subagent",
        None,
    ),
    ("codex-user", lambda: codex([{"role": "user", "content": "add tests"}]), {}, "user", None),
    (
        "codex-tool-result",
        lambda: codex([{"role": "user", "content": "add tests"}, CALL, OUTPUT]),
        {},
        "tool_result",
        None,
    ),
    (
        "codex-compaction",
        lambda: codex([{"role": "user", "content": "add tests"}, {"type": "compaction_trigger"}]),
        {},
        "compaction",
        None,
    ),
    (
        "codex-reasoning",
        lambda: codex([{"role": "user", "content": "x"}], reasoning={"effort": "medium"}),
        {},
        "user",
        "medium",
    ),
    (
        "aider-user",
        lambda: aider(
            [{"role": "system", "content": "You are aider"}, {"role": "user", "content": "x"}],
            tools=[FN],
        ),
        {},
        "user",
        None,
    ),
    (
        "aider-tool-result",
        lambda: aider(
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "edit", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": "done"},
            ],
            tools=[FN],
        ),
        {},
        "tool_result",
        None,
    ),
    (
        "aider-small-model",
        lambda: aider([{"role": "user", "content": "commit message?"}], model="gpt-4o-mini"),
        {},
        "background",
        None,
    ),
    (
        "aider-reasoning",
        lambda: aider([{"role": "user", "content": "x"}], reasoning_effort="low", tools=[FN]),
        {},
        "user",
        "low",
    ),
]


@pytest.mark.parametrize(
    ("make", "headers", "turn", "effort"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_turn_and_effort(
    make: Callable[[], ChatRequest], headers: dict[str, str], turn: str, effort: str | None
) -> None:
    features = extract(make(), headers)
    assert (features.turn, features.effort) == (turn, effort)


CATALOG = """
[providers.ollama]
[providers.openai]
api_key = "k"
[models.local]
provider = "ollama"
model_id = "qwen"
quality = "standard"
supports_tools = true
local = true
[models.strong]
provider = "openai"
model_id = "big"
quality = "strong"
supports_tools = true
input_per_m = 3.0
output_per_m = 15.0
[affinity]
enabled = true
[routing]
turns = {turns}
"""
SYSTEM = "You are a coding agent. You debug, refactor and test code."


def config(turns: bool) -> Config:
    return parse_config(CATALOG.replace("{turns}", str(turns).lower()), "<test>")[0]


def test_agent_turns_are_judged_by_their_instruction_not_the_agent_prompt() -> None:
    ask = claude([{"role": "user", "content": "rename this variable"}], system=SYSTEM)
    assert decide(config(turns=False), ask, {}).primary == "strong"  # v0.1: tools make it hard
    turned = decide(config(turns=True), ask, {})
    assert (turned.primary, turned.difficulty) == ("local", "easy")
    hard = claude([{"role": "user", "content": "debug the race condition"}], system=SYSTEM)
    assert decide(config(turns=True), hard, {}).primary == "strong"


def test_a_tool_result_turn_stays_on_the_model_that_started_the_step() -> None:
    step = claude(
        [
            {"role": "user", "content": "debug the race condition"},
            {"role": "assistant", "content": [USE]},
            {"role": "user", "content": [RESULT]},
        ],
        system=SYSTEM,
    )
    pin = Pin("local", 400.0, hard=False)  # a soft pin, past the hard window
    stays = decide(config(turns=True), step, {}, pin=pin)
    assert (stays.primary, stays.pin) == ("local", "hard")
    fresh = claude([{"role": "user", "content": "debug the race condition"}], system=SYSTEM)
    assert decide(config(turns=True), fresh, {}, pin=pin).primary == "strong"  # routed afresh


def test_without_affinity_only_tool_results_follow_their_session() -> None:
    off = parse_config(
        CATALOG.replace("{turns}", "true").replace("enabled = true", "enabled = false"), "<t>"
    )[0]
    pin = Pin("local", 2.0, hard=True)
    step = claude(
        [
            {"role": "user", "content": "debug the race condition"},
            {"role": "assistant", "content": [USE]},
            {"role": "user", "content": [RESULT]},
        ]
    )
    assert decide(off, step, {}, pin=pin).primary == "local"
    fresh = claude([{"role": "user", "content": "debug the race condition"}])
    decided = decide(off, fresh, {}, pin=pin)
    assert (decided.primary, decided.pin) == ("strong", None)  # affinity off: no pin at all
