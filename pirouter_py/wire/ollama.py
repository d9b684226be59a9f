"""The Ollama `/api/chat` wire format, both ways: requests, responses, NDJSON streams, errors.

Neutral <-> Ollama: `options` (temperature, top_p, num_predict, stop, seed, num_ctx) <-> sampling
fields; tool-call arguments are objects in Ollama and JSON text in OpenAI. Ollama's server gives
tool calls no id (api/types.go: `ToolCall.ID` is `omitempty`, and its parsers leave it empty), so
an answer's calls get fresh random ids (`wire.new_call_id`), never one an earlier turn used; and
its clients send tool results back by `tool_name` (the Python SDK knows no ids), so a client's
history gets ids by position (`call_<message>_<n>`) and each tool result is matched to the first
call of the turn still unanswered with its name (its `tool_call_id` when the client sends one).
Images travel as bare base64 (an http image URL cannot reach Ollama: a clear 400);
`done_reason` <-> `finish_reason`; `prompt_eval_count`/`eval_count` <-> usage; `format` (a JSON
schema or "json") <-> structured output (`response_format` in neutral form); `keep_alive` and
`think` pass through. Ollama-speaking clients stream unless they say `"stream": false`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from pirouter_py.errors import RequestError, UpstreamTransportError
from pirouter_py.types import (
    ROLES,
    ChatRequest,
    ChatResponse,
    ContentPart,
    ImagePart,
    Message,
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
    filled,
    got_count,
    got_list,
    got_name,
    got_object,
    got_text,
    malformed,
    new_call_id,
    obj,
    request_object,
    schema_format,
    without_foreign,
)

# base64 prefixes of the image formats Ollama's models take
MAGIC = {"iVBOR": "image/png", "/9j/": "image/jpeg", "R0lGOD": "image/gif", "UklGR": "image/webp"}
PASSTHROUGH = ("keep_alive", "format", "think")  # Ollama-only fields carried to Ollama upstreams


def _bad(message: str, param: str | None = None) -> RequestError:
    return RequestError(message, param=param)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _media(data: str) -> str:
    return next((m for prefix, m in MAGIC.items() if data.startswith(prefix)), "image/png")


# ---------------------------------------------------------------------------------------------
# Inbound requests (a client speaking Ollama)


def decode_request(body: bytes) -> ChatRequest:
    data, model = request_object(body)
    raw_messages = data.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _bad("`messages` must be a non-empty array", "messages")
    messages: list[Message] = []
    pending: list[ToolCall] = []  # the latest assistant turn's calls not yet answered
    for i, m in enumerate(raw_messages):
        messages.append(_message(m, i, pending))
    options = obj(data.get("options"))
    params: dict[str, Any] = {
        k: options[k] for k in ("top_p", "stop", "seed") if options.get(k) is not None
    }
    structured = response_format(data.get("format"))
    if structured is not None:
        params["response_format"] = structured
    stream = data.get("stream", True)
    if not isinstance(stream, bool):
        raise _bad("`stream` must be true or false", "stream")
    tools = data.get("tools")
    specs = tuple(
        ToolSpec(fn["name"], fn.get("description"), fn.get("parameters") or {})
        for t in (tools if isinstance(tools, list) else [])
        for fn in ((t.get("function") if isinstance(t, dict) else None),)
        if isinstance(fn, dict) and isinstance(fn.get("name"), str)
    )
    temperature = options.get("temperature")
    max_tokens = options.get("num_predict")
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        tools=specs,
        stream=stream,
        temperature=float(temperature) if isinstance(temperature, int | float) else None,
        max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None,
        params=params,
        protocol="ollama",
        raw=data,
        include_usage=True,
    )


def _array(value: Any, where: str) -> list[Any]:
    """A field that must be an array when present."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(f"`{where}` must be an array", where)
    return value


def response_format(fmt: Any) -> dict[str, Any] | None:
    """Ollama's `format` ("json" or a JSON schema) as OpenAI's `response_format`."""
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict) and fmt:
        return schema_format(fmt)
    return None


