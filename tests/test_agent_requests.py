"""Requests shaped as today's coding agents send them, through the real daemon to each upstream
type: Claude Code's system messages inside `messages`, thinking blocks, per-request billing line,
extra top-level fields and `anthropic-beta` header."""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from pirouter_py.live.sessions import session_key
from pirouter_py.types import ChatRequest, Message, TextPart, text_message
from tests import test_conformance
from tests.fakes import Daemon, FakeUpstream

CONFIG = test_conformance.CONFIG  # the `daemon` fixture runs on this module's CONFIG
pytestmark = pytest.mark.usefixtures("clean_fake")

BILLING = "x-anthropic-billing-header: cc_version=2.1.330; cc_entrypoint=sdk-cli; cch=4f1a2;"
BETA = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"
SYSTEM = [
    {"type": "text", "text": BILLING},
    {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
]
THINKING = {"type": "thinking", "thinking": "The user wants a listing.", "signature": "EqQBCkgI"}
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": [{"type": "text", "text": "list the files"}]},
    {
        "role": "assistant",
        "content": [
            THINKING,
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "a.py\nb.py"},
            {"type": "text", "text": "also:"},
        ],
    },
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_02", "name": "ToolSearch", "input": {}}],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_02",
                "content": [{"type": "tool_reference", "tool_name": "WebFetch"}],
            }
        ],
    },
    {"role": "system", "content": "<system-reminder>The date is 2026-12-02.</system-reminder>"},
    {"role": "user", "content": "which one is bigger?"},
]
EXTRA = {
    "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
    "output_config": {"effort": "medium"},
    "metadata": {"user_id": "user_abc_account_def_session_0f3c"},
}
BASH = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
}
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}  # Anthropic's
TOOLS = [BASH, WEB_SEARCH]


@pytest.fixture
def sdk(daemon: Daemon) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=daemon.url, api_key="unused", max_retries=0, timeout=20)
    yield client
    client.close()


def send(sdk: anthropic.Anthropic, alias: str) -> Any:
    return sdk.messages.create(
        model="auto",
        max_tokens=2000,
        system=SYSTEM,  # type: ignore[arg-type]
        messages=copy.deepcopy(MESSAGES),  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body=EXTRA,
        extra_headers={
            "anthropic-beta": BETA,
            "anthropic-version": "2023-06-01",
            "x-pirouter-route": alias,
            "x-claude-code-session-id": "3f0c7e9a-session",
        },
    )


def test_claude_code_request_passes_through_to_anthropic_unchanged(
    sdk: anthropic.Anthropic, fake: FakeUpstream
) -> None:
    answer = send(sdk, "a")
    assert answer.content[0].text == "Hello from the fake upstream."
    (seen,) = fake.seen
    assert seen.path == "/v1/messages" and seen.body["model"] == "m-a"
    assert seen.body["messages"] == MESSAGES  # system message, thinking with its signature
    assert seen.body["system"] == SYSTEM
    assert seen.body["tools"] == TOOLS  # the server tool too: Anthropic runs it
    assert seen.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    for key, value in EXTRA.items():
        assert seen.body[key] == value
    assert seen.headers["anthropic-beta"] == BETA
    assert seen.headers["anthropic-version"] == "2023-06-01"  # as the client sent it


def ledger_note(daemon: Daemon, alias: str, timeout: float = 5.0) -> str | None:
    """The note of the newest attempt on `alias` in the daemon's ledger, once it is written."""
    path = daemon.config.parent / "data" / "pirouter" / "ledger.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            db = sqlite3.connect(path)
            try:
                row = db.execute(
                    "SELECT note FROM attempts WHERE alias = ? ORDER BY rowid DESC LIMIT 1",
                    (alias,),
                ).fetchone()
            except sqlite3.OperationalError:
                row = None
            finally:
                db.close()
            if row is not None:
                return str(row[0]) if row[0] is not None else None
        time.sleep(0.05)
    raise AssertionError(f"no attempt on {alias} reached the ledger")


@pytest.mark.parametrize("alias", ["o", "l"])
def test_claude_code_request_translates_for_other_upstreams(
    daemon: Daemon, sdk: anthropic.Anthropic, fake: FakeUpstream, alias: str
) -> None:
    answer = send(sdk, alias)
    assert answer.content[0].text == "Hello from the fake upstream."
    (seen,) = fake.seen
    messages = seen.body["messages"]
    roles = [m["role"] for m in messages]
    # the system prompt first, the mid-conversation note where it was; the tool round trip kept
    assert roles == [
        *("system", "user", "assistant", "tool", "user", "assistant", "tool", "system", "user")
    ]
    flat = str(messages)
    assert "x-anthropic-billing-header" not in flat  # defeats local prefix caches
    assert "EqQBCkgI" not in flat and "The user wants a listing." not in flat  # not theirs
    assert "srvtoolu_1" not in flat  # Anthropic's own web search: no other model ran it
    assert "You are Claude Code." in flat and "The date is 2026-12-02." in flat
    assert "anthropic-beta" not in seen.headers
    assert "Tool: WebFetch" in flat and "tool_reference" not in flat  # the found tool, as text
    assert "web_search" not in json.dumps(seen.body.get("tools"))  # only Anthropic can run it
    note = ledger_note(daemon, alias)  # the ledger says what the attempt left out
    assert note == "left out what only Anthropic reads (thinking, server tool blocks)"


def test_the_billing_line_does_not_split_a_session() -> None:
    def turn(billing: str, *later: Message) -> ChatRequest:
        system = Message("system", (TextPart(billing), TextPart("You are Claude Code.")))
        return ChatRequest("auto", (system, text_message("user", "list the files"), *later))

    ua = {"user-agent": "claude-cli/2.1.330"}
    first = session_key(turn(BILLING), ua)
    later = session_key(
        turn(BILLING.replace("4f1a2", "9be01"), text_message("assistant", "ok")), ua
    )
    other = session_key(turn(BILLING, text_message("user", "x")), {"user-agent": "other"})
    assert first == later != other


def test_agent_session_headers_name_the_session() -> None:
    request = ChatRequest("auto", (text_message("user", "hi"),))
    by_claude = session_key(request, {"x-claude-code-session-id": "s1", "session_id": "s2"})
    assert by_claude == session_key(
        ChatRequest("auto", (text_message("user", "bye"),)), {"x-claude-code-session-id": "s1"}
    )
    by_codex = session_key(request, {"session_id": "s2", "x-pirouter-session": "s3"})
    assert by_codex == session_key(request, {"session_id": "s2"}) != by_claude
    assert session_key(request, {}) != by_codex
