"""The OpenAI wire format, both directions, including the neutral (cross-protocol) paths."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pirouter_py.errors import RequestError, UpstreamTransportError
from pirouter_py.types import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    OtherPart,
    StreamEvent,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from pirouter_py.wire import Envelope
from pirouter_py.wire import openai as wire


def body(**extra: Any) -> bytes:
    return json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra}
    ).encode()


def test_decode_keeps_every_part_of_a_conversation() -> None:
    request = wire.decode_request(
        json.dumps(
            {
                "model": "auto",
                "stream": True,
                "stream_options": {"include_usage": True},
                "temperature": 0.5,
                "max_completion_tokens": 99,
                "top_p": 0.8,
                "seed": 3,
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "description": "d",
                            "parameters": {"type": "object"},
                        },
                    }
                ],
                "tool_choice": "auto",
                "messages": [
                    {"role": "developer", "content": "be brief"},
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": "look",
                                "cache_control": {"type": "ephemeral"},
                            },
                            {
                                "type": "image_url",
                                "image_url": {"url": "https://e/x.png", "detail": "high"},
                            },
                            {
                                "type": "input_audio",
                                "input_audio": {"data": "AAA", "format": "wav"},
                            },
                        ],
                    },
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "42"},
                ],
            }
        ).encode()
    )
    assert (request.stream, request.include_usage, request.temperature, request.max_tokens) == (
        True,
        True,
        0.5,
        99,
    )
    assert request.params == {"max_completion_tokens": 99, "top_p": 0.8, "seed": 3}
    assert request.tools == (ToolSpec("f", "d", {"type": "object"}),)
    system, user, assistant, tool = request.messages
    assert system.role == "system" and system.text == "be brief"
    assert user.content == (
        TextPart("look", {"cache_control": {"type": "ephemeral"}}),
        ImagePart("https://e/x.png", "high"),
        OtherPart(
            "input_audio", {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}
        ),
    )
    assert assistant.content == () and assistant.tool_calls == (ToolCall("c1", "f", "{}"),)
    assert tool.tool_call_id == "c1" and tool.text == "42"


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"[1]", None),
        (body(model=""), "model"),
        (body(model=3), "model"),
        (body(messages="hi"), "messages"),
        (body(stream="yes"), "stream"),
        (body(temperature="hot"), "temperature"),
        (body(max_tokens=-1), "max_tokens"),
        (body(tools={"a": 1}), "tools"),
        (body(tools=[{"type": "function", "function": {}}]), "tools[0].function"),
        (
            json.dumps({"model": "a", "messages": [{"role": "user", "content": 5}]}).encode(),
            "messages[0].content",
        ),
        (
            json.dumps(
                {"model": "a", "messages": [{"role": "user", "content": [{"text": "x"}]}]}
            ).encode(),
            "messages[0].content[0]",
        ),
        (
            json.dumps(
                {
                    "model": "a",
                    "messages": [
                        {"role": "user", "content": [{"type": "image_url", "image_url": {}}]}
                    ],
                }
            ).encode(),
            "messages[0].content[0].image_url",
        ),
        (
            json.dumps(
                {"model": "a", "messages": [{"role": "assistant", "tool_calls": [{}]}]}
            ).encode(),
            "messages[0].tool_calls[0]",
        ),
    ],
)
def test_malformed_requests_name_the_field(raw: bytes, param: str | None) -> None:
    with pytest.raises(RequestError) as caught:
        wire.decode_request(raw)
    assert caught.value.param == param and caught.value.http_status == 400


def test_same_format_pass_through_changes_only_model_and_stream_options() -> None:
    request = wire.decode_request(body(logprobs=True, stream=True, stream_options={"x": 1}))
    assert wire.encode_request(request, "gpt-x", stream=True) == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        "logprobs": True,
        "stream": True,
        "stream_options": {"x": 1, "include_usage": True},
    }
    assert wire.encode_request(request, "gpt-x", stream=False) == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        "logprobs": True,
    }


def test_neutral_request_encodes_to_openai() -> None:
    request = ChatRequest(
        "auto",
        (
            Message("system", (TextPart("sys"),)),
            Message("user", (TextPart("look"), ImagePart("data:image/png;base64,AA", None))),
            Message("assistant", (), tool_calls=(ToolCall("c1", "f", '{"a":1}'),)),
            Message("tool", (TextPart("done"),), tool_call_id="c1"),
        ),
        tools=(ToolSpec("f", None, {"type": "object"}),),
        temperature=0.1,
        max_tokens=5,
        tool_choice="required",
        params={"top_p": 0.5},
        protocol="anthropic",
    )
    assert wire.encode_request(request, "m", stream=False) == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a":1}'},
                    }
                ],
            },
            {"role": "tool", "content": "done", "tool_call_id": "c1"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "required",
        "temperature": 0.1,
        "max_tokens": 5,
        "top_p": 0.5,
    }


def test_decode_response_and_cached_tokens() -> None:
    response = wire.decode_response(
        {
            "model": "gpt",
            "choices": [
                {
                    "message": {
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 6},
            },
        },
        "p",
    )
    assert (response.text, response.finish_reason) == ("", "tool_calls")
    assert response.tool_calls == (ToolCall("c", "f", "{}"),)
    assert response.usage == Usage(10, 2, 6)


@pytest.mark.parametrize("data", [{}, {"choices": []}, {"choices": ["x"]}, []])
def test_responses_without_choices_are_retryable_errors(data: Any) -> None:
    with pytest.raises(UpstreamTransportError) as caught:
        wire.decode_response(data, "p (m)")
    assert caught.value.retryable and caught.value.message == "p (m) returned no choices"


def test_neutral_response_encodes_with_alias_and_meta() -> None:
    response = ChatResponse(
        "claude-x",
        "",
        (ToolCall("t1", "f", "{}"),),
        "tool_calls",
        Usage(3, 4),
        protocol="anthropic",
    )
    out = json.loads(
        wire.encode_response(response, Envelope("sonnet", "r1", 7, meta={"rule": "x"}))
    )
    assert out == {
        "id": "chatcmpl-r1",
        "object": "chat.completion",
        "created": 7,
        "model": "sonnet",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        "pirouter": {"rule": "x"},
    }


def chunks(data: bytes) -> list[Any]:
    return [json.loads(b[6:]) for b in data.split(b"\n\n") if b.startswith(b"data: {")]


def test_neutral_stream_encoding() -> None:
    encoder = wire.StreamEncoder(Envelope("a", "r", 1, include_usage=False))
    out = chunks(
        encoder.encode(StreamEvent(text="He"))
        + encoder.encode(StreamEvent(text="llo"))
        + encoder.encode(StreamEvent(tool_calls=(ToolCallDelta(0, "c", "f", ""),)))
        + encoder.encode(StreamEvent(tool_calls=(ToolCallDelta(0, None, None, "{}"),)))
        + encoder.encode(StreamEvent(finish_reason="tool_calls", usage=Usage(1, 2)))
    )
    deltas = [c["choices"][0]["delta"] for c in out]
    assert deltas == [
        {"role": "assistant", "content": "He"},
        {"content": "llo"},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "c",
                    "type": "function",
                    "function": {"arguments": "", "name": "f"},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all("usage" not in c for c in out) and {c["model"] for c in out} == {"a"}
    assert encoder.end() == b"data: [DONE]\n\n"
    with_usage = wire.StreamEncoder(Envelope("a", "r", 1, include_usage=True))
    # usage seen twice (as Anthropic streams send it) is sent once, at the end
    body = with_usage.encode(StreamEvent(usage=Usage(1, 0))) + with_usage.encode(
        StreamEvent(finish_reason="stop", usage=Usage(1, 2))
    )
    assert all("usage" not in c for c in chunks(body))
    last = chunks(with_usage.end())
    assert last == [
        {
            "id": "chatcmpl-r",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "a",
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }
    ]


def test_stream_error_chunk_raises() -> None:
    with pytest.raises(UpstreamTransportError, match="stream error: overloaded"):
        wire.decode_chunk({"error": {"message": "overloaded"}})


def test_an_openai_client_gets_ids_and_tool_calls_an_upstream_left_out() -> None:
    """Passed through from an OpenAI-compatible server that gives calls no id and says `stop`
    after them (vLLM, llama.cpp): the client gets the made ids and `tool_calls`, whole and
    streamed, as through every other path."""
    call = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    upstream = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "stop",
            }
        ],
    }
    answer = wire.decode_response(upstream, "p")
    body = json.loads(wire.encode_response(answer, Envelope("a", "r", 1)))
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["id"] == answer.tool_calls[0].id
    decoder = wire.StreamDecoder("p")
    chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, **call}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    encoder = wire.StreamEncoder(Envelope("a", "r", 1, include_usage=False))
    sent = b"".join(encoder.encode(decoder.decode(c)) for c in chunks)
    out = [json.loads(x[6:]) for x in sent.decode().splitlines() if x.startswith("data: {")]
    assert out[0]["choices"][0]["delta"]["tool_calls"][0]["id"].startswith("call_")
    assert out[1]["choices"][0]["finish_reason"] == "tool_calls"
