"""Answer checks, table-driven on answers that pass and fail each; and through the daemon, an
invalid tool call from the cheap model escalating unseen by a streaming client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from pirouter_py import record as rec
from pirouter_py.checks import judge
from pirouter_py.config import CascadeConfig
from pirouter_py.types import ToolCall, ToolSpec
from tests.fakes import Daemon, FakeUpstream, Reply

WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    },
}
LOOP = "I will now check the file. " * 40
ESSAY = " ".join(f"step{i} of the long answer" for i in range(40))  # varied, as prose is


def call(name: str, arguments: str) -> ToolCall:
    return ToolCall("call_1", name, arguments)


CASES: list[tuple[str, dict[str, Any], str, tuple[ToolCall, ...], Any, str | None]] = [
    # id, [cascade] keys, answer text, tool calls, response_format, expected outcome
    ("match-passes", {"require_match": r"^ANSWER: \w+"}, "ANSWER: B", (), None, None),
    ("match-fails", {"require_match": r"^ANSWER: \w+"}, "It is B.", (), None, rec.ESCALATED_MATCH),
    ("match-any-line", {"require_match": r"^ANSWER: \w+"}, "work\nANSWER: 4", (), None, None),
    ("forbid-passes", {"forbid_match": "TODO"}, "done", (), None, None),
    ("forbid-fails", {"forbid_match": "TODO"}, "TODO: later", (), None, rec.ESCALATED_FORBIDDEN),
    ("json-passes", {"json_check": True}, '{"ok": true}', (), None, None),
    ("json-fenced", {"json_check": True}, '```json\n{"ok": true}\n```', (), None, None),
    ("json-fails", {"json_check": True}, "ok: yes", (), None, rec.ESCALATED_JSON),
    ("json-schema-passes", {"json_check": True}, '{"ok": false}', (), SCHEMA, None),
    ("json-schema-fails", {"json_check": True}, '{"ok": "no"}', (), SCHEMA, rec.ESCALATED_JSON),
    # a request for structured output asks for the check itself
    ("json-asked-by-the-request", {}, "ok: yes", (), SCHEMA, rec.ESCALATED_JSON),
    ("json-object-asked", {}, "ok", (), {"type": "json_object"}, rec.ESCALATED_JSON),
    ("json-asked-and-given", {}, '{"ok": true}', (), SCHEMA, None),
    (
        "tool-valid",
        {"tool_calls_valid": True},
        "",
        (call("get_weather", '{"city": "Oslo"}'),),
        None,
        None,
    ),
    (
        "tool-unknown",
        {"tool_calls_valid": True},
        "",
        (call("get_wether", '{"city": "Oslo"}'),),
        None,
        rec.ESCALATED_TOOL_CALL,
    ),
    (
        "tool-unparsable",
        {"tool_calls_valid": True},
        "",
        (call("get_weather", '{"city": "Os'),),
        None,
        rec.ESCALATED_TOOL_CALL,
    ),
    (
        "tool-against-schema",
        {"tool_calls_valid": True},
        "",
        (call("get_weather", '{"town": "Oslo"}'),),
        None,
        rec.ESCALATED_TOOL_CALL,
    ),
    (
        "refusal-fails",
        {"refusal": True},
        "I'm sorry, but I can't help with that.",
        (),
        None,
        rec.ESCALATED_REFUSAL,
    ),
    (
        "refusal-long-answer",
        {"refusal": True},
        "I'm sorry for the wait. " + ESSAY * 3,
        (),
        None,
        None,
    ),
    ("refusal-passes", {"refusal": True}, "Sure: it returns early.", (), None, None),
    ("repetition-fails", {"repetition": True}, LOOP, (), None, rec.ESCALATED_REPETITION),
    ("repetition-passes", {"repetition": True}, ESSAY, (), None, None),
    ("off-by-default", {}, "I'm sorry, but I can't. " + LOOP, (call("nope", "["),), None, None),
]


@pytest.mark.parametrize(
    ("keys", "text", "calls", "fmt", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_check(
    keys: dict[str, Any],
    text: str,
    calls: tuple[ToolCall, ...],
    fmt: Any,
    expected: str | None,
) -> None:
    cfg = CascadeConfig(**keys)
    verdict = judge(
        cfg,
        text,
        bool(calls),
        "tool_calls" if calls else "stop",
        len(text.split()) + 5 * len(calls),
        calls=calls,
        tools=(WEATHER,),
        response_format=fmt,
    )
    assert verdict == expected


CONFIG = """
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.cheap]
provider = "fake"
model_id = "m-cheap"
supports_tools = true
[models.strong]
provider = "fake"
model_id = "m-strong"
supports_tools = true
[cascade]
tool_calls_valid = true
[[rules]]
name = "cheap-first"
when = { always = true }
then = { primary = "cheap", cascade = ["strong"] }
"""
pytestmark = pytest.mark.usefixtures("clean_fake")
TOOL = {"type": "function", "function": {"name": WEATHER.name, "parameters": WEATHER.parameters}}


def openai_call(arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps(arguments)},
    }


@pytest.fixture
def client(daemon: Daemon) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    yield sdk
    sdk.close()


def test_an_invalid_tool_call_escalates_unseen_by_a_stream_client(
    client: openai.OpenAI, fake: FakeUpstream, daemon: Daemon
) -> None:
    fake.script(
        "m-cheap",
        Reply(text="", tool_calls=[openai_call({"town": "Oslo"})], finish_reason="tool_calls"),
    )
    fake.script(
        "m-strong",
        Reply(text="", tool_calls=[openai_call({"city": "Oslo"})], finish_reason="tool_calls"),
    )
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[TOOL],  # type: ignore[list-item]
        stream=True,
    )
    chunks = list(raw.parse())
    arguments = "".join(
        tc.function.arguments or ""
        for chunk in chunks
        for choice in chunk.choices
        for tc in choice.delta.tool_calls or []
        if tc.function is not None
    )
    assert json.loads(arguments) == {"city": "Oslo"}  # only the strong model's call
    assert {chunk.model for chunk in chunks} == {"strong"}
    line = daemon.wait_log(raw.headers["x-pirouter-request-id"])  # written after the answer
    assert line["chain"] == ["cheap:escalated_tool_call", "strong:ok"]


def test_a_streamed_answer_that_is_not_the_json_asked_for_escalates(
    fake: FakeUpstream, daemon: Daemon
) -> None:
    """An Ollama client's `format` schema: the cheap model's prose is held back whole and the
    strong model's JSON is what the client reads (no `json` check configured)."""
    import ollama

    schema = SCHEMA["json_schema"]["schema"]
    fake.script("m-cheap", Reply(text="It looks fine to me."))
    fake.script("m-strong", Reply(text='{"ok": true}'))
    client = ollama.Client(host=daemon.url, timeout=20)
    try:
        parts = list(
            client.chat(
                model="auto",
                messages=[{"role": "user", "content": "ok?"}],
                format=schema,
                stream=True,
            )
        )
    finally:
        client._client.close()
    assert json.loads("".join(p.message.content or "" for p in parts)) == {"ok": True}
    assert [s.body["response_format"]["json_schema"]["schema"] for s in fake.seen] == [schema] * 2
    assert parts[-1].done and parts[-1].done_reason == "stop"
