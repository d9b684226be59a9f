"""Every inbound format x every upstream format (9 pairs): plain text, system prompt, multi-turn,
a tool round trip, image input, streaming and an upstream error. Each case checks what the client
got, in its own format, and what the upstream received, in its own."""

from __future__ import annotations

import base64
import http.client
import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fakes import Daemon, FakeUpstream, Reply, Seen

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CALL_ARGS = {"city": "Paris"}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": json.dumps(CALL_ARGS)},
}

CONFIG = """
[providers.up-openai]
type = "openai"
base_url = "{url}"
api_key = "k-openai"
[providers.up-anthropic]
type = "anthropic"
base_url = "{url}"
api_key = "k-anthropic"
[providers.up-ollama]
type = "ollama"
base_url = "{url}"

[models.o]
provider = "up-openai"
model_id = "m-o"
supports_tools = true
supports_vision = true
[models.a]
provider = "up-anthropic"
model_id = "m-a"
supports_tools = true
supports_vision = true
[models.l]
provider = "up-ollama"
model_id = "m-l"
supports_tools = true
supports_vision = true

[[rules]]
name = "pin"
when = { header = { name = "x-pirouter-route", any_value = true } }
then = { primary = "$header:x-pirouter-route" }
"""
UPSTREAM_MODEL = {"o": "m-o", "a": "m-a", "l": "m-l"}


# --- the three client formats -------------------------------------------------------------------

Turn = tuple[str, str]  # (role, text)


@dataclass
class Answer:
    text: str
    calls: list[tuple[str | None, str, dict[str, Any]]]  # (id, name, arguments)


class OpenAIClient:
    path = "/v1/chat/completions"

    def body(
        self,
        turns: list[Turn],
        *,
        image: bool = False,
        tools: bool = False,
        stream: bool = False,
        tool_result: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{"role": r, "content": t} for r, t in turns]
        if image:
            messages[-1]["content"] = [
                {"type": "text", "text": turns[-1][1]},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ]
        if tool_result:
            call_id, result = tool_result
            messages += [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": json.dumps(CALL_ARGS)},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": call_id, "content": result},
            ]
        out: dict[str, Any] = {"model": "auto", "messages": messages, "stream": stream}
        if tools:
            out["tools"] = [{"type": "function", "function": TOOL}]
        return out

    def parse(self, data: bytes, stream: bool) -> Answer:
        if not stream:
            message = json.loads(data)["choices"][0]["message"]
            calls = [
                (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
                for c in message.get("tool_calls") or []
            ]
            return Answer(message.get("content") or "", calls)
        text, calls = "", {}
        for block in data.split(b"\n\n"):
            if not block.startswith(b"data: {"):
                continue
            chunk = json.loads(block[6:])
            for choice in chunk.get("choices") or []:
                text += choice["delta"].get("content") or ""
                for tc in choice["delta"].get("tool_calls") or []:
                    entry = calls.setdefault(tc["index"], [None, "", ""])
                    entry[0] = tc.get("id") or entry[0]
                    entry[1] = tc.get("function", {}).get("name") or entry[1]
                    entry[2] += tc.get("function", {}).get("arguments") or ""
        return Answer(text, [(i, n, json.loads(a)) for i, n, a in calls.values()])

    def error(self, data: bytes) -> str:
        return str(json.loads(data)["error"]["message"])


class AnthropicClient:
    path = "/v1/messages"

    def body(
        self,
        turns: list[Turn],
        *,
        image: bool = False,
        tools: bool = False,
        stream: bool = False,
        tool_result: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        system = [t for r, t in turns if r == "system"]
        messages: list[dict[str, Any]] = [
            {"role": r, "content": t} for r, t in turns if r != "system"
        ]
        if image:
            messages[-1]["content"] = [
                {"type": "text", "text": messages[-1]["content"]},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
            ]
        if tool_result:
            call_id, result = tool_result
            messages += [
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": call_id,
                            "name": "get_weather",
                            "input": CALL_ARGS,
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": call_id, "content": result}],
                },
            ]
        out: dict[str, Any] = {
            "model": "auto",
            "max_tokens": 256,
            "messages": messages,
            "stream": stream,
        }
        if system:
            out["system"] = "\n".join(system)
        if tools:
            out["tools"] = [
                {
                    "name": TOOL["name"],
                    "description": TOOL["description"],
                    "input_schema": TOOL["parameters"],
                }
            ]
        return out

    def parse(self, data: bytes, stream: bool) -> Answer:
        if not stream:
            content = json.loads(data)["content"]
            return Answer(
                "".join(b["text"] for b in content if b["type"] == "text"),
                [(b["id"], b["name"], b["input"]) for b in content if b["type"] == "tool_use"],
            )
        text, blocks = "", {}
        for block in data.split(b"\n\n"):
            lines = dict(
                line.split(": ", 1) for line in block.decode().splitlines() if ": " in line
            )
            if "data" not in lines:
                continue
            event = json.loads(lines["data"])
            assert event["type"] == lines["event"]
            if (
                event["type"] == "content_block_start"
                and event["content_block"]["type"] == "tool_use"
            ):
                cb = event["content_block"]
                blocks[event["index"]] = [cb["id"], cb["name"], ""]
            elif event["type"] == "content_block_delta":
                delta = event["delta"]
                if delta["type"] == "text_delta":
                    text += delta["text"]
                elif delta["type"] == "input_json_delta":
                    blocks[event["index"]][2] += delta["partial_json"]
        return Answer(text, [(i, n, json.loads(a or "{}")) for i, n, a in blocks.values()])

    def error(self, data: bytes) -> str:
        body = json.loads(data)
        assert body["type"] == "error"
        return str(body["error"]["message"])


class OllamaClient:
    path = "/api/chat"

    def body(
        self,
        turns: list[Turn],
        *,
        image: bool = False,
        tools: bool = False,
        stream: bool = False,
        tool_result: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{"role": r, "content": t} for r, t in turns]
        if image:
            messages[-1]["images"] = [PNG]
        if tool_result:
            _, result = tool_result
            messages += [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "get_weather", "arguments": CALL_ARGS}}],
                },
                {"role": "tool", "content": result, "tool_name": "get_weather"},
            ]
        out: dict[str, Any] = {"model": "auto", "messages": messages, "stream": stream}
        if tools:
            out["tools"] = [{"type": "function", "function": TOOL}]
        return out

    def parse(self, data: bytes, stream: bool) -> Answer:
        lines = [json.loads(line) for line in data.splitlines() if line.strip()]
        if not stream:
            assert len(lines) == 1
        assert lines[-1]["done"] is True
        text = "".join(line["message"].get("content") or "" for line in lines)
        calls = [
            (None, c["function"]["name"], c["function"]["arguments"])
            for line in lines
            for c in line["message"].get("tool_calls") or []
        ]
        return Answer(text, calls)

    def error(self, data: bytes) -> str:
        return str(json.loads(data)["error"])


