"""The official anthropic and ollama clients as clients of the daemon; and the upstream adapters
run against an independent implementation of each format (PyPI's llmock), so that a misreading of
a format shared by our own fakes and our adapters still shows up."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import TypeVar

import anthropic
import ollama
import openai
import pytest

from tests import test_conformance
from tests.fakes import Daemon, FakeUpstream, LLMock, Reply
from tests.test_conformance import CALL, TOOL

WEATHER = {
    "name": TOOL["name"],
    "description": TOOL["description"],
    "input_schema": TOOL["parameters"],
}


CONFIG = test_conformance.CONFIG  # the `daemon` fixture runs on this module's CONFIG
pytestmark = pytest.mark.usefixtures("clean_fake")


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


OPEN: list[anthropic.Anthropic | ollama.Client | openai.OpenAI] = []


Client = TypeVar("Client", anthropic.Anthropic, ollama.Client, openai.OpenAI)


def opened(client: Client) -> Client:
    OPEN.append(client)
    return client


# --- the anthropic SDK (what Claude Code speaks) ------------------------------------------------


def claude(daemon: Daemon, alias: str) -> anthropic.Anthropic:
    return opened(
        anthropic.Anthropic(
            base_url=daemon.url,
            api_key="unused",
            max_retries=0,
            timeout=20,
            default_headers={"x-pirouter-route": alias},
        )
    )


@pytest.mark.parametrize("alias", ["o", "a", "l"])
def test_anthropic_sdk_messages(daemon: Daemon, fake: FakeUpstream, alias: str) -> None:
    message = claude(daemon, alias).messages.create(
        model="auto",
        max_tokens=100,
        system="be brief",
        messages=[{"role": "user", "content": "hello"}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the fake upstream."
    assert message.model == alias and message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 5


@pytest.mark.parametrize("alias", ["o", "a", "l"])
def test_anthropic_sdk_streaming(daemon: Daemon, alias: str) -> None:
    with claude(daemon, alias).messages.stream(
        model="auto", max_tokens=100, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake upstream."
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5


@pytest.mark.parametrize("alias", ["o", "a", "l"])
def test_anthropic_sdk_tool_use(daemon: Daemon, fake: FakeUpstream, alias: str) -> None:
    model = {"o": "m-o", "a": "m-a", "l": "m-l"}[alias]
    fake.script(
        model, Reply(text="", tool_calls=[CALL], finish_reason="tool_calls"), Reply(text="Sunny.")
    )
    sdk = claude(daemon, alias)
    first = sdk.messages.create(
        model="auto",
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "weather?"}],
    )
    use = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and use.name == "get_weather"
    assert use.input == {"city": "Paris"}
    final = sdk.messages.create(
        model="auto",
        max_tokens=100,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},  # type: ignore[misc]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "clear"}],
            },
        ],
    )
    assert final.content[0].type == "text" and final.content[0].text == "Sunny."


def test_anthropic_errors_are_anthropic_shaped(daemon: Daemon, fake: FakeUpstream) -> None:
    fake.script("m-a", Reply(kind="status", status=403, error="forbidden"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude(daemon, "a").messages.create(
            model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": 'up-anthropic (m-a): 403 Forbidden: {"type": "error", '
            '"error": {"type": "invalid_request_error", "message": "forbidden"}, '
            '"request_id": "req_fake"}',
        },
    }
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude(daemon, "nope").messages.create(
            model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert bad.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "rule `pin` selected unknown model alias `nope`",
        },
    }


def test_anthropic_count_tokens(daemon: Daemon) -> None:
    counted = claude(daemon, "a").messages.count_tokens(
        model="auto", messages=[{"role": "user", "content": "x" * 300}]
    )
    assert counted.input_tokens == 104  # 300 // 3 + 4, pirouter's estimate


# --- the ollama client (what Open WebUI and ollama-python speak) --------------------------------


def local(daemon: Daemon, alias: str) -> ollama.Client:
    return opened(ollama.Client(host=daemon.url, headers={"x-pirouter-route": alias}, timeout=20))


@pytest.mark.parametrize("alias", ["o", "a", "l"])
def test_ollama_client_chat_and_stream(daemon: Daemon, alias: str) -> None:
    client = local(daemon, alias)
    answer = client.chat(model="auto", messages=[{"role": "user", "content": "hello"}])
    assert answer.message.content == "Hello from the fake upstream."
    assert answer.done and answer.model == alias and answer.eval_count == 5
    parts = list(
        client.chat(model="auto", stream=True, messages=[{"role": "user", "content": "hello"}])
    )
    assert "".join(p.message.content or "" for p in parts) == "Hello from the fake upstream."
    assert parts[-1].done and parts[-1].done_reason == "stop"


@pytest.mark.parametrize("alias", ["o", "a", "l"])
def test_ollama_client_tool_calls(daemon: Daemon, fake: FakeUpstream, alias: str) -> None:
    model = {"o": "m-o", "a": "m-a", "l": "m-l"}[alias]
    fake.script(model, Reply(text="", tool_calls=[CALL], finish_reason="tool_calls"))
    answer = local(daemon, alias).chat(
        model="auto",
        tools=[{"type": "function", "function": TOOL}],
        messages=[{"role": "user", "content": "weather?"}],
    )
    calls = answer.message.tool_calls or []
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]


def test_ollama_listing_endpoints(daemon: Daemon) -> None:
    client = local(daemon, "o")
    assert [m.model for m in client.list().models] == ["auto", "a", "l", "o"]
    shown = client.show("a")
    assert shown.capabilities == ["completion", "tools", "vision"]
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("missing")
    assert caught.value.status_code == 404 and "model 'missing' not found" in caught.value.error
    with urllib.request.urlopen(daemon.url + "/api/version", timeout=10) as response:
        assert json.loads(response.read())["version"]


def test_ollama_errors_are_ollama_shaped(daemon: Daemon, fake: FakeUpstream) -> None:
    fake.script("m-l", Reply(kind="status", status=404, error="model 'm-l' not found"))
    with pytest.raises(ollama.ResponseError) as caught:
        local(daemon, "l").chat(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert caught.value.error == (
        'up-ollama (m-l): 404 Not Found: {"error": "model \'m-l\' not found"}'
    )


# --- llmock: an independent implementation of the OpenAI and Anthropic formats ----------------


@pytest.fixture(scope="module")
def llmock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    mock = LLMock().start()
    url = mock.url
    path = tmp_path_factory.mktemp("llmock") / "config.toml"
    path.write_text(f"""
