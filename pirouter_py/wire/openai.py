"""The OpenAI Chat Completions wire format, both ways: requests, responses, stream chunks, errors.

Decoding builds the neutral `ChatRequest` the router reads, and keeps the decoded body in `raw`.
When both ends speak OpenAI, the upstream gets that body with only `model` (and the stream
options) changed, and the client gets the upstream's body with only `model` changed and a
`pirouter` object added: nothing a client sends or a provider returns is lost, and the JSON is
decoded and encoded once per hop. Malformed input raises `RequestError` naming the field.
"""

from __future__ import annotations

from dataclasses import replace
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
    Role,
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
    content_parts,
    filled,
    got_arguments,
    got_count,
    got_list,
    got_name,
    got_object,
    got_text,
    malformed,
    new_call_id,
    obj,
    request_object,
    text_part,
    without_foreign,
)

# Inbound roles; "developer" is OpenAI's newer name for system, "function" its legacy tool role.
ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
# Body fields ChatRequest holds in fields of its own; every other one goes to `params`.
MODELLED = frozenset(
    (
        "model",
        "messages",
        "tools",
        "stream",
        "temperature",
        "max_tokens",
        "tool_choice",
        "stream_options",
    )
)
DONE = b"data: [DONE]\n\n"


def _bad(message: str, param: str) -> RequestError:
    return RequestError(message, param=param)


# ---------------------------------------------------------------------------------------------
# Inbound requests


def decode_request(body: bytes) -> ChatRequest:
    """An OpenAI request body -> ChatRequest; raises RequestError on any malformed field."""
    data, model = request_object(body)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("`messages` must be a non-empty array of messages", "messages")
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("`stream` must be true or false", "stream")
    temperature = data.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float)
    ):
        raise _bad("`temperature` must be a number", "temperature")
    max_tokens = data.get("max_tokens", data.get("max_completion_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0
    ):
        raise _bad("`max_tokens` must be a non-negative integer", "max_tokens")
    options = data.get("stream_options")
    return ChatRequest(
        model=model,
        messages=tuple(_message(m, i) for i, m in enumerate(messages)),
        tools=_tools(data.get("tools")),
        stream=bool(stream),
        temperature=float(temperature) if temperature is not None else None,
        max_tokens=max_tokens,
        tool_choice=data.get("tool_choice"),
        params={k: v for k, v in data.items() if k not in MODELLED},
        protocol="openai",
        raw=data,
        include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
    )


def _message(m: Any, i: int) -> Message:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _bad(f"`{where}` must be an object with `role` and `content`", where)
    raw_role = m.get("role")
    role = ROLES.get(raw_role) if isinstance(raw_role, str) else None  # an object: not a key
    if role is None:
        raise _bad(
            f"`{where}.role` is {m.get('role')!r}; use system, developer, user, assistant or tool",
            f"{where}.role",
        )
    name = m.get("name")
    return Message(
        role=role,
        content=_content(m.get("content"), f"{where}.content"),
        name=name if isinstance(name, str) else None,
        tool_calls=_tool_calls(m.get("tool_calls"), f"{where}.tool_calls"),
        tool_call_id=m.get("tool_call_id")
        if isinstance(m.get("tool_call_id"), str)
        else (name if m.get("role") == "function" and isinstance(name, str) else None),
    )


def _content(content: Any, where: str) -> tuple[ContentPart, ...]:
    return () if content is None else content_parts(content, where, _part)


def _part(part: dict[str, Any], kind: str, where: str) -> ContentPart:
    if kind == "text":
        return text_part(part, where)
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url:
            raise _bad(f"`{where}.image_url.url` must be a URL or data URL", f"{where}.image_url")
        return ImagePart(url, image.get("detail") if isinstance(image, dict) else None)
    return OtherPart(kind, part)


def _tool_calls(calls: Any, where: str) -> tuple[ToolCall, ...]:
    if calls is None:
        return ()
    if not isinstance(calls, list):
        raise _bad(f"`{where}` must be an array", where)
    out = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad(f"`{where}[{j}]` must have `function.name`", f"{where}[{j}]")
        out.append(
            ToolCall(str(call.get("id") or ""), fn["name"], arguments_json(fn.get("arguments", "")))
        )
    return tuple(out)


def _tools(tools: Any) -> tuple[ToolSpec, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _bad("`tools` must be an array", "tools")
    out = []
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad(f"`tools[{j}]` must be an object", f"tools[{j}]")
        fn = tool.get("function")
        if tool.get("type", "function") == "function":
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _bad(f"`tools[{j}].function.name` is required", f"tools[{j}].function")
            params = fn.get("parameters")
            out.append(
                ToolSpec(
                    fn["name"], fn.get("description"), params if isinstance(params, dict) else {}
                )
            )
        else:  # a tool type of OpenAI's own (e.g. "custom"): passed through, counted as a tool
            out.append(ToolSpec(str(tool.get("type")), None, {}))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Outbound requests


def encode_request(request: ChatRequest, model_id: str, *, stream: bool) -> dict[str, Any]:
    """The body for an OpenAI-type upstream; streams always ask for the usage chunk."""
    if request.raw is not None and request.protocol == "openai":
        body = dict(request.raw)
        body["model"] = model_id
    else:
        messages = without_foreign(request.messages)
        body = {"model": model_id, "messages": [_encode_message(m) for m in messages]}
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": dict(t.parameters),
                    }
                    if t.description is not None
                    else {"name": t.name, "parameters": dict(t.parameters)},
                }
                for t in request.tools
            ]
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        body.update(request.params)
    if stream:
        body["stream"] = True
        options = body.get("stream_options")
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


