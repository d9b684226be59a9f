"""The Anthropic Messages wire format, both ways: requests, responses, event streams, errors.

Neutral <-> Anthropic: system messages <-> the top-level `system` (system messages inside
`messages`, as Claude Code sends them, are read too); consecutive same-role messages merge into
one message of content blocks; assistant tool calls <-> `tool_use` blocks; tool
messages <-> `tool_result` blocks (ids kept); images (data and http URLs) <-> image blocks;
`finish_reason` <-> `stop_reason`; cache tokens counted; `cache_control` kept on text. When both
ends speak Anthropic, the body passes through with only `model` changed. Usage: neutral
`input_tokens` counts all input (as OpenAI's `prompt_tokens` does); Anthropic's `input_tokens`
excludes the cached part, so the two are converted at the boundary; a stream toward an Anthropic
client carries the input count in `message_start` and again, with the output, in the last
`message_delta` (estimated when the upstream reports none). Structured output:
`output_config.format` <-> neutral `response_format` (OpenAI's form); toward an Anthropic
upstream a JSON schema goes as `output_config.format`, a free-form JSON object as a forced
tool (`ANSWER_TOOL`) whose input comes back as the answer's text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from pirouter_py.errors import RequestError, UpstreamTransportError
from pirouter_py.types import (
    ChatRequest,
    ChatResponse,
    ContentPart,
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
from pirouter_py.wire import (
    Envelope,
    arguments_json,
    arguments_object,
    content_parts,
    filled,
    flag,
    got_arguments,
    got_count,
    got_name,
    got_object,
    got_text,
    malformed,
    new_call_id,
    obj,
    positive,
    request_object,
    schema_format,
    text_part,
)

STOP_TO_FINISH = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
}
DEFAULT_MAX_TOKENS = 1024  # v0.1's default when the request sets none
# The tool a free-form JSON answer is asked for through (Anthropic has no `json_object` mode): its
# call's input is the answer, returned as text; no client tool is expected to bear this name.
ANSWER_TOOL = "pirouter_json_answer"


def _bad(message: str, param: str | None = None) -> RequestError:
    return RequestError(message, param=param)


# ---------------------------------------------------------------------------------------------
# Inbound requests (a client speaking Anthropic)


def decode_request(body: bytes) -> ChatRequest:
    data, model = request_object(body)
    raw_messages = data.get("messages")
    if not isinstance(raw_messages, list):
        raise _bad("`messages` must be an array of messages", "messages")
    max_tokens = positive(data, "max_tokens")
    stream = flag(data, "stream")
    messages: list[Message] = []
    tools = _tools(data.get("tools"))
    system = data.get("system")
    if system is not None:
        messages.append(Message("system", _blocks(system, "system")))
    for i, m in enumerate(raw_messages):
        messages += _message(m, i)
    if len(messages) == (1 if system is not None else 0):
        raise _bad("`messages` must not be empty", "messages")
    params: dict[str, Any] = {}
    if isinstance(data.get("top_p"), int | float):
        params["top_p"] = data["top_p"]
    if isinstance(data.get("stop_sequences"), list):
        params["stop"] = data["stop_sequences"]
    # structured output: `output_config.format`, or the beta's top-level `output_format`
    fmt = obj(data.get("output_config")).get("format") or data.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            where = "output_config.format.schema"
            raise _bad(f"`{where}` must be a JSON schema object", where)
        params["response_format"] = schema_format(schema, strict=True)
    temperature = data.get("temperature")
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        tools=tools,
        stream=bool(stream),
        temperature=float(temperature) if isinstance(temperature, int | float) else None,
        max_tokens=max_tokens,
        tool_choice=_offered_choice(_choice_to_openai(data.get("tool_choice")), tools),
        params=params,
        protocol="anthropic",
        raw=data,
        include_usage=True,
    )


def _blocks(content: Any, where: str) -> tuple[ContentPart, ...]:
    return content_parts(content, where, _block, "content blocks")


def _block(block: dict[str, Any], kind: str, where: str) -> ContentPart:
    if kind == "text":
        return text_part(block, where)
    if kind == "image":
        return ImagePart(_image_url(block.get("source"), f"{where}.source"))
    if kind == "tool_reference" and isinstance(block.get("tool_name"), str):
        # what a tool search found: for Anthropic as it was, for others the tool's name
        return TextPart(f"Tool: {block['tool_name']}", {"tool_reference": block})
    return OtherPart(kind, block)


def _image_url(source: Any, where: str) -> str:
    if isinstance(source, dict):
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return str(source["url"])
    raise _bad(f"`{where}` must be a base64 or url image source", where)


def _message(m: Any, i: int) -> list[Message]:
    """One Anthropic message: tool results become tool messages, tool uses become tool calls."""
    where = f"messages[{i}]"
    if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system"):
        raise _bad(f"`{where}.role` must be user, assistant or system", f"{where}.role")
    content = m.get("content")
    if m["role"] == "system":  # Claude Code's notes mid-conversation
        return [Message("system", _blocks(content, f"{where}.content"))]
    if isinstance(content, str):
        return [Message(m["role"], (TextPart(content),))]
    if not isinstance(content, list):
        raise _bad(f"`{where}.content` must be a string or an array", f"{where}.content")
    out: list[Message] = []
    plain: list[Any] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise _bad(
                    f"`{where}.content[{j}].tool_use_id` is required", f"{where}.content[{j}]"
                )
            inner = block.get("content")
            parts = _blocks(inner, f"{where}.content[{j}].content") if inner is not None else ()
            out.append(Message("tool", parts, tool_call_id=block["tool_use_id"]))
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(
                    f"`{where}.content[{j}]` tool_use needs id and name", f"{where}.content[{j}]"
                )
            calls.append(ToolCall(block["id"], block["name"], arguments_json(block.get("input"))))
        else:
            plain.append(block)
    parts = _blocks(plain, f"{where}.content") if plain else ()
    if parts or calls or not out:
        out.append(Message(m["role"], parts, tool_calls=tuple(calls)))
    return out


def _tools(tools: Any) -> tuple[ToolSpec, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _bad("`tools` must be an array", "tools")
    out = []
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _bad(f"`tools[{j}].name` is required", f"tools[{j}]")
        if tool.get("type") not in (None, "custom"):
            # a server tool (web_search_*, code_execution_*...): Anthropic runs it, so it reaches
            # Anthropic upstreams in the body as sent; no other model can run it
            continue
        schema = tool.get("input_schema")
        out.append(
            ToolSpec(
                tool["name"], tool.get("description"), schema if isinstance(schema, dict) else {}
            )
        )
    return tuple(out)


def _offered_choice(choice: Any, tools: tuple[ToolSpec, ...]) -> Any:
    """The choice, unless it names a tool left out (a server tool only Anthropic runs)."""
    if isinstance(choice, dict) and not any(
        t.name == choice["function"].get("name") for t in tools
    ):
        return None
    return choice


def _choice_to_openai(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))


# ---------------------------------------------------------------------------------------------
# Outbound requests (an Anthropic-type upstream)


def encode_request(
    request: ChatRequest,
    model_id: str,
    *,
    stream: bool,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    json_by_tool: bool = False,
) -> dict[str, Any]:
    if request.raw is not None and request.protocol == "anthropic":
        body = dict(request.raw)
        body["model"] = model_id
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        body.setdefault("max_tokens", default_max_tokens)
        return body
    body = {"model": model_id, "messages": _encode_messages(request.messages)}
    system = [p for m in request.messages if m.role == "system" for p in m.content]
    if system:
        if any(isinstance(p, TextPart) and p.extra for p in system):
            body["system"] = [_encode_part(p) for p in system]
        else:
            body["system"] = "\n".join(p.text for p in system if isinstance(p, TextPart))
    if request.tools:
        body["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": dict(t.parameters) or {"type": "object"},
            }
            for t in request.tools
        ]
    choice = _choice_from_openai(request.tool_choice, request.params)
    if choice is not None and request.tools:
        body["tool_choice"] = choice
    body["max_tokens"] = request.max_tokens or default_max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    params = request.params
    if "top_p" in params:
        body["top_p"] = params["top_p"]
    if params.get("stop"):
        stop = params["stop"]
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(params.get("user"), str):
        body["metadata"] = {"user_id": params["user"]}
    if isinstance(params.get("n"), int) and params["n"] > 1:
        raise _bad("anthropic models give one answer per request; n > 1 is not supported", "n")
    _structured(body, params.get("response_format"), json_by_tool)
    if stream:
        body["stream"] = True
    return body


def _structured(body: dict[str, Any], fmt: Any, by_tool: bool) -> None:
    """OpenAI's `response_format` in Anthropic's terms: a JSON schema as `output_config.format`
    (unless the model takes none: `by_tool`); a free-form JSON object, or a schema the model
    cannot take natively, as a forced call of `ANSWER_TOOL` with it as input schema (beside the
    client's own tools: a call of one of them or of it)."""
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("json_schema", "json_object"):
        return
    schema: dict[str, Any] = {"type": "object"}
    if kind == "json_schema":
        given = obj(fmt.get("json_schema")).get("schema")
        if not isinstance(given, dict):
            raise _bad("`response_format.json_schema.schema` must be a JSON schema object")
        if not by_tool:
            body["output_config"] = {"format": {"type": "json_schema", "schema": given}}
            return
        schema = given
    tool = {
        "name": ANSWER_TOOL,
        "description": "Give your whole answer as this JSON object.",
        "input_schema": schema,
    }
    tools = body.setdefault("tools", [])
    chosen = obj(body.get("tool_choice"))
    if not tools or chosen.get("type") == "none":  # no tool of the client's may be called
        body["tools"] = [tool]
        body["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
        return
    tools.append(tool)
    if chosen.get("type") != "tool":  # the client's named tool stays forced
        body["tool_choice"] = {**chosen, "type": "any"}


def _choice_from_openai(choice: Any, params: Mapping[str, Any]) -> dict[str, Any] | None:
    out: dict[str, Any] | None = None
    if choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out = {"type": "tool", "name": choice["function"].get("name")}
    if params.get("parallel_tool_calls") is False:
        out = (out or {"type": "auto"}) | {"disable_parallel_tool_use": True}
    return out


def _encode_part(p: ContentPart) -> dict[str, Any]:
    if isinstance(p, TextPart):
        if p.extra and "tool_reference" in p.extra:
            return dict(p.extra["tool_reference"])
        return {"type": "text", "text": p.text, **(p.extra or {})}
    if isinstance(p, ImagePart):
        media = p.media_type
        if media is not None:
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": media, "data": p.url.split(",", 1)[1]},
            }
        return {"type": "image", "source": {"type": "url", "url": p.url}}
    if p.kind in ("document", "thinking", "redacted_thinking", "search_result"):
        return dict(p.data)
    raise _bad(f"anthropic models cannot take `{p.kind}` content parts")


def _tool_use(call: ToolCall) -> dict[str, Any]:
    """A tool call as Anthropic's `tool_use` block (in a request's history, or an answer)."""
    return {
        "type": "tool_use",
        "id": call.id,
        "name": call.name,
        "input": arguments_object(call.arguments),
    }


def _encode_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks: list[dict[str, Any]]
        if m.role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
            if m.content:
                block["content"] = [_encode_part(p) for p in m.content]
            blocks = [block]
        else:
            blocks = [_encode_part(p) for p in m.content]
            blocks += [_tool_use(c) for c in m.tool_calls]
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


# ---------------------------------------------------------------------------------------------
# Responses


def usage_from(data: Any, previous: Usage | None = None, where: str = "the upstream") -> Usage:
    """Anthropic usage -> neutral (input counts cached tokens too); what it leaves out, as
    `previous` had it."""
    data = got_object(data, "usage", where)
    prev = previous or Usage()

    def count(key: str) -> int | None:
        value = data.get(key)
        return None if value is None else got_count(value, f"usage.{key}", where)

    read = count("cache_read_input_tokens") or prev.cache_read_tokens
    write = count("cache_creation_input_tokens") or prev.cache_write_tokens
    fresh = count("input_tokens")
    total_in = (fresh + read + write) if fresh is not None else prev.input_tokens
    output = count("output_tokens")
    return Usage(total_in, output if output is not None else prev.output_tokens, read, write)


def decode_response(data: Any, provider: str) -> ChatResponse:
    content = data.get("content") if isinstance(data, dict) else None
    if not isinstance(content, list):
        raise UpstreamTransportError(f"{provider} returned no content", retryable=True)
    text = ""
    calls: list[ToolCall] = []
    answered = False  # the forced ANSWER_TOOL was called: its stop is the answer's end
    for j, given in enumerate(content):
        field = f"content[{j}]"
        block = got_object(given, field, provider)
        kind = got_name(block.get("type"), f"{field}.type", provider)
        if kind == "text":
            text += got_text(block.get("text"), f"{field}.text", provider)
        elif kind == "tool_use":
            name = got_name(block.get("name"), f"{field}.name", provider)
            arguments = _input(block.get("input"), f"{field}.input", provider)
            if name == ANSWER_TOOL:  # the JSON answer asked for
                text += arguments
                answered = True
            else:
                call_id = got_name(block.get("id"), f"{field}.id", provider)
                calls.append(ToolCall(call_id, name, arguments))
    stop = STOP_TO_FINISH.get(got_text(data.get("stop_reason"), "stop_reason", provider), "stop")
    return ChatResponse(
        model=got_text(data.get("model"), "model", provider),
        text=text,
        tool_calls=tuple(calls),
        finish_reason="stop" if stop == "tool_calls" and answered and not calls else stop,
        usage=usage_from(data.get("usage"), where=provider),
        raw=data,
        protocol="anthropic",
    )


def _input(value: Any, field: str, where: str) -> str:
    """A tool call's `input`, which must be an object, as JSON text."""
    if not isinstance(value, dict):
        raise malformed(where, f"`{field}` is {'absent' if value is None else 'not an object'}")
    return orjson.dumps(value).decode()


def stop_reason(finish: str | None, tool_calls: bool) -> str:
    """A neutral finish reason as Anthropic's `stop_reason`; an answer with tool calls that
    stopped normally stopped for them (Claude Code runs the calls only then)."""
    if tool_calls and finish in (None, "stop", "tool_calls"):
        return "tool_use"
    return FINISH_TO_STOP.get(finish or "stop", "end_turn")


def _usage_json(u: Usage) -> dict[str, int]:
    return {
        "input_tokens": max(0, u.input_tokens - u.cache_read_tokens - u.cache_write_tokens),
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
    }


def encode_response(response: ChatResponse, env: Envelope) -> bytes:
    if response.raw is not None and response.protocol == "anthropic":
        body = dict(response.raw)
    else:
        content: list[dict[str, Any]] = []
        if response.text or not response.tool_calls:
            content.append({"type": "text", "text": response.text})
        content += [_tool_use(c) for c in response.tool_calls]
        body = {
            "id": f"msg_{env.request_id}",
            "type": "message",
            "role": "assistant",
            "content": content,
            "stop_reason": stop_reason(response.finish_reason, bool(response.tool_calls)),
            "stop_sequence": None,
            "usage": _usage_json(response.usage),
        }
    body["model"] = env.alias
    body["pirouter"] = env.meta
    return orjson.dumps(body)


# ---------------------------------------------------------------------------------------------
# Streams


class StreamDecoder:
    """Anthropic stream events -> StreamEvents; tracks tool blocks and usage across events, and
    checks each tool call whole (its input JSON an object) once the answer says it finished."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.usage: Usage | None = None
        self.tool_index: dict[int, int] = {}  # content block index -> tool call index
        self.inputs: dict[int, list[str]] = {}  # content block index -> its input JSON pieces
        self.answer_blocks: set[int] = set()  # blocks of the forced ANSWER_TOOL: text
        self.checked = False
        self.stopped = False

    def _index(self, data: dict[str, Any]) -> int:
        return got_count(data.get("index"), "index", self.provider)

    def decode(self, data: Any) -> StreamEvent:
        # Most events are a piece of text (the checks below, for that shape, in one pass)
        if type(data) is dict and data.get("type") == "content_block_delta":
            delta, index = data.get("delta"), data.get("index")
            if type(delta) is dict and delta.get("type") == "text_delta" and type(index) is int:
                text = delta.get("text")
                if type(text) is str and index >= 0:
                    return StreamEvent(text=text, raw=data, protocol="anthropic")
        where = self.provider
        data = got_object(data, "event", where)
        kind = got_name(data.get("type"), "type", where)
        if kind == "message_start":
            message = got_object(data.get("message"), "message", where)
            self.usage = usage_from(message.get("usage"), where=where)
            return StreamEvent(usage=self.usage, raw=data, protocol="anthropic")
        if kind == "content_block_start":
            index = self._index(data)
            block = got_object(data.get("content_block"), "content_block", where)
            block_kind = got_name(block.get("type"), "content_block.type", where)
            if block_kind == "tool_use":
                name = got_name(block.get("name"), "content_block.name", where)
                got_object(block.get("input"), "content_block.input", where)
                if name == ANSWER_TOOL:
                    self.answer_blocks.add(index)
                    return StreamEvent(raw=data, protocol="anthropic")
                call_id = got_name(block.get("id"), "content_block.id", where)
                self.inputs[index] = []
                self.tool_index[index] = len(self.tool_index)
                call = ToolCallDelta(self.tool_index[index], call_id, name, "")
                return StreamEvent(tool_calls=(call,), raw=data, protocol="anthropic")
            text = block.get("text") if block_kind == "text" else None
            text = got_text(text, "content_block.text", where)
            return StreamEvent(text=text, raw=data, protocol="anthropic")
        if kind == "content_block_delta":
            index = self._index(data)
            delta = got_object(data.get("delta"), "delta", where)
            delta_kind = got_text(delta.get("type"), "delta.type", where)
            if delta_kind == "text_delta":
                text = got_text(delta.get("text"), "delta.text", where)
                return StreamEvent(text=text, raw=data, protocol="anthropic")
            if delta_kind == "input_json_delta":
                piece = got_text(delta.get("partial_json"), "delta.partial_json", where)
                if index in self.answer_blocks:
                    return StreamEvent(text=piece, raw=data, protocol="anthropic")
                self.inputs.setdefault(index, []).append(piece)
                call = ToolCallDelta(self.tool_index.get(index, 0), None, None, piece)
                return StreamEvent(tool_calls=(call,), raw=data, protocol="anthropic")
            return StreamEvent(raw=data, protocol="anthropic")
        if kind == "message_delta":
            self.usage = usage_from(data.get("usage"), self.usage, where)
            delta = got_object(data.get("delta"), "delta", where)
            stop = got_text(delta.get("stop_reason"), "delta.stop_reason", where)
            finish = STOP_TO_FINISH.get(stop, "stop") if stop else None
            if finish == "tool_calls" and self.answer_blocks and not self.tool_index:
                finish = "stop"
            if stop:
                self._check(truncated=finish == "length")
            return StreamEvent(
                finish_reason=finish,
                usage=self.usage,
                raw=data,
                protocol="anthropic",
            )
        if kind == "message_stop":
            self._check()
            self.stopped = True
            return StreamEvent(raw=data, protocol="anthropic")
        if kind == "error":
            error = obj(data.get("error"))
            raise UpstreamTransportError(
                f"{self.provider}: stream error {error.get('type', '')}: "
                f"{error.get('message', '')}",
                retryable=True,
            )
        return StreamEvent(raw=data, protocol="anthropic")  # ping, content_block_stop, ...

    def _check(self, *, truncated: bool = False) -> None:
        """Each tool call's input, whole, is a JSON object (once; not for an answer cut at its
        length limit, which the truncation check judges)."""
        if self.checked:
            return
        self.checked = True
        if truncated:
            return
        for index, pieces in self.inputs.items():
            got_arguments("".join(pieces), f"content block {index}'s input", self.provider)


TEXT_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'


def _event(name: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class StreamEncoder:
    """StreamEvents -> the event stream an Anthropic client reads."""

    def __init__(self, env: Envelope) -> None:
        self.alias = env.alias
        self.input_estimate = env.input_estimate
        self.chars = 0  # text sent, for an output estimate when the upstream reports none
        self.id = f"msg_{env.request_id}"
        self.started = False
        self.passthrough = False
        self.block: str | None = None  # the open content block: "text" or "tool_use"
        self.index = -1
        self.tool_blocks: dict[int, int] = {}  # tool call index -> content block index
        self.finish: str | None = None
        self.usage = Usage()

    def _start(self) -> bytes:
        self.started = True
        return _event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.alias,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": _usage_json(filled(self.usage, self.input_estimate, 0)),
                },
            },
        )

    def _close(self) -> bytes:
        if self.block is None:
            return b""
        self.block = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.block = kind
        return out + _event(
            "content_block_start",
            {"type": "content_block_start", "index": self.index, "content_block": block},
        )

    def encode(self, event: StreamEvent) -> bytes:
        if event.raw is not None and event.protocol == "anthropic":
            data = event.raw
            kind = data.get("type")
            # passed through, its state followed, so events of another model can go on from it
            # (a stream cut and continued) and `end` closes only what is open
            if kind == "message_start":
                self.started = True
                message = data.get("message") or {}
                self.usage = usage_from(message.get("usage"))
                data = {**data, "message": {**message, "model": self.alias}}
            elif kind == "content_block_start":
                self.index = int(data.get("index") or 0)
                self.block = str((data.get("content_block") or {}).get("type") or "text")
            elif kind == "content_block_stop":
                self.block = None
            elif kind == "message_stop":
                self.passthrough = True
            elif kind == "message_delta" and "input_tokens" not in obj(data.get("usage")):
                # the input count again with the last word on usage, as for other upstreams
                counted = _usage_json(usage_from(data.get("usage"), self.usage))
                data = {**data, "usage": {**counted, **obj(data.get("usage"))}}
            return _event(str(kind), data)
        out = b"" if self.started else self._start()
        if event.usage is not None:
            self.usage = event.usage
        if event.text:
            self.chars += len(event.text)
            if self.block != "text":
                out += self._open("text", {"type": "text", "text": ""})
            # the bytes _event writes for this delta, without building it as a dict first
            out += b"".join(
                (
                    TEXT_DELTA_HEAD,
                    str(self.index).encode(),
                    b',"delta":{"type":"text_delta","text":',
                    orjson.dumps(event.text),
                    b"}}\n\n",
                )
            )
        for call in event.tool_calls:
            if call.id is not None or call.index not in self.tool_blocks:
                out += self._open(
                    "tool_use",
                    {
                        "type": "tool_use",
                        "id": call.id or new_call_id(),
                        "name": call.name or "",
                        "input": {},
                    },
                )
                self.tool_blocks[call.index] = self.index
            if call.arguments:
                out += _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self.tool_blocks[call.index],
                        "delta": {"type": "input_json_delta", "partial_json": call.arguments},
                    },
                )
        if event.finish_reason:
            self.finish = event.finish_reason
        return out

    def end(self) -> bytes:
        if self.passthrough:
            return b""
        out = b"" if self.started else self._start()
        out += self._close()
        usage = filled(self.usage, self.input_estimate, self.chars)
        out += _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": stop_reason(self.finish, bool(self.tool_blocks)),
                    "stop_sequence": None,
                },
                "usage": _usage_json(usage),  # input too: the last word on every count
            },
        )
        return out + _event("message_stop", {"type": "message_stop"})

    @staticmethod
    def error(message: str, kind: str = "upstream_error") -> bytes:
        """`kind` is the OpenAI error type; a stream's failures are all Anthropic's api_error."""
        failure = {"type": "api_error", "message": message}
        return _event("error", {"type": "error", "error": failure})


def encode_error(status: int, message: str) -> bytes:
    """Anthropic's error body: {"type": "error", "error": {"type", "message"}}."""
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