[providers.mock-openai]
type = "openai"
base_url = "{url}/v1"
api_key = "k"
[providers.mock-anthropic]
type = "anthropic"
base_url = "{url}/anthropic"
api_key = "k"
[models.mo]
provider = "mock-openai"
model_id = "gpt-4o-mini"
supports_tools = true
[models.ma]
provider = "mock-anthropic"
model_id = "claude-sonnet-4-5"
supports_tools = true
[[rules]]
name = "pin"
when = {{ header = {{ name = "x-pirouter-route", any_value = true }} }}
then = {{ primary = "$header:x-pirouter-route" }}
""")
    process = Daemon(path).start()
    yield process
    process.stop()
    mock.stop()


ECHO = "Hello! You said: ping pong"


@pytest.mark.parametrize("alias", ["mo", "ma"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_openai_client_through_llmock(llmock: Daemon, alias: str, stream: bool) -> None:
    sdk = opened(
        openai.OpenAI(
            base_url=llmock.url + "/v1",
            api_key="x",
            max_retries=0,
            timeout=20,
            default_headers={"x-pirouter-route": alias},
        )
    )
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping pong"}]
    if stream:
        chunks = sdk.chat.completions.create(
            model="auto",
            messages=messages,
            stream=True,  # type: ignore[call-overload]
            stream_options={"include_usage": True},
        )
        collected = list(chunks)
        text = "".join(c.choices[0].delta.content or "" for c in collected if c.choices)
        assert collected[-1].usage is not None and collected[-1].usage.completion_tokens > 0
    else:
        done = sdk.chat.completions.create(model="auto", messages=messages)  # type: ignore[arg-type]
        text = done.choices[0].message.content or ""
        assert done.usage is not None and done.usage.completion_tokens > 0
    # llmock echoes every message of an OpenAI request, but Anthropic's system is no message:
    # the echo shows that the system prompt landed where each format wants it.
    assert text == ("Hello! You said: be brief ping pong" if alias == "mo" else ECHO)


@pytest.mark.parametrize("alias", ["mo", "ma"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_anthropic_client_through_llmock(llmock: Daemon, alias: str, stream: bool) -> None:
    sdk = opened(
        anthropic.Anthropic(
            base_url=llmock.url,
            api_key="x",
            max_retries=0,
            timeout=20,
            default_headers={"x-pirouter-route": alias},
        )
    )
    if stream:
        with sdk.messages.stream(
            model="auto", max_tokens=64, messages=[{"role": "user", "content": "ping pong"}]
        ) as events:
            text = "".join(events.text_stream)
    else:
        message = sdk.messages.create(
            model="auto", max_tokens=64, messages=[{"role": "user", "content": "ping pong"}]
        )
        text = "".join(b.text for b in message.content if b.type == "text")
    assert text == ECHO


@pytest.mark.parametrize("alias", ["mo", "ma"])
def test_tool_round_trip_through_llmock(llmock: Daemon, alias: str) -> None:
    sdk = opened(
        openai.OpenAI(
            base_url=llmock.url + "/v1",
            api_key="x",
            max_retries=0,
            timeout=20,
            default_headers={"x-pirouter-route": alias},
        )
    )
    tools = [{"type": "function", "function": TOOL}]
    messages: list[dict[str, object]] = [{"role": "user", "content": "weather in Paris?"}]
    first = sdk.chat.completions.create(model="auto", messages=messages, tools=tools)  # type: ignore[arg-type]
    calls = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls" and len(calls) == 1
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": '{"sky": "clear"}'},
    ]
    final = sdk.chat.completions.create(model="auto", messages=messages, tools=tools)  # type: ignore[arg-type]
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.content