def _encode_message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    parts = m.content
    if not parts:
        out["content"] = None if m.tool_calls else ""
    elif len(parts) == 1 and isinstance(parts[0], TextPart) and not parts[0].extra:
        out["content"] = parts[0].text
    else:
        out["content"] = [_encode_part(p) for p in parts]
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


def _encode_part(p: ContentPart) -> dict[str, Any]:
    if isinstance(p, TextPart):
        if p.extra and "tool_reference" in p.extra:  # an Anthropic block, as its text
            return {"type": "text", "text": p.text}
        return {"type": "text", "text": p.text, **(p.extra or {})}
    if isinstance(p, ImagePart):
        image: dict[str, Any] = {"url": p.url}
        if p.detail is not None:
            image["detail"] = p.detail
        return {"type": "image_url", "image_url": image}
    return dict(p.data)


# ---------------------------------------------------------------------------------------------
# Responses


def _usage(data: Any, where: str) -> Usage | None:
    if data is None:
        return None
    data = got_object(data, "usage", where)
    details = got_object(data.get("prompt_tokens_details"), "usage.prompt_tokens_details", where)
    return Usage(
        got_count(data.get("prompt_tokens"), "usage.prompt_tokens", where),
        got_count(data.get("completion_tokens"), "usage.completion_tokens", where),
        got_count(details.get("cached_tokens"), "usage.prompt_tokens_details.cached_tokens", where),
    )


def finish_reason(reason: Any, tool_calls: bool) -> str:
    """An upstream's finish reason in neutral form: the legacy `function_call` and a `stop` that
    came with tool calls (vLLM's and llama.cpp's servers say so) both mean `tool_calls`."""
    if reason in (None, "stop", "function_call", "tool_calls"):
        return "tool_calls" if tool_calls else "stop"
    return str(reason)


