"""Anthropic and Ollama translation details: merging, cache tokens, tool choice, capability 400s."""

from __future__ import annotations

import json

import pytest

from pirouter_py.config import ModelConfig
from pirouter_py.errors import RequestError
from pirouter_py.types import (
    ChatRequest,
    ChatResponse,
    ImagePart,
    Message,
    OtherPart,
    TextPart,
    ToolCall,
    Usage,
)
from pirouter_py.wire import Envelope, anthropic, ollama
from pirouter_py.wire import openai as openai_wire


def neutral(*messages: Message, **kw: object) -> ChatRequest:
    return ChatRequest("auto", messages, protocol="openai", **kw)  # type: ignore[arg-type]


def test_anthropic_merges_same_role_turns_and_keeps_cache_control() -> None:
    request = openai_wire.decode_request(
        json.dumps(
            {
                "model": "auto",
                "messages": [
                    {
                        "role": "system",
                        "content": [
                            {
                                "type": "text",
                                "text": "rules",
                                "cache_control": {"type": "ephemeral"},
                            }
                        ],
                    },
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "t1",
                                "type": "function",
                                "function": {"name": "f", "arguments": '{"x": 1}'},
                            },
                            {
                                "id": "t2",
                                "type": "function",
                                "function": {"name": "g", "arguments": "{}"},
                            },
                        ],
                    },
                    {"role": "tool", "tool_call_id": "t1", "content": "one"},
                    {"role": "tool", "tool_call_id": "t2", "content": "two"},
                ],
            }
        ).encode()
    )
    body = anthropic.encode_request(request, "claude", stream=False, default_max_tokens=77)
    assert body["system"] == [
        {"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["max_tokens"] == 77
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}},
                {"type": "tool_use", "id": "t2", "name": "g", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "one"}],
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "t2",
                    "content": [{"type": "text", "text": "two"}],
                },
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
    ],
)
def test_anthropic_tool_choice(choice: object, expected: dict[str, object]) -> None:
    from pirouter_py.types import ToolSpec

    request = neutral(Message("user", (TextPart("x"),)), tools=(ToolSpec("f"),), tool_choice=choice)
    assert anthropic.encode_request(request, "c", stream=False)["tool_choice"] == expected


def test_anthropic_sampling_params_and_images() -> None:
    request = neutral(
        Message(
            "user",
            (
                TextPart("x"),
                ImagePart("data:image/jpeg;base64,QUJD"),
                ImagePart("https://e.x/cat.png"),
            ),
        ),
        temperature=0.2,
        max_tokens=9,
        params={"top_p": 0.5, "stop": "END", "user": "u1", "seed": 3},
    )
    body = anthropic.encode_request(request, "c", stream=True)
    assert {
        k: body[k]
        for k in ("temperature", "max_tokens", "top_p", "stop_sequences", "metadata", "stream")
    } == {
        "temperature": 0.2,
        "max_tokens": 9,
        "top_p": 0.5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "stream": True,
    }
    assert "seed" not in body
    assert body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
        {"type": "image", "source": {"type": "url", "url": "https://e.x/cat.png"}},
    ]


