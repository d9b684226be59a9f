"""The OpenAI Responses API (`POST /v1/responses`, what Codex CLI speaks) through the real
daemon, driven by the official `openai` SDK, answered by each upstream type."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests import test_conformance
from tests.fakes import Daemon, FakeUpstream, Reply
from tests.test_conformance import CALL, TOOL, UPSTREAM_MODEL

# the `daemon` fixture runs on this module's CONFIG; kept responses need prompts kept
CONFIG = "[ledger]\nstore_prompts = true\n" + test_conformance.CONFIG
pytestmark = pytest.mark.usefixtures("clean_fake")

FUNCTION = {"type": "function", **TOOL}
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n"
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+"},
}
PATCH_CALL = {
    "id": "call_p",
    "type": "function",
    "function": {"name": "apply_patch", "arguments": json.dumps({"input": PATCH})},
}


@pytest.fixture
def client(daemon: Daemon) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    yield sdk
    sdk.close()


def route(alias: str) -> dict[str, str]:
    return {"x-pirouter-route": alias}


@pytest.mark.parametrize("alias", ["o", "a", "l"])
def test_a_whole_response(client: openai.OpenAI, fake: FakeUpstream, alias: str) -> None:
    response = client.responses.create(
        model="auto", instructions="be brief", input="hello", extra_headers=route(alias)
    )
    assert response.output_text == "Hello from the fake upstream."
    assert response.status == "completed" and response.model == alias
    assert response.usage is not None and response.usage.output_tokens == 5
    (seen,) = fake.seen
    assert seen.model == UPSTREAM_MODEL[alias]
    assert "be brief" in json.dumps(seen.body)  # the instructions, as the system prompt


@pytest.mark.parametrize("alias", ["o", "a", "l"])
def test_a_streamed_response(client: openai.OpenAI, alias: str) -> None:
    with client.responses.stream(
        model="auto", input=[{"role": "user", "content": "hello"}], extra_headers=route(alias)
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == "Hello from the fake upstream."


@pytest.mark.parametrize("alias", ["o", "a", "l"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_function_call_round_trip(
    client: openai.OpenAI, fake: FakeUpstream, alias: str, stream: bool
) -> None:
    fake.script(
        UPSTREAM_MODEL[alias],
        Reply(text="", tool_calls=[CALL], finish_reason="tool_calls"),
        Reply(text="Sunny."),
    )
    tools: Any = [FUNCTION, {"type": "web_search"}]  # a hosted tool: no chat model can run it
    asked: Any = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        with client.responses.stream(
            model="auto", input=asked, tools=tools, extra_headers=route(alias)
        ) as events:
            first = events.get_final_response()
    else:
        first = client.responses.create(
            model="auto", input=asked, tools=tools, extra_headers=route(alias)
        )
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    final = client.responses.create(
        model="auto",
        input=[
            *asked,
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "clear"},
        ],
        tools=tools,
        extra_headers=route(alias),
    )
    assert final.output_text == "Sunny."
    offered = fake.seen[0].body["tools"]
    assert len(offered) == 1 and "get_weather" in json.dumps(offered)
    resent = json.dumps(fake.seen[1].body["messages"])
    ollama_ref = '"tool_name": "get_weather"'  # Ollama names the tool, having no call ids
    assert "clear" in resent and (call.call_id if alias != "l" else ollama_ref) in resent


@pytest.mark.parametrize("stream", [False, True])
def test_a_custom_tool_is_offered_as_a_function_and_restored(
    client: openai.OpenAI, fake: FakeUpstream, stream: bool
) -> None:
    """Codex's `apply_patch` takes free-form text: a chat model gets a function of one string,
    and its call goes back to the client as a custom_tool_call with that text."""
    fake.script("m-o", Reply(text="", tool_calls=[PATCH_CALL], finish_reason="tool_calls"))
    args: Any = {
        "model": "auto",
        "input": "add hello.txt",
        "tools": [APPLY_PATCH],
        "extra_headers": route("o"),
    }
    if stream:
        with client.responses.stream(**args) as events:
            done = [e.item for e in events if e.type == "response.output_item.done"]
            response = events.get_final_response()
        assert [item.type for item in done] == ["custom_tool_call"]
    else:
        response = client.responses.create(**args)
    (item,) = response.output
    assert item.type == "custom_tool_call"
    assert (item.name, item.input, item.call_id) == ("apply_patch", PATCH, "call_p")
    (offered,) = fake.seen[0].body["tools"]
    assert offered["function"]["parameters"]["required"] == ["input"]
    assert "start: begin_patch hunk+" in offered["function"]["description"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_kept_response_continues_with_previous_response_id(
    client: openai.OpenAI, fake: FakeUpstream, stream: bool
) -> None:
    fake.script("m-o", Reply(text="Hello Ada."), Reply(text="You are Ada."))
    asked: Any = {"model": "auto", "extra_headers": route("o"), "store": True}
    if stream:
        with client.responses.stream(input="My name is Ada.", **asked) as events:
            first = events.get_final_response()
    else:
        first = client.responses.create(input="My name is Ada.", **asked)
    assert first.store is True
    second = client.responses.create(
        model="auto",
        input="What is my name?",
        previous_response_id=first.id,
        extra_headers=route("o"),
    )
    assert second.output_text == "You are Ada."
    other = openai.OpenAI(base_url=str(client.base_url), api_key="another-key", max_retries=0)
    with pytest.raises(openai.BadRequestError):  # only the key that kept it continues from it
        other.responses.create(model="auto", input="Name?", previous_response_id=first.id)
    other.close()
    sent = [(m["role"], m["content"]) for m in fake.seen[1].body["messages"]]
    assert sent == [
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
        ("user", "What is my name?"),
    ]


def test_an_unknown_previous_response_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="auto", input="more", previous_response_id="resp_nope")
    body: Any = raised.value.body
    assert body["param"] == "previous_response_id" and "store: true" in body["message"]


def test_responses_are_kept_only_when_asked(client: openai.OpenAI) -> None:
    first = client.responses.create(model="auto", input="hi", extra_headers=route("o"))
    assert first.store is False
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="auto", input="more", previous_response_id=first.id)


def test_a_kept_response_outlives_a_restart(fake: FakeUpstream, tmp_path: Path) -> None:
    """Kept responses are in the ledger (its `responses` table), not only in memory."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("{url}", fake.url))
    fake.script("m-o", Reply(text="Noted."), Reply(text="Blue."))
    first_daemon = Daemon(config).start()
    try:
        sdk = openai.OpenAI(base_url=first_daemon.url + "/v1", api_key="x", max_retries=0)
        kept = sdk.responses.create(
            model="auto", input="My colour is blue.", store=True, extra_headers=route("o")
        )
        sdk.close()
    finally:
        first_daemon.stop()
    second_daemon = Daemon(config).start()
    try:
        sdk = openai.OpenAI(base_url=second_daemon.url + "/v1", api_key="x", max_retries=0)
        answer = sdk.responses.create(
            model="auto", input="Which?", previous_response_id=kept.id, extra_headers=route("o")
        )
        sdk.close()
    finally:
        second_daemon.stop()
    assert answer.output_text == "Blue."
    assert "My colour is blue." in json.dumps(fake.seen[-1].body["messages"])