def _answered(pending: list[ToolCall], call_id: Any, name: Any) -> str | None:
    """The id of the call a tool result answers: the one it names by id, else the first
    unanswered call with its tool's name, else the first unanswered call."""
    found = next((c for c in pending if c.id == call_id), None) if call_id else None
    if found is None and isinstance(name, str):
        found = next((c for c in pending if c.name == name), None)
    if found is None and pending and not call_id:
        found = pending[0]
    if found is None:
        return call_id if isinstance(call_id, str) else (f"call_{name}" if name else None)
    pending.remove(found)
    return found.id


def _message(m: Any, i: int, pending: list[ToolCall]) -> Message:
    where = f"messages[{i}]"
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise _bad(f"`{where}.role` must be system, user, assistant or tool", f"{where}.role")
    content = m.get("content") or ""
    if not isinstance(content, str):
        raise _bad(f"`{where}.content` must be a string", f"{where}.content")
    parts: list[ContentPart] = [TextPart(content)] if content else []
    for image in _array(m.get("images"), f"{where}.images"):
        if not isinstance(image, str):
            raise _bad(f"`{where}.images` must hold base64 strings", f"{where}.images")
        parts.append(ImagePart(f"data:{_media(image)};base64,{image}"))
    calls = []
    for j, call in enumerate(_array(m.get("tool_calls"), f"{where}.tool_calls")):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad(f"`{where}.tool_calls[{j}].function.name` is required", where)
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = f"call_{i}_{j}"  # unique in the conversation, and the same on every turn
        calls.append(ToolCall(call_id, fn["name"], arguments_json(fn.get("arguments"))))
    if calls:
        pending[:] = calls
    tool_call_id = None
    if m["role"] == "tool":
        name = m.get("tool_name") or m.get("name")
        if name is not None and not isinstance(name, str):
            raise _bad(f"`{where}.tool_name` must be a string", f"{where}.tool_name")
        tool_call_id = _answered(pending, m.get("tool_call_id"), name)
    return Message(m["role"], tuple(parts), tool_calls=tuple(calls), tool_call_id=tool_call_id)


# ---------------------------------------------------------------------------------------------
# Outbound requests (an Ollama upstream)


def encode_request(request: ChatRequest, model_id: str, *, stream: bool) -> dict[str, Any]:
    if request.raw is not None and request.protocol == "ollama":
        return {**request.raw, "model": model_id, "stream": stream}
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    body: dict[str, Any] = {
        "model": model_id,
        "messages": [_encode_message(m, names) for m in without_foreign(request.messages)],
        "stream": stream,
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description or "",
                    "parameters": dict(t.parameters) or {"type": "object"},
                },
            }
            for t in request.tools
        ]
    params = request.params
    options: dict[str, Any] = {}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    for key in ("top_p", "seed", "num_ctx"):
        if params.get(key) is not None:
            options[key] = params[key]
    if params.get("stop"):
        options["stop"] = [params["stop"]] if isinstance(params["stop"], str) else params["stop"]
    if options:
        body["options"] = options
    fmt = params.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        body["format"] = "json"
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        body["format"] = (fmt.get("json_schema") or {}).get("schema") or "json"
    for key in PASSTHROUGH:
        if key in params:
            body[key] = params[key]
    return body


def _encode_message(m: Message, names: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.text}
    images = []
    for part in m.content:
        if isinstance(part, ImagePart):
            if part.media_type is None:
                raise _bad(
                    "ollama models take images as base64 data; this request has an "
                    "image URL (send the image as a data: URL)"
                )
            images.append(part.url.split(",", 1)[1])
        elif not isinstance(part, TextPart):
            raise _bad(f"ollama models cannot take `{part.kind}` content parts")
    if images:
        out["images"] = images
    if m.tool_calls:
        out["tool_calls"] = _calls_json(m.tool_calls)
    if m.role == "tool" and m.tool_call_id is not None:
        # both: newer servers read the id (api/types.go `Message.ToolCallID`), older the name
        out["tool_call_id"] = m.tool_call_id
        if m.tool_call_id in names:
            out["tool_name"] = names[m.tool_call_id]
    return out


# ---------------------------------------------------------------------------------------------
# Responses