def test_anthropic_refuses_what_it_cannot_take() -> None:
    with pytest.raises(RequestError) as caught:
        anthropic.encode_request(
            neutral(Message("user", (TextPart("x"),)), params={"n": 2}), "c", stream=False
        )
    assert caught.value.param == "n" and caught.value.http_status == 400


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_structured_output_reaches_anthropic_natively_or_as_a_forced_tool() -> None:
    """A JSON schema goes as `output_config.format`; a free-form JSON object (which Anthropic
    has no mode for) as a forced call of the answer tool, whose input comes back as text."""
    ask = Message("user", (TextPart("x"),))
    spec = {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}}
    body = anthropic.encode_request(
        neutral(ask, params={"response_format": spec}), "c", stream=False
    )
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert "tools" not in body
    loose = {"response_format": {"type": "json_object"}}
    body = anthropic.encode_request(neutral(ask, params=loose), "c", stream=False)
    assert body["tool_choice"] == {"type": "tool", "name": anthropic.ANSWER_TOOL}
    assert [t["name"] for t in body["tools"]] == [anthropic.ANSWER_TOOL]
    call = {"type": "tool_use", "id": "toolu_1", "name": anthropic.ANSWER_TOOL, "input": {"a": 1}}
    answer = anthropic.decode_response(
        {"content": [call], "stop_reason": "tool_use", "usage": {}}, "p"
    )
    assert (json.loads(answer.text), answer.tool_calls, answer.finish_reason) == (
        {"a": 1},
        (),
        "stop",
    )
    decoder = anthropic.StreamDecoder("p")
    events = [
        {"type": "content_block_start", "index": 0, "content_block": call | {"input": {}}},
        *(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": p},
            }
            for p in ('{"a"', ": 1}")
        ),
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 3},
        },
    ]
    decoded = [decoder.decode(e) for e in events]
    assert "".join(e.text for e in decoded) == '{"a": 1}'
    assert not any(e.tool_calls for e in decoded) and decoded[-1].finish_reason == "stop"


def test_a_model_without_structured_outputs_gets_the_schema_as_a_forced_tool() -> None:
    spec = {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}}
    ask = neutral(Message("user", (TextPart("x"),)), params={"response_format": spec})
    body = anthropic.encode_request(ask, "c", stream=True, json_by_tool=True)
    assert "output_config" not in body
    assert body["tools"] == [
        {
            "name": anthropic.ANSWER_TOOL,
            "description": "Give your whole answer as this JSON object.",
            "input_schema": SCHEMA,
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": anthropic.ANSWER_TOOL}


@pytest.mark.parametrize(
    ("model_id", "setting", "by_tool"),
    [
        ("claude-3-5-haiku-20241022", None, True),
        ("claude-sonnet-4-20250514", None, True),
        ("claude-opus-4-0", None, True),
        ("claude-sonnet-4-5", None, False),
        ("claude-opus-4-1-20250805", None, False),
        ("claude-haiku-4-5-20251001", None, False),
        ("claude-haiku-4-5-20251001", "tool", True),
        ("claude-3-haiku-20240307", "native", False),
    ],
)
def test_which_models_are_asked_for_json_by_tool(
    model_id: str, setting: str | None, by_tool: bool
) -> None:
    model = ModelConfig(provider="anthropic", model_id=model_id, structured_output=setting)
    assert model.json_by_tool is by_tool


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", {"type": "json_object"}),
        (SCHEMA, {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA}}),
    ],
)
def test_ollama_format_and_anthropic_output_config_are_structured_output(
    fmt: object, expected: dict[str, object]
) -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "x"}], "format": fmt}
    assert ollama.decode_request(json.dumps(body).encode()).params["response_format"] == expected
    body = {
        "model": "auto",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
    }
    got = anthropic.decode_request(json.dumps(body).encode()).params["response_format"]
    assert got["json_schema"]["schema"] == SCHEMA
    # and toward the other upstreams in their own form
    request = anthropic.decode_request(json.dumps(body).encode())
    assert ollama.encode_request(request, "l", stream=False)["format"] == SCHEMA
    assert openai_wire.encode_request(request, "o", stream=False)["response_format"] == got


def test_ollama_tool_calls_get_ids_no_turn_repeats() -> None:
    """Ollama gives calls no id; the same answer twice (two turns) gets two different ids."""
    line = {
        "model": "l",
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"index": 0, "name": "read", "arguments": {"p": "a"}}}],
        },
        "done": True,
        "done_reason": "stop",
    }
    first = ollama.decode_response(line, "p").tool_calls[0]
    second = ollama.decode_response(line, "p").tool_calls[0]
    streamed = ollama.StreamDecoder("p").decode(line).tool_calls[0]
    assert len({first.id, second.id, streamed.id}) == 3
    assert all(i and i.startswith("call_") for i in (first.id, second.id, streamed.id))
    assert ollama.decode_response(line, "p").finish_reason == "tool_calls"