def test_an_upstream_failure_mid_stream_is_response_failed(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.script("m-o", Reply(kind="cut", chunks=2))
    with client.responses.stream(model="auto", input="hello", extra_headers=route("o")) as stream:
        kinds = [e.type for e in stream]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds


@pytest.mark.parametrize("stream", [False, True])
def test_codex_compaction_is_a_summary_written_by_a_chat_model(
    client: openai.OpenAI, fake: FakeUpstream, stream: bool
) -> None:
    """Codex's remote compaction: a compaction_trigger item asks for one compaction item that
    stands for the conversation so far; the next turn starts from it."""
    fake.script("m-o", Reply(text="Ada is renaming the module."), Reply(text="Go on."))
    history: Any = [
        {"role": "user", "content": "Rename the module, I am Ada."},
        {"role": "assistant", "content": "Renaming."},
        {"type": "compaction_trigger"},
    ]
    tools: Any = [FUNCTION]  # offered, but a summary is asked for: no tool to call
    if stream:
        with client.responses.stream(
            model="auto", input=history, tools=tools, extra_headers=route("o")
        ) as events:
            done = [e.item.type for e in events if e.type == "response.output_item.done"]
            compacted = events.get_final_response()
        assert done == ["compaction"]
    else:
        compacted = client.responses.create(
            model="auto", input=history, tools=tools, extra_headers=route("o")
        )
    assert "tools" not in fake.seen[0].body
    (item,) = [i.model_dump() for i in compacted.output]
    assert item["type"] == "compaction"
    assert item["encrypted_content"] == "pirouter-summary:Ada is renaming the module."
    asked = fake.seen[0].body["messages"][-1]
    assert asked["role"] == "user" and "summary of the conversation" in asked["content"]
    client.responses.create(
        model="auto",
        input=[item, {"role": "user", "content": "continue"}],
        extra_headers=route("o"),
    )
    sent = fake.seen[1].body["messages"]
    assert "Ada is renaming the module." in sent[0]["content"] and sent[-1]["content"] == "continue"


def test_the_compact_endpoint_returns_one_compaction_item(
    daemon: Daemon, fake: FakeUpstream
) -> None:
    fake.script("m-o", Reply(text="Ada renames the module."))
    body = {"model": "auto", "input": [{"role": "user", "content": "Rename it, I am Ada."}]}
    request = urllib.request.Request(
        daemon.url + "/v1/responses/compact",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **route("o")},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        answer = json.loads(response.read())
    assert answer["object"] == "response.compaction"
    (item,) = answer["output"]
    assert item == {
        "type": "compaction",
        "id": item["id"],
        "encrypted_content": "pirouter-summary:Ada renames the module.",
    }
    asked = fake.seen[0].body["messages"]
    assert asked[0]["content"] == "Rename it, I am Ada." and "summary" in asked[-1]["content"]


def test_structured_output_becomes_response_format(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    client.responses.create(
        model="auto",
        input="is it ok?",
        text={"format": {"type": "json_schema", "name": "verdict", "schema": schema}},
        extra_headers=route("o"),
    )
    sent = fake.seen[0].body["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}