CLIENTS = {"openai": OpenAIClient(), "anthropic": AnthropicClient(), "ollama": OllamaClient()}


# --- what an upstream received, read in its own format -----------------------------------------


def upstream_view(seen: Seen) -> dict[str, Any]:
    """System text, (role, text) turns, image count and tool results, from an upstream body."""
    body = seen.body
    turns: list[tuple[str, str]] = []
    images = 0
    results: list[tuple[str | None, str]] = []
    calls: list[str | None] = []
    system = ""
    if seen.path == "/v1/messages":
        raw_system = body.get("system") or ""
        system = (
            raw_system if isinstance(raw_system, str) else "".join(b["text"] for b in raw_system)
        )
        for m in body["messages"]:
            content = m["content"]
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            text = "".join(b.get("text", "") for b in blocks if b["type"] == "text")
            images += sum(b["type"] == "image" for b in blocks)
            for b in blocks:
                if b["type"] == "tool_result":
                    inner = b.get("content")
                    results.append(
                        (
                            b["tool_use_id"],
                            inner
                            if isinstance(inner, str)
                            else "".join(x.get("text", "") for x in inner or []),
                        )
                    )
                if b["type"] == "tool_use":
                    calls.append(b["id"])
            if text:
                turns.append((m["role"], text))
    else:
        for m in body["messages"]:
            content = m.get("content") or ""
            if isinstance(content, list):
                images += sum(p["type"] == "image_url" for p in content)
                content = "".join(p.get("text", "") for p in content if p["type"] == "text")
            images += len(m.get("images") or [])
            calls += [c.get("id") for c in m.get("tool_calls") or []]
            if m["role"] == "system":
                system += content
            elif m["role"] == "tool":
                results.append((m.get("tool_call_id") or m.get("tool_name"), content))
            elif content:
                turns.append((m["role"], content))
    return {"system": system, "turns": turns, "images": images, "results": results, "calls": calls}


# --- fixtures ---------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("clean_fake")


def post(daemon: Daemon, client: Any, alias: str, body: dict[str, Any]) -> tuple[int, bytes]:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    conn.request(
        "POST",
        client.path,
        body=json.dumps(body),
        headers={"content-type": "application/json", "x-pirouter-route": alias},
    )
    response = conn.getresponse()
    out = response.status, response.read()
    conn.close()
    return out


PAIRS = [(c, u) for c in CLIENTS for u in ("o", "a", "l")]
IDS = [f"{c}->{ {'o': 'openai', 'a': 'anthropic', 'l': 'ollama'}[u] }" for c, u in PAIRS]
pair = pytest.mark.parametrize(("inbound", "alias"), PAIRS, ids=IDS)