def _finish(done_reason: Any, tool_calls: bool) -> str:
    if done_reason == "length":
        return "length"
    return "tool_calls" if tool_calls else "stop"


def _calls(message: Mapping[str, Any], where: str) -> tuple[ToolCall, ...]:
    """An answer's tool calls: each named, its arguments an object; no id from Ollama's server,
    so each gets a fresh one."""
    out = []
    for j, given in enumerate(got_list(message.get("tool_calls"), "message.tool_calls", where)):
        field = f"message.tool_calls[{j}]"
        fn = got_object(got_object(given, field, where).get("function"), f"{field}.function", where)
        name = got_name(fn.get("name"), f"{field}.function.name", where)
        arguments = fn.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise malformed(where, f"`{field}.function.arguments` is not an object")
        call_id = got_text(given.get("id"), f"{field}.id", where) or new_call_id()
        out.append(ToolCall(call_id, name, arguments_json(arguments)))
    return tuple(out)


def _answer_message(data: Any, where: str) -> dict[str, Any]:
    """The `message` of an answer or a stream line; its content checked to be text."""
    message = got_object(data.get("message"), "message", where)
    got_text(message.get("content"), "message.content", where)
    return message


def _usage(data: dict[str, Any], where: str) -> Usage:
    return Usage(
        got_count(data.get("prompt_eval_count"), "prompt_eval_count", where),
        got_count(data.get("eval_count"), "eval_count", where),
    )


def decode_response(data: Any, provider: str) -> ChatResponse:
    if not isinstance(obj(data).get("message"), dict):
        raise UpstreamTransportError(f"{provider} returned no message", retryable=True)
    message = _answer_message(data, provider)
    calls = _calls(message, provider)
    reason = got_text(data.get("done_reason"), "done_reason", provider)
    return ChatResponse(
        model=got_text(data.get("model"), "model", provider),
        text=message.get("content") or "",
        tool_calls=calls,
        finish_reason=_finish(reason, bool(calls)),
        usage=_usage(data, provider),
        raw=data,
        protocol="ollama",
    )


def _final(alias: str, created_at: str, finish: str, usage: Usage, **extra: Any) -> dict[str, Any]:
    return {
        "model": alias,
        "created_at": created_at,
        **extra,
        "done": True,
        "done_reason": "length" if finish == "length" else "stop",
        "total_duration": 0,
        "load_duration": 0,
        "prompt_eval_count": usage.input_tokens,
        "prompt_eval_duration": 0,
        "eval_count": usage.output_tokens,
        "eval_duration": 0,
    }