def decode_response(data: Any, provider: str) -> ChatResponse:
    """An upstream OpenAI body -> ChatResponse; a body of the wrong shape is a transport error."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamTransportError(f"{provider} returned no choices", retryable=True)
    choice = choices[0]
    field = "choices[0].message"
    message = got_object(choice.get("message"), field, provider)
    content = message.get("content")
    if isinstance(content, list):  # content parts, as some compatible servers answer
        text = "".join(
            got_text(
                got_object(p, f"{field}.content[{j}]", provider).get("text"),
                f"{field}.content[{j}].text",
                provider,
            )
            for j, p in enumerate(content)
        )
    else:
        text = got_text(content, f"{field}.content", provider)
    reason = _reason(choice.get("finish_reason"), "choices[0].finish_reason", provider)
    calls = tuple(
        _answer_call(call, f"{field}.tool_calls[{j}]", provider, whole=reason != "length")
        for j, call in enumerate(
            got_list(message.get("tool_calls"), f"{field}.tool_calls", provider)
        )
    )
    return ChatResponse(
        model=got_text(data.get("model"), "model", provider),
        text=text,
        tool_calls=calls,
        finish_reason=finish_reason(reason, bool(calls)),
        usage=_usage(data.get("usage"), provider) or Usage(),
        raw=data,
        protocol="openai",
    )


def _reason(value: Any, field: str, where: str) -> str | None:
    """A finish reason: text, or none yet."""
    return got_text(value, field, where) or None


def _answer_call(call: Any, field: str, where: str, *, whole: bool) -> ToolCall:
    """One tool call of a whole answer: named, its arguments JSON text holding an object (unless
    the answer was cut at its length limit: a truncated call, which the truncation check
    judges). A server that gives the call no id gets one made."""
    call = got_object(call, field, where)
    fn = got_object(call.get("function"), f"{field}.function", where)
    name = got_name(fn.get("name"), f"{field}.function.name", where)
    arguments = got_text(fn.get("arguments"), f"{field}.function.arguments", where)
    if whole:
        got_arguments(arguments, f"{field}.function.arguments", where)
    return ToolCall(
        got_text(call.get("id"), f"{field}.id", where) or new_call_id(), name, arguments
    )


def _mended(choice: dict[str, Any], response: ChatResponse) -> dict[str, Any]:
    """An upstream's choice with the ids the decoder made for its calls (it gave none) and a
    `stop` that came with calls said as `tool_calls`, as every other path says them."""
    message = dict(choice.get("message") or {})
    calls = message.get("tool_calls") or []
    if (
        all(isinstance(c, dict) and c.get("id") for c in calls)
        and choice.get("finish_reason") == response.finish_reason
    ):
        return choice
    message["tool_calls"] = [
        {**c, "id": made.id} if isinstance(c, dict) and not c.get("id") else c
        for c, made in zip(calls, response.tool_calls, strict=False)
    ]
    return {**choice, "message": message, "finish_reason": response.finish_reason}


def encode_response(response: ChatResponse, env: Envelope) -> bytes:
    """The body an OpenAI client gets: `model` is the alias that answered, plus `pirouter`."""
    if response.raw is not None and response.protocol == "openai":
        body = dict(response.raw)
        if response.tool_calls:  # what the decoder mended reaches the client too
            body["choices"] = [_mended(body["choices"][0], response), *body["choices"][1:]]
    else:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": response.text if response.text or not response.tool_calls else None,
        }
        if response.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in response.tool_calls
            ]
        u = response.usage
        body = {
            "id": f"chatcmpl-{env.request_id}",
            "object": "chat.completion",
            "created": env.created,
            "choices": [{"index": 0, "message": message, "finish_reason": response.finish_reason}],
            "usage": {
                "prompt_tokens": u.input_tokens,
                "completion_tokens": u.output_tokens,
                "total_tokens": u.input_tokens + u.output_tokens,
            },
        }
    body["model"] = env.alias
    body["pirouter"] = env.meta
    return orjson.dumps(body)


# ---------------------------------------------------------------------------------------------
# Streams


def decode_chunk(data: Any, provider: str = "the upstream") -> StreamEvent:
    """One upstream `chat.completion.chunk` -> StreamEvent (each field checked; a tool call's
    arguments, sent in pieces, are checked whole by `StreamDecoder`)."""
    if not isinstance(data, dict):
        raise UpstreamTransportError("stream chunk is not a JSON object", retryable=True)
    # Most chunks are a piece of text: one choice whose delta holds only content (the checks
    # below, for that shape, in one pass)
    choices = data.get("choices")
    if type(choices) is list and len(choices) == 1 and data.get("usage") is None:
        choice = choices[0]
        delta = choice.get("delta") if type(choice) is dict else None
        if (
            type(delta) is dict
            and delta.get("tool_calls") is None
            and choice.get("finish_reason") is None
            and data.get("error") is None
        ):
            text = delta.get("content")
            if text is None or type(text) is str:
                return StreamEvent(text=text or "", raw=data, protocol="openai")
    error = data.get("error")
    if error is not None:
        message = obj(error).get("message") or (error if isinstance(error, str) else None)
        raise UpstreamTransportError(
            f"stream error: {message or 'error event in the stream'}", retryable=True
        )
    usage = _usage(data.get("usage"), provider)
    choices = got_list(data.get("choices"), "choices", provider)
    if not choices:
        return StreamEvent(usage=usage, raw=data, protocol="openai")
    choice = got_object(choices[0], "choices[0]", provider)
    delta = got_object(choice.get("delta"), "choices[0].delta", provider)
    calls = tuple(
        _delta_call(tc, f"choices[0].delta.tool_calls[{j}]", provider)
        for j, tc in enumerate(
            got_list(delta.get("tool_calls"), "choices[0].delta.tool_calls", provider)
        )
    )
    reason = _reason(choice.get("finish_reason"), "choices[0].finish_reason", provider)
    return StreamEvent(
        text=got_text(delta.get("content"), "choices[0].delta.content", provider),
        tool_calls=calls,
        # a `stop` after tool calls is told apart by the stream encoders, which saw the calls
        finish_reason="tool_calls" if reason == "function_call" else reason,
        usage=usage,
        raw=data,
        protocol="openai",
    )


def _delta_call(tc: Any, field: str, where: str) -> ToolCallDelta:
    """A piece of a streamed tool call; its first piece names it."""
    tc = got_object(tc, field, where)
    fn = got_object(tc.get("function"), f"{field}.function", where)
    name = fn.get("name")
    if name is not None:
        name = got_name(name, f"{field}.function.name", where)
    return ToolCallDelta(
        got_count(tc.get("index"), f"{field}.index", where),
        # none given: StreamDecoder makes one, once per call (some servers name it every piece)
        got_text(tc.get("id"), f"{field}.id", where) or None,
        name,
        got_text(fn.get("arguments"), f"{field}.function.arguments", where),
    )


class StreamDecoder:
    """Upstream chunks -> StreamEvents, with each tool call checked whole once the answer says
    it finished (or its stream ended): named, its arguments a JSON object."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.arguments: dict[int, list[str]] = {}  # call index: its arguments' pieces
        self.named: set[int] = set()  # the calls whose name came
        self.checked = False

    def decode(self, data: Any) -> StreamEvent:
        event = decode_chunk(data, self.provider)
        if event.tool_calls and any(p.id is None and p.name for p in event.tool_calls):
            event = replace(event, tool_calls=tuple(self._named(p) for p in event.tool_calls))
        for piece in event.tool_calls:
            self.arguments.setdefault(piece.index, []).append(piece.arguments)
            if piece.name is not None:
                self.named.add(piece.index)
        if event.finish_reason:
            self.finish(event.finish_reason)
        return event

    def _named(self, piece: ToolCallDelta) -> ToolCallDelta:
        """A call's first named piece without an id gets one made; a later piece of the same
        call that names it again stays a continuation."""
        if piece.id is not None or not piece.name or piece.index in self.named:
            return piece
        return ToolCallDelta(piece.index, new_call_id(), piece.name, piece.arguments)

    def finish(self, reason: str | None = None) -> None:
        """Check the calls streamed (once); a call cut at the length limit is judged by the
        truncation check, not here."""
        if self.checked:
            return
        self.checked = True
        for index, pieces in self.arguments.items():
            if index not in self.named:
                raise malformed(self.provider, f"tool call {index} was never named")
            if reason != "length":
                got_arguments("".join(pieces), f"tool call {index}'s arguments", self.provider)