@pair
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_plain_text(
    daemon: Daemon, fake: FakeUpstream, inbound: str, alias: str, stream: bool
) -> None:
    client = CLIENTS[inbound]
    fake.default(UPSTREAM_MODEL[alias], Reply(text="Bonjour from the upstream, friend."))
    status, data = post(daemon, client, alias, client.body([("user", "hello")], stream=stream))
    assert status == 200, data
    assert client.parse(data, stream) == Answer("Bonjour from the upstream, friend.", [])
    assert fake.models_called() == [UPSTREAM_MODEL[alias]]
    assert upstream_view(fake.seen[0])["turns"] == [("user", "hello")]
    assert bool(fake.seen[0].body.get("stream", alias == "l")) is stream


@pair
def test_system_prompt(daemon: Daemon, fake: FakeUpstream, inbound: str, alias: str) -> None:
    client = CLIENTS[inbound]
    status, _ = post(
        daemon, client, alias, client.body([("system", "You are terse."), ("user", "hello")])
    )
    view = upstream_view(fake.seen[0])
    assert status == 200 and view["system"] == "You are terse."
    assert view["turns"] == [("user", "hello")]


@pair
def test_multi_turn(daemon: Daemon, fake: FakeUpstream, inbound: str, alias: str) -> None:
    client = CLIENTS[inbound]
    turns = [("user", "my name is Ada"), ("assistant", "Hello Ada"), ("user", "what is my name?")]
    status, _ = post(daemon, client, alias, client.body(turns))
    assert status == 200 and upstream_view(fake.seen[0])["turns"] == turns


@pair
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tool_round_trip(
    daemon: Daemon, fake: FakeUpstream, inbound: str, alias: str, stream: bool
) -> None:
    client = CLIENTS[inbound]
    model = UPSTREAM_MODEL[alias]
    fake.script(
        model,
        Reply(text="", tool_calls=[CALL], finish_reason="tool_calls"),
        Reply(text="It is sunny in Paris."),
    )
    status, data = post(
        daemon,
        client,
        alias,
        client.body([("user", "weather in Paris?")], tools=True, stream=stream),
    )
    first = client.parse(data, stream)
    assert status == 200 and len(first.calls) == 1
    call_id, name, args = first.calls[0]
    assert (name, args) == ("get_weather", CALL_ARGS)
    if inbound != "ollama":  # Ollama's format has no call ids
        # the upstream's id, or for Ollama (which gives none) one made up
        assert call_id == "call_1" if alias != "l" else call_id and call_id.startswith("call_")
    status, data = post(
        daemon,
        client,
        alias,
        client.body(
            [("user", "weather in Paris?")],
            tools=True,
            tool_result=(call_id or "", '{"sky": "clear"}'),
        ),
    )
    assert status == 200 and client.parse(data, False).text == "It is sunny in Paris."
    view = upstream_view(fake.seen[1])
    assert [r for _, r in view["results"]] == ['{"sky": "clear"}']
    result_id = view["results"][0][0]
    if alias == "l":  # Ollama reads the name (older servers) or the id (api/types.go)
        (result,) = [m for m in fake.seen[1].body["messages"] if m["role"] == "tool"]
        assert result["tool_name"] == "get_weather"
        if inbound != "ollama":  # an Ollama client's body passes as it was: by name only
            assert result_id == result["tool_call_id"]
    if alias != "l" or inbound != "ollama":  # the result answers the call it follows, by id
        assert result_id == view["calls"][0]
        if inbound != "ollama":
            assert result_id == call_id
    tools = fake.seen[0].body["tools"]
    assert len(tools) == 1 and json.dumps(tools).count("get_weather") == 1


@pair
def test_image_input(daemon: Daemon, fake: FakeUpstream, inbound: str, alias: str) -> None:
    client = CLIENTS[inbound]
    status, _ = post(daemon, client, alias, client.body([("user", "what is this?")], image=True))
    view = upstream_view(fake.seen[0])
    assert status == 200 and view["images"] == 1 and view["turns"] == [("user", "what is this?")]
    assert PNG in json.dumps(fake.seen[0].body)


@pair
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_upstream_error(
    daemon: Daemon, fake: FakeUpstream, inbound: str, alias: str, stream: bool
) -> None:
    client = CLIENTS[inbound]
    fake.script(UPSTREAM_MODEL[alias], Reply(kind="status", status=400, error="bad input here"))
    status, data = post(daemon, client, alias, client.body([("user", "hi")], stream=stream))
    message = client.error(data)
    assert status == 502
    assert message.startswith(
        f"up-{ {'o': 'openai', 'a': 'anthropic', 'l': 'ollama'}[alias] } "
        f"({UPSTREAM_MODEL[alias]}): 400 Bad Request: "
    )
    assert "bad input here" in message