def test_ollama_tool_results_map_to_their_calls_by_name_and_order() -> None:
    """Two calls of one tool and one of another; results come back by `tool_name` only."""
    calls = [
        {"function": {"name": "read", "arguments": {"p": "a"}}},
        {"function": {"name": "ls", "arguments": {}}},
        {"function": {"name": "read", "arguments": {"p": "b"}}},
    ]
    body = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "", "tool_calls": calls},
            {"role": "tool", "tool_name": "read", "content": "A"},
            {"role": "tool", "tool_name": "read", "content": "B"},
            {"role": "tool", "tool_name": "ls", "content": "L"},
            {"role": "assistant", "content": "", "tool_calls": calls[:1]},
            {"role": "tool", "content": "A again"},
        ],
    }
    request = ollama.decode_request(json.dumps(body).encode())
    ids = [c.id for c in request.messages[1].tool_calls]
    assert len(set(ids)) == 3
    results = {m.text: m.tool_call_id for m in request.messages if m.role == "tool"}
    assert results["A"] == ids[0] and results["B"] == ids[2] and results["L"] == ids[1]
    later = request.messages[5].tool_calls[0].id
    assert later not in ids and results["A again"] == later
    # an Anthropic upstream gets every result beside the call it answers
    sent = anthropic.encode_request(request, "c", stream=False)["messages"]
    uses = [b["id"] for m in sent for b in m["content"] if b["type"] == "tool_use"]
    answered = [b["tool_use_id"] for m in sent for b in m["content"] if b["type"] == "tool_result"]
    assert sorted(uses) == sorted(answered) and len(set(uses)) == 4


def test_audio_parts_are_a_clear_400_for_anthropic_and_ollama() -> None:
    request = neutral(Message("user", (OtherPart("input_audio", {"type": "input_audio"}),)))
    with pytest.raises(RequestError, match="cannot take `input_audio`"):
        anthropic.encode_request(request, "c", stream=False)
    with pytest.raises(RequestError, match="cannot take `input_audio`"):
        ollama.encode_request(request, "l", stream=False)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ],
)
def test_anthropic_stop_reasons_and_cache_usage(stop: str, finish: str) -> None:
    response = anthropic.decode_response(
        {
            "model": "c",
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": stop,
            "usage": {
                "input_tokens": 10,
                "output_tokens": 3,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
            },
        },
        "p",
    )
    assert response.finish_reason == finish
    assert response.usage == Usage(130, 3, 100, 20)  # neutral input counts the cached part


def test_anthropic_response_from_neutral_converts_usage_back() -> None:
    body = json.loads(
        anthropic.encode_response(
            ChatResponse(
                "gpt", "", (ToolCall("c1", "f", '{"a": 1}'),), "tool_calls", Usage(130, 3, 100, 20)
            ),
            Envelope("s", "r", 1),
        )
    )
    assert body["stop_reason"] == "tool_use" and body["model"] == "s"
    assert body["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]
    assert body["usage"] == {
        "input_tokens": 10,
        "output_tokens": 3,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 100,
    }


def test_ollama_options_format_keep_alive_and_tool_names() -> None:
    request = neutral(
        Message("user", (TextPart("x"), ImagePart("data:image/png;base64,iVBORw0"))),
        Message("assistant", (), tool_calls=(ToolCall("c9", "lookup", '{"q": "a"}'),)),
        Message("tool", (TextPart("found"),), tool_call_id="c9"),
        temperature=0.1,
        max_tokens=50,
        params={
            "top_p": 0.9,
            "seed": 1,
            "stop": "X",
            "keep_alive": "5m",
            "response_format": {"type": "json_object"},
        },
    )
    body = ollama.encode_request(request, "llama", stream=False)
    assert body["options"] == {
        "temperature": 0.1,
        "num_predict": 50,
        "top_p": 0.9,
        "seed": 1,
        "stop": ["X"],
    }
    assert (body["format"], body["keep_alive"], body["stream"]) == ("json", "5m", False)
    assert body["messages"] == [
        {"role": "user", "content": "x", "images": ["iVBORw0"]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c9", "function": {"index": 0, "name": "lookup", "arguments": {"q": "a"}}}
            ],
        },
        {"role": "tool", "content": "found", "tool_call_id": "c9", "tool_name": "lookup"},
    ]