class StreamEncoder:
    """Turns StreamEvents into the SSE bytes an OpenAI client reads."""

    def __init__(self, env: Envelope) -> None:
        self.alias = env.alias
        self.id = f"chatcmpl-{env.request_id}"
        self.created = env.created
        self.include_usage = env.include_usage
        self.input_estimate = env.input_estimate
        self._started = False
        self._usage: Usage | None = None  # neutral streams: sent once, at the end
        self._relayed_usage = False  # a passed-through usage chunk went out
        self._calls = False  # tool calls went out: a `stop` then means `tool_calls`
        self._chars = 0  # text sent, for an output estimate when the upstream gives none

    def _chunk(self, choices: list[Any], usage: Usage | None = None) -> bytes:
        data: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.alias,
            "choices": choices,
        }
        if usage is not None:
            data["usage"] = {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            }
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def encode(self, event: StreamEvent) -> bytes:
        if event.raw is not None and event.protocol == "openai":
            data = event.raw
            usage_only = not data.get("choices") and data.get("usage") is not None
            if usage_only and not self.include_usage:  # pirouter asked for it, the client did not
                return b""
            data = dict(data)
            data["model"] = self.alias
            if not self.include_usage:
                data.pop("usage", None)
            elif data.get("usage") is not None:
                self._relayed_usage = True
            self._started = True
            self._chars += len(event.text)
            if event.tool_calls or (self._calls and event.finish_reason == "stop"):
                data = self._mend(data, event)
            return b"data: " + orjson.dumps(data) + b"\n\n"
        if event.usage is not None:
            self._usage = event.usage
        if not (event.text or event.tool_calls or event.finish_reason or not self._started):
            return b""
        delta: dict[str, Any] = {}
        if not self._started:
            delta["role"] = "assistant"
            self._started = True
        if event.text:
            delta["content"] = event.text
            self._chars += len(event.text)
        if event.tool_calls:
            delta["tool_calls"] = [_delta_json(tc) for tc in event.tool_calls]
            self._calls = True
        finish = event.finish_reason
        if finish == "stop" and self._calls:
            finish = "tool_calls"
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish}])

    def _mend(self, data: dict[str, Any], event: StreamEvent) -> dict[str, Any]:
        """A passed-through chunk with the id made for a call its upstream named without one,
        and a `stop` after calls said as `tool_calls`."""
        self._calls = self._calls or bool(event.tool_calls)
        choice = dict(data["choices"][0])
        made = {p.index: p.id for p in event.tool_calls if p.id is not None}
        delta = choice.get("delta")
        if made and isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
            delta = dict(delta)
            delta["tool_calls"] = [
                {**tc, "id": made[tc.get("index", 0)]}
                if isinstance(tc, dict) and not tc.get("id") and tc.get("index", 0) in made
                else tc
                for tc in delta["tool_calls"]
            ]
            choice["delta"] = delta
        if choice.get("finish_reason") == "stop" and self._calls:
            choice["finish_reason"] = "tool_calls"
        return {**data, "choices": [choice, *data["choices"][1:]]}

    def end(self) -> bytes:
        """The usage chunk (when asked for and not already relayed; what the upstream did not
        report, estimated), then [DONE]."""
        if self.include_usage and not self._relayed_usage:
            usage = filled(self._usage, self.input_estimate, self._chars)
            return self._chunk([], usage) + DONE
        return DONE

    @staticmethod
    def error(message: str, kind: str = "upstream_error") -> bytes:
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return b"data: " + orjson.dumps(body) + b"\n\n"


def _delta_json(tc: ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": tc.index}
    if tc.id is not None:
        out["id"] = tc.id
        out["type"] = "function"
    fn: dict[str, Any] = {"arguments": tc.arguments}
    if tc.name is not None:
        fn["name"] = tc.name
    out["function"] = fn
    return out


def encode_error(
    message: str, kind: str, param: str | None = None, code: str | None = None
) -> bytes:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})