def _calls_json(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """Calls as Ollama's server writes them (api/types.go): `id`, and `function.index`."""
    return [
        {
            "id": c.id,
            "function": {"index": n, "name": c.name, "arguments": arguments_object(c.arguments)},
        }
        for n, c in enumerate(calls)
    ]


def encode_response(response: ChatResponse, env: Envelope) -> bytes:
    if response.raw is not None and response.protocol == "ollama":
        body = {**response.raw, "model": env.alias}
    else:
        message: dict[str, Any] = {"role": "assistant", "content": response.text}
        if response.tool_calls:
            message["tool_calls"] = _calls_json(response.tool_calls)
        body = _final(env.alias, _now(), response.finish_reason, response.usage, message=message)
    body["pirouter"] = env.meta
    return orjson.dumps(body)


class StreamDecoder:
    """Ollama NDJSON lines -> StreamEvents."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.calls = 0
        self.done = False

    def decode(self, data: Any) -> StreamEvent:
        if not isinstance(data, dict):
            raise UpstreamTransportError(
                f"{self.provider}: stream line is not an object", retryable=True
            )
        if "error" in data:
            raise UpstreamTransportError(
                f"{self.provider}: stream error: {data['error']}", retryable=True
            )
        where = self.provider
        message = _answer_message(data, where)
        deltas: tuple[ToolCallDelta, ...] = ()
        if "tool_calls" in message:  # most lines are a piece of text
            calls = _calls(message, where)
            self.calls += len(calls)
            deltas = tuple(
                ToolCallDelta(n, c.id, c.name, c.arguments)
                for n, c in enumerate(calls, self.calls - len(calls))
            )
        usage = finish = None
        done = data.get("done")
        if done is not None and not isinstance(done, bool):
            raise malformed(where, "`done` is not true or false")
        if done:
            self.done = True
            usage = _usage(data, where)
            reason = got_text(data.get("done_reason"), "done_reason", where)
            finish = _finish(reason, self.calls > 0)
        return StreamEvent(
            text=message.get("content") or "",
            tool_calls=deltas,
            finish_reason=finish,
            usage=usage,
            raw=data,
            protocol="ollama",
        )


class StreamEncoder:
    """StreamEvents -> the NDJSON lines an Ollama client reads."""

    def __init__(self, env: Envelope) -> None:
        self.alias = env.alias
        self.input_estimate = env.input_estimate
        self.chars = 0  # text sent, for an output estimate when the upstream reports none
        self.created_at = _now()
        self.passthrough = False
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self.finish = "stop"
        self.usage = Usage()

    def _line(self, data: Mapping[str, Any]) -> bytes:
        return orjson.dumps(data) + b"\n"

    def encode(self, event: StreamEvent) -> bytes:
        if event.raw is not None and event.protocol == "ollama":
            # passed through; its done line, when it comes, ends the stream (a stream cut before
            # it and continued by another model ends with a done line of ours)
            self.passthrough = bool(event.raw.get("done"))
            return self._line({**event.raw, "model": self.alias})
        for call in event.tool_calls:
            entry = self.calls.setdefault(call.index, ["", "", ""])
            entry[0] = call.id or entry[0]
            entry[1] = call.name or entry[1]
            entry[2] += call.arguments
        if event.finish_reason:
            self.finish = event.finish_reason
        if event.usage is not None:
            self.usage = event.usage
        if not event.text:
            return b""
        self.chars += len(event.text)
        return self._line(
            {
                "model": self.alias,
                "created_at": self.created_at,
                "message": {"role": "assistant", "content": event.text},
                "done": False,
            }
        )

    def end(self) -> bytes:
        if self.passthrough:
            return b""
        out = b""
        if self.calls:
            calls = tuple(ToolCall(i, n, a) for i, n, a in self.calls.values())
            out = self._line(
                {
                    "model": self.alias,
                    "created_at": self.created_at,
                    "message": {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": _calls_json(calls),
                    },
                    "done": False,
                }
            )
        return out + self._line(
            _final(
                self.alias,
                self.created_at,
                self.finish,
                filled(self.usage, self.input_estimate, self.chars),
                message={"role": "assistant", "content": ""},
            )
        )

    @staticmethod
    def error(message: str, kind: str = "") -> bytes:
        return orjson.dumps({"error": message}) + b"\n"


def encode_error(status: int, message: str) -> bytes:
    """Ollama's error body: {"error": "<message>"}."""
    return orjson.dumps({"error": message})


def tags(aliases: list[tuple[str, str]], started: float) -> bytes:
    """`GET /api/tags`: every alias as if it were a local model."""
    modified = datetime.fromtimestamp(started, UTC).isoformat().replace("+00:00", "Z")
    return orjson.dumps(
        {
            "models": [
                {
                    "name": alias,
                    "model": alias,
                    "modified_at": modified,
                    "size": 0,
                    "digest": "",
                    "details": _details(provider),
                }
                for alias, provider in aliases
            ]
        }
    )


def show(alias: str, provider: str, capabilities: list[str], context: int | None) -> bytes:
    """`POST /api/show` for one alias."""
    info: dict[str, Any] = {"general.architecture": provider}
    if context is not None:
        info[f"{provider}.context_length"] = context
    return orjson.dumps(
        {
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": _details(provider),
            "model_info": info,
            "capabilities": capabilities,
            "modified_at": _now(),
        }
    )


def _details(provider: str) -> dict[str, Any]:
    """A model's `details` in /api/tags and /api/show: the provider stands in for the family."""
    return {
        "format": "",
        "family": provider,
        "families": [provider],
        "parameter_size": "",
        "quantization_level": "",
    }