def test_ollama_cannot_take_image_urls() -> None:
    request = neutral(Message("user", (ImagePart("https://e.x/cat.png"),)))
    with pytest.raises(RequestError, match="take images as base64 data"):
        ollama.encode_request(request, "llama", stream=False)


def test_ollama_inbound_defaults_to_streaming_and_sniffs_images() -> None:
    request = ollama.decode_request(
        json.dumps(
            {
                "model": "auto",
                "messages": [{"role": "user", "content": "hi", "images": ["/9j/4AAQ"]}],
                "options": {"num_predict": 12, "temperature": 0.3, "num_ctx": 4096},
            }
        ).encode()
    )
    assert request.stream is True and request.max_tokens == 12 and request.temperature == 0.3
    assert request.messages[0].content[1] == ImagePart("data:image/jpeg;base64,/9j/4AAQ")
    assert "num_ctx" not in request.params  # Ollama-only, carried in the raw body instead


def test_ollama_tool_calls_get_ids_and_json_arguments() -> None:
    response = ollama.decode_response(
        {
            "model": "l",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": {"a": [1]}}}],
            },
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 4,
            "eval_count": 2,
        },
        "p",
    )
    (call,) = response.tool_calls
    assert (call.name, call.arguments) == ("f", '{"a":[1]}') and call.id.startswith("call_")
    assert (response.finish_reason, response.usage) == ("tool_calls", Usage(4, 2))


@pytest.mark.parametrize("field", ["tool_calls", "images"])
def test_ollama_fields_that_must_be_arrays(field: str) -> None:
    # found by the fuzzer: a number where an array belongs raised TypeError (a 500)
    body = {"model": "auto", "messages": [{"role": "assistant", "content": "", field: 1}]}
    with pytest.raises(RequestError) as caught:
        ollama.decode_request(json.dumps(body).encode())
    assert caught.value.param == f"messages[0].{field}"


FINISHES = {
    # neutral finish -> (chat finish_reason, Anthropic stop_reason, Responses status and
    # incomplete reason, Ollama done_reason)
    "stop": ("stop", "end_turn", ("completed", None), "stop"),
    "length": ("length", "max_tokens", ("incomplete", "max_output_tokens"), "length"),
    "content_filter": ("content_filter", "refusal", ("incomplete", "content_filter"), "stop"),
    "tool_calls": ("tool_calls", "tool_use", ("completed", None), "stop"),
}


@pytest.mark.parametrize("finish", list(FINISHES))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_stop_reasons_in_every_protocol(finish: str, stream: bool) -> None:
    """One neutral finish reason, as each client's protocol says it, whole and streamed."""
    from pirouter_py.types import StreamEvent, ToolCallDelta
    from pirouter_py.wire import responses

    calls = (ToolCall("c1", "f", "{}"),) if finish == "tool_calls" else ()
    chat, stop, (status, reason), done = FINISHES[finish]
    env = Envelope("m", "r", 1, include_usage=True)
    if not stream:
        answer = ChatResponse("m", "" if calls else "x", calls, finish, Usage(3, 1))
        got = [
            json.loads(openai_wire.encode_response(answer, env))["choices"][0]["finish_reason"],
            json.loads(anthropic.encode_response(answer, env))["stop_reason"],
            json.loads(responses.encode_response(answer, env)),
            json.loads(ollama.encode_response(answer, env))["done_reason"],
        ]
    else:
        events = (
            [StreamEvent(tool_calls=(ToolCallDelta(0, "c1", "f", "{}"),))]
            if calls
            else [StreamEvent(text="x")]
        )
        # a stream's finish that came as "stop" after tool calls (as vLLM's server says it)
        events.append(StreamEvent(finish_reason="stop" if calls else finish, usage=Usage(3, 1)))
        sent = []
        for module in (openai_wire, anthropic, responses, ollama):
            encoder = module.StreamEncoder(env)
            sent.append(b"".join(encoder.encode(e) for e in events) + encoder.end())

        def datas(raw: bytes) -> list[dict[str, object]]:
            lines = raw.decode().splitlines()
            return [json.loads(x[6:]) for x in lines if x.startswith("data: {")]

        last_choice = [c for d in datas(sent[0]) for c in d["choices"]][-1]  # type: ignore[attr-defined]
        delta = [d for d in datas(sent[1]) if d["type"] == "message_delta"][-1]
        final = [d for d in datas(sent[2]) if d["type"].startswith("response.")][-1]  # type: ignore[attr-defined]
        got = [
            last_choice["finish_reason"],
            delta["delta"]["stop_reason"],  # type: ignore[index]
            final["response"],
            json.loads(sent[3].splitlines()[-1])["done_reason"],
        ]
    assert got[0] == chat and got[1] == stop and got[3] == done
    incomplete = got[2]["incomplete_details"]
    assert (got[2]["status"], incomplete and incomplete["reason"]) == (status, reason)


def test_a_call_named_on_every_piece_without_an_id_stays_one_call() -> None:
    """Some OpenAI-compatible servers give no id and repeat the name in every piece: one id is
    made for the call, and an Anthropic client gets one tool_use block with all its input."""
    decoder = openai_wire.StreamDecoder("p")
    pieces = ['{"ci', 'ty": "Oslo"}']
    chunks = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "function": {"name": "get_weather", "arguments": part}}
                        ]
                    },
                }
            ]
        }
        for part in pieces
    ]
    events = [decoder.decode(c) for c in chunks]
    ids = [p.id for e in events for p in e.tool_calls]
    assert ids[0] and ids[0].startswith("call_") and ids[1:] == [None]
    encoder = anthropic.StreamEncoder(Envelope("m", "r", 1))
    sent = b"".join(encoder.encode(e) for e in events) + encoder.end()
    datas = [json.loads(x[6:]) for x in sent.decode().splitlines() if x.startswith("data: ")]
    starts = [d for d in datas if d["type"] == "content_block_start"]
    assert len(starts) == 1 and starts[0]["content_block"]["id"] == ids[0]
    given = "".join(
        d["delta"]["partial_json"]
        for d in datas
        if d["type"] == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(given) == {"city": "Oslo"}


@pytest.mark.parametrize(
    ("choice", "expected", "tools"),
    [
        (None, {"type": "any"}, ["f", anthropic.ANSWER_TOOL]),
        ("auto", {"type": "any"}, ["f", anthropic.ANSWER_TOOL]),
        ("none", {"type": "tool", "name": anthropic.ANSWER_TOOL}, [anthropic.ANSWER_TOOL]),
        (
            {"type": "function", "function": {"name": "f"}},
            {"type": "tool", "name": "f"},
            ["f", anthropic.ANSWER_TOOL],
        ),
    ],
)
def test_a_json_answer_beside_tools_keeps_the_clients_tool_choice(
    choice: object, expected: dict[str, str], tools: list[str]
) -> None:
    """A free-form JSON answer asked of an Anthropic model whose client also offers tools: "none"
    leaves only the answer tool; a named tool stays forced; otherwise any tool, theirs or it."""
    from pirouter_py.types import ToolSpec

    request = neutral(
        Message("user", (TextPart("x"),)),
        tools=(ToolSpec("f", None, {"type": "object"}),),
        tool_choice=choice,
        params={"response_format": {"type": "json_object"}},
    )
    body = anthropic.encode_request(request, "c", stream=False)
    assert body["tool_choice"] == expected
    assert [t["name"] for t in body["tools"]] == tools
