"""The conformance matrix, read with the providers' own SDK types: 4 inbound protocols x 3 upstream
types x features (text, streamed text, two tool-call rounds, an image, structured output, usage,
stop reasons, upstream errors).

Every body and every stream event pirouter emits is validated strictly with the official SDK's
type (openai, anthropic, ollama), never with our decoders, and walked beside that type: a key the
type does not define, or a key it requires that is missing, fails with its path (say
`anthropic<-ollama stream message_delta.usage: missing input_tokens`). What a cell expects comes
from what the fake upstream was scripted to send, and what the upstream received is read in the
upstream's own form.
"""

from __future__ import annotations

import collections.abc
import http.client
import json
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, Protocol

import anthropic
import anthropic._models as anthropic_models
import ollama
import openai._models as openai_models
import pytest
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.shared import ErrorObject
from pydantic import BaseModel, TypeAdapter, ValidationError

from tests import test_conformance
from tests.fakes import Daemon, FakeUpstream, Reply, Seen

CONFIG = test_conformance.CONFIG  # three providers, one per type, all on the one fake upstream
PNG = test_conformance.PNG
ALIAS = {"openai": "o", "anthropic": "a", "ollama": "l"}  # upstream type -> the pinned alias
MODEL_ID = {"openai": "m-o", "anthropic": "m-a", "ollama": "m-l"}
UPSTREAM_PATH = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "ollama": "/api/chat",
}
ROOT_EXTRA = frozenset({"pirouter"})  # the metadata object pirouter adds on whole bodies
# Keys the real servers send that these SDK versions' types do not define yet, each with its
# source; pirouter writes them as the server does (a client that knows them reads them).
SERVER_KEYS: dict[str, frozenset[str]] = {
    # the Responses API returns `store` on every Response (API reference, "The response
    # object"); openai 3.63's `Response` type has no field for it
    "Response": frozenset({"store"}),
    # Ollama's server writes a call's `id` and its `function.index` (github:ollama/ollama
    # api/types.go: `ToolCall.ID`, `ToolCallFunction.Index`); ollama-python 0.6.3 knows neither
    "ToolCall": frozenset({"id"}),
    "Function": frozenset({"index"}),
}
# What a same-protocol upstream adds is passed through as it came (nothing a provider returns is
# lost): llama.cpp's server adds `timings` to its last chunk (llama.cpp tools/server/README.md)
PASSED_THROUGH = frozenset({"timings"})

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
CLOCK = {
    "name": "get_time",
    "description": "The time in a zone",
    "parameters": {
        "type": "object",
        "properties": {"zone": {"type": "string"}},
        "required": ["zone"],
    },
}
# The two rounds: what the model calls, the id the upstream gives it, the result the client sends.
ROUNDS = (
    ("get_weather", {"city": "Paris"}, "call_up_1", "21 C and clear"),
    ("get_time", {"zone": "Europe/Paris"}, "call_up_2", "14:00"),
)
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
    "required": ["city", "temp"],
    "additionalProperties": False,
}
ANSWER = {"city": "Paris", "temp": 21}
USAGE = (37, 11)  # (input, output) tokens the fake reports in the usage cells
TEXT = "Bonjour from the upstream, friend."

pytestmark = pytest.mark.usefixtures("clean_fake")


# --- walking a JSON value beside the SDK type it should be -------------------------------------


def _unwrap(tp: Any) -> Any:
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif type(tp).__name__ == "TypeAliasType":  # typing's (3.12) or typing_extensions'
            tp = tp.__value__
        else:
            return tp


def _model(tp: Any) -> type[BaseModel] | None:
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _fits(value: Any, tp: Any) -> bool:
    """Whether a union member is worth walking `value` against (its shape, and its `type`)."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if tp in (Any, object):
        return True
    if (model := _model(tp)) is not None:
        if not isinstance(value, dict):
            return False
        kind = model.model_fields.get("type")
        if kind is not None and typing.get_origin(_unwrap(kind.annotation)) is Literal:
            return value.get("type") in typing.get_args(_unwrap(kind.annotation))
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, m) for m in typing.get_args(tp))
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable):
        return isinstance(value, list)
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        return isinstance(value, dict)
    if origin is Literal:
        return value in typing.get_args(tp)
    if isinstance(tp, type):
        return isinstance(value, tp) or (tp is float and isinstance(value, int))
    return True


def walk(value: Any, tp: Any, path: str, allow: frozenset[str] = frozenset()) -> list[str]:
    """Keys in `value` that `tp` does not define, and keys it requires that `value` lacks, by path.
    `allow`: keys let through at this level only."""
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if value is None or tp in (Any, object):
        return []
    if (model := _model(tp)) is not None:
        if not isinstance(value, dict):
            return []  # the strict validation names the wrong type
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        allow = allow | SERVER_KEYS.get(model.__name__, frozenset())
        problems = [f"{path}: unknown key {k}" for k in value if k not in fields and k not in allow]
        problems += [
            f"{path}: missing {k}" for k, f in fields.items() if f.is_required() and k not in value
        ]
        for k, f in fields.items():
            if k in value:
                problems += walk(value[k], f.annotation, f"{path}.{k}")
        return problems
    if origin in (typing.Union, types.UnionType):
        tried = [walk(value, m, path) for m in typing.get_args(tp) if _fits(value, m)]
        return min(tried, key=len) if tried else []
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable) and isinstance(
        value, list
    ):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [p for i, v in enumerate(value) for p in walk(v, item, f"{path}[{i}]")]
    if origin in (dict, collections.abc.Mapping) and isinstance(value, dict):
        args = typing.get_args(tp)
        inner = args[1] if len(args) == 2 else Any
        return [p for k, v in value.items() for p in walk(v, inner, f"{path}.{k}")]
    return []


def _members(tp: Any) -> tuple[Any, ...]:
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _brief(exc: ValidationError) -> str:
    """The first few errors of a validation, one line each: where, and what."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])


@cache
def adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def sdk_parse(tp: Any, data: Any) -> Any:
    """`data` read the way the SDK itself reads a response: openai and anthropic build their
    models without validating (`construct_type`); ollama and our error envelope validate."""
    module = getattr(_unwrap(_members(tp)[0]), "__module__", "")
    if module.startswith("openai."):
        return openai_models.construct_type(type_=tp, value=data)
    if module.startswith("anthropic."):
        return anthropic_models.construct_type(type_=tp, value=data)
    return adapter(tp).validate_python(data)


@dataclass
class Check:
    """One cell's context, what it found wrong, and the shape problems, by path."""

    ctx: str  # "anthropic<-ollama stream"
    wrong: list[str] = field(default_factory=list)  # what the client or the upstream got wrong
    problems: list[str] = field(default_factory=list)  # departures from the SDK types

    def conform(self, tp: Any, data: Any, where: str, allow: frozenset[str] = frozenset()) -> Any:
        """`data` checked against the SDK type `tp`, strictly, each departure noted by path; then
        read as the SDK reads it. A union is narrowed first to the member its `type` names, so
        errors name that member."""
        members = [m for m in _members(tp) if _fits(data, m)]
        if len(members) == 1:
            tp = members[0]
        self.problems += [f"{self.ctx} {p}" for p in walk(data, tp, where, allow)]
        name = getattr(_unwrap(tp), "__name__", "the union")
        try:
            adapter(tp).validate_python(data, strict=True)
        except ValidationError as exc:
            self.problems.append(f"{self.ctx} {where}: not a strict {name}: {_brief(exc)}")
        try:
            return sdk_parse(tp, data)
        except ValidationError as exc:
            self.problems.append(f"{self.ctx} {where}: not a {name}: {_brief(exc)}")
        self.settle()  # not even the SDK's own reading took it: nothing to read further
        raise AssertionError(f"{self.ctx} {where}: not a {name}")

    def settle(self) -> None:
        """Fail with everything found, one a line: what is wrong first, then the shapes."""
        found = self.wrong + self.problems
        assert not found, "\n".join(found)

    def eq(self, what: str, got: Any, want: Any) -> None:
        if got != want:
            self.wrong.append(f"{self.ctx} {what}: got {got!r}, want {want!r}")

    def that(self, ok: bool, what: str) -> None:
        if not ok:
            self.wrong.append(f"{self.ctx} {what}")


# --- what a client saw, whatever its protocol ---------------------------------------------------


@dataclass
class View:
    status: int
    text: str = ""
    calls: list[tuple[str | None, str, dict[str, Any]]] = field(default_factory=list)
    stop: str = ""  # stop | length | tool, or "other: <raw>"
    usage: tuple[int | None, int | None] | None = None
    start_input: int | None = None  # Anthropic streams: message_start's input_tokens
    error: str | None = None


@dataclass
class Turn:
    """A neutral conversation turn: a user's text (with an image), the assistant's tool calls,
    or a tool's result."""

    kind: Literal["user", "calls", "result"]
    text: str = ""
    image: bool = False
    calls: list[tuple[str | None, str, dict[str, Any]]] = field(default_factory=list)
    call_id: str | None = None
    name: str = ""


@dataclass
class Ask:
    """What a cell asks, in no protocol in particular."""

    turns: list[Turn]
    stream: bool = False
    tools: bool = False
    fmt: Literal["schema", "json"] | None = None


def sse(raw: bytes) -> list[tuple[str | None, str]]:
    """Server-sent events as (event name, data)."""
    out = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
        if data:
            out.append((name, "\n".join(data)))
    return out


def is_stream(headers: dict[str, str]) -> bool:
    kind = headers.get("content-type", "")
    return "event-stream" in kind or "ndjson" in kind


class OpenAIErrorBody(BaseModel):
    """`{"error": {...}}`: the envelope openai-python reads `ErrorObject` from."""

    error: ErrorObject


class Client(Protocol):
    path: str

    def body(self, ask: Ask) -> dict[str, Any]: ...

    def read(self, check: Check, status: int, headers: dict[str, str], raw: bytes) -> View: ...


def _args(text: str) -> dict[str, Any]:
    value = json.loads(text or "{}")
    assert isinstance(value, dict)
    return value


class Chat:
    """OpenAI Chat Completions."""

    path = "/v1/chat/completions"

    def body(self, ask: Ask) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        for t in ask.turns:
            if t.kind == "user":
                content: Any = t.text
                if t.image:
                    url = f"data:image/png;base64,{PNG}"
                    content = [
                        {"type": "text", "text": t.text},
                        {"type": "image_url", "image_url": {"url": url}},
                    ]
                messages.append({"role": "user", "content": content})
            elif t.kind == "calls":
                calls = [
                    {
                        "id": i,
                        "type": "function",
                        "function": {"name": n, "arguments": json.dumps(a)},
                    }
                    for i, n, a in t.calls
                ]
                messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            else:
                messages.append({"role": "tool", "tool_call_id": t.call_id, "content": t.text})
        out: dict[str, Any] = {"model": "auto", "messages": messages, "max_tokens": 256}
        if ask.stream:
            out |= {"stream": True, "stream_options": {"include_usage": True}}
        if ask.tools:
            out["tools"] = [{"type": "function", "function": f} for f in (WEATHER, CLOCK)]
        if ask.fmt == "schema":
            schema = {"name": "weather", "schema": SCHEMA, "strict": True}
            out["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif ask.fmt == "json":
            out["response_format"] = {"type": "json_object"}
        return out

    def read(self, check: Check, status: int, headers: dict[str, str], raw: bytes) -> View:
        view = View(status)
        if status != 200:
            data = json.loads(sse(raw)[0][1]) if is_stream(headers) else json.loads(raw)
            body = check.conform(OpenAIErrorBody, data, "error", ROOT_EXTRA)
            view.error = body.error.message
            return view
        if not is_stream(headers):
            same = "<-openai" in check.ctx  # passed through from an OpenAI-type upstream
            extra = ROOT_EXTRA | PASSED_THROUGH if same else ROOT_EXTRA
            done = check.conform(ChatCompletion, json.loads(raw), "body", extra)
            (choice,) = done.choices
            view.text = choice.message.content or ""
            view.calls = [
                (c.id, c.function.name, _args(c.function.arguments))
                for c in choice.message.tool_calls or []
                if c.type == "function"
            ]
            view.stop = self._stop(choice.finish_reason)
            if done.usage is not None:
                view.usage = (done.usage.prompt_tokens, done.usage.completion_tokens)
            return view
        events = sse(raw)
        check.eq("the stream's end", events[-1][1] if events else None, "[DONE]")
        chunks = [json.loads(data) for _, data in events if data != "[DONE]"]
        calls: dict[int, list[Any]] = {}
        for n, data in enumerate(chunks):
            if "error" in data and "choices" not in data:
                body = check.conform(OpenAIErrorBody, data, f"chunk[{n}]")
                view.error = body.error.message
                continue
            same = "<-openai" in check.ctx  # passed through from an OpenAI-type upstream
            extra = PASSED_THROUGH if same else frozenset()
            chunk = check.conform(ChatCompletionChunk, data, f"chunk[{n}]", extra)
            for choice in chunk.choices:
                view.text += choice.delta.content or ""
                for tc in choice.delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, [None, "", ""])
                    entry[0] = tc.id or entry[0]
                    if tc.function is not None:
                        entry[1] = tc.function.name or entry[1]
                        entry[2] += tc.function.arguments or ""
                if choice.finish_reason is not None:
                    view.stop = self._stop(choice.finish_reason)
            if chunk.usage is not None:
                view.usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        view.calls = [(i, n, _args(a)) for i, n, a in calls.values()]
        if view.error is None:  # include_usage: the last chunk is the usage, with no choices
            last = chunks[-1] if chunks else {}
            check.that(
                last.get("choices") == [] and bool(last.get("usage")),
                f"last chunk: want empty choices and a usage, got {json.dumps(last)[:200]}",
            )
        return view

    @staticmethod
    def _stop(reason: str) -> str:
        return {"stop": "stop", "length": "length", "tool_calls": "tool"}.get(
            reason, f"other: {reason}"
        )


class Responses:
    """OpenAI Responses."""

    path = "/v1/responses"

    def body(self, ask: Ask) -> dict[str, Any]:
        items: list[dict[str, Any]] = []
        for t in ask.turns:
            if t.kind == "user":
                parts: list[dict[str, Any]] = [{"type": "input_text", "text": t.text}]
                if t.image:
                    url = f"data:image/png;base64,{PNG}"
                    parts.append({"type": "input_image", "image_url": url, "detail": "auto"})
                items.append({"role": "user", "content": parts})
            elif t.kind == "calls":
                items += [
                    {"type": "function_call", "call_id": i, "name": n, "arguments": json.dumps(a)}
                    for i, n, a in t.calls
                ]
            else:
                items.append(
                    {"type": "function_call_output", "call_id": t.call_id, "output": t.text}
                )
        out: dict[str, Any] = {"model": "auto", "input": items, "max_output_tokens": 256}
        if ask.stream:
            out["stream"] = True
        if ask.tools:
            out["tools"] = [{"type": "function", **f} for f in (WEATHER, CLOCK)]
        if ask.fmt == "schema":
            fmt = {"type": "json_schema", "name": "weather", "schema": SCHEMA, "strict": True}
            out["text"] = {"format": fmt}
        elif ask.fmt == "json":
            out["text"] = {"format": {"type": "json_object"}}
        return out

    def read(self, check: Check, status: int, headers: dict[str, str], raw: bytes) -> View:
        view = View(status)
        if status != 200 and not is_stream(headers):
            body = check.conform(OpenAIErrorBody, json.loads(raw), "error", ROOT_EXTRA)
            view.error = body.error.message
            return view
        if not is_stream(headers):
            self._final(view, check.conform(Response, json.loads(raw), "body", ROOT_EXTRA))
            return view
        deltas, final = "", None
        for n, (name, data) in enumerate(sse(raw)):
            event = json.loads(data)
            where = str(event.get("type", f"event[{n}]"))
            parsed = check.conform(ResponseStreamEvent, event, where)
            check.eq(f"event[{n}] name", name, parsed.type)
            if parsed.type == "response.output_text.delta":
                deltas += parsed.delta
            elif parsed.type == "error":
                view.error = parsed.message
            elif parsed.type in ("response.completed", "response.incomplete", "response.failed"):
                final = parsed.response
        check.that(final is not None or view.error is not None, "stream: no final response")
        if final is not None:
            self._final(view, final)
            check.eq("streamed text vs the final response's", deltas, view.text)
        return view

    @staticmethod
    def _final(view: View, response: Response) -> None:
        for item in response.output:
            if item.type == "message":
                view.text += "".join(p.text for p in item.content if p.type == "output_text")
            elif item.type == "function_call":
                view.calls.append((item.call_id, item.name, _args(item.arguments)))
        if response.status == "failed":
            view.error = response.error.message if response.error else "failed"
        if response.status == "incomplete":
            reason = response.incomplete_details.reason if response.incomplete_details else None
            view.stop = "length" if reason == "max_output_tokens" else f"other: {reason}"
        elif response.status == "completed":
            view.stop = "tool" if view.calls else "stop"
        else:
            view.stop = f"other: {response.status}"
        if response.usage is not None:
            view.usage = (response.usage.input_tokens, response.usage.output_tokens)


class Anthropic:
    """Anthropic Messages."""

    path = "/v1/messages"

    def body(self, ask: Ask) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        for t in ask.turns:
            if t.kind == "user":
                content: Any = t.text
                if t.image:
                    source = {"type": "base64", "media_type": "image/png", "data": PNG}
                    content = [
                        {"type": "text", "text": t.text},
                        {"type": "image", "source": source},
                    ]
                messages.append({"role": "user", "content": content})
            elif t.kind == "calls":
                blocks = [
                    {"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in t.calls
                ]
                messages.append({"role": "assistant", "content": blocks})
            else:
                result = {"type": "tool_result", "tool_use_id": t.call_id, "content": t.text}
                messages.append({"role": "user", "content": [result]})
        out: dict[str, Any] = {"model": "auto", "max_tokens": 256, "messages": messages}
        if ask.stream:
            out["stream"] = True
        if ask.tools:
            out["tools"] = [
                {
                    "name": f["name"],
                    "description": f["description"],
                    "input_schema": f["parameters"],
                }
                for f in (WEATHER, CLOCK)
            ]
        if ask.fmt == "schema":
            out["output_config"] = {"format": {"type": "json_schema", "schema": SCHEMA}}
        return out

    def read(self, check: Check, status: int, headers: dict[str, str], raw: bytes) -> View:
        view = View(status)
        if status != 200 and not is_stream(headers):
            view.error = check.conform(ErrorResponse, json.loads(raw), "error").error.message
            return view
        if not is_stream(headers):
            message = check.conform(Message, json.loads(raw), "body", ROOT_EXTRA)
            for block in message.content:
                if block.type == "text":
                    view.text += block.text
                elif block.type == "tool_use":
                    view.calls.append((block.id, block.name, dict(block.input)))
            view.stop = self._stop(message.stop_reason)
            view.usage = (message.usage.input_tokens, message.usage.output_tokens)
            return view
        blocks: dict[int, list[Any]] = {}
        for n, (name, data) in enumerate(sse(raw)):
            event = json.loads(data)
            where = str(event.get("type", f"event[{n}]"))
            # the SDK drops an event with no `event:` name, and skips `ping` before parsing
            check.eq(f"event[{n}] name", name, event.get("type"))
            if name == "ping":
                check.eq("ping", event, {"type": "ping"})
                continue
            if name == "error":
                view.error = check.conform(ErrorResponse, event, where).error.message
                continue
            parsed = check.conform(RawMessageStreamEvent, event, where)
            if parsed.type == "message_start":
                view.start_input = parsed.message.usage.input_tokens
            elif parsed.type == "content_block_start":
                block = parsed.content_block
                if block.type == "tool_use":
                    blocks[parsed.index] = [block.id, block.name, ""]
            elif parsed.type == "content_block_delta":
                if parsed.delta.type == "text_delta":
                    view.text += parsed.delta.text
                elif parsed.delta.type == "input_json_delta":
                    blocks[parsed.index][2] += parsed.delta.partial_json
            elif parsed.type == "message_delta":
                view.stop = self._stop(parsed.delta.stop_reason)
                view.usage = (parsed.usage.input_tokens, parsed.usage.output_tokens)
        view.calls = [(i, n, _args(a)) for i, n, a in blocks.values()]
        return view

    @staticmethod
    def _stop(reason: str | None) -> str:
        return {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool"}.get(
            reason or "", f"other: {reason}"
        )


class Ollama:
    """Ollama /api/chat."""

    path = "/api/chat"

    def body(self, ask: Ask) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        for t in ask.turns:
            if t.kind == "user":
                message: dict[str, Any] = {"role": "user", "content": t.text}
                if t.image:
                    message["images"] = [PNG]
                messages.append(message)
            elif t.kind == "calls":
                # an Ollama client keeps what ollama-python's Message keeps: name and arguments
                calls = [{"function": {"name": n, "arguments": a}} for _, n, a in t.calls]
                messages.append({"role": "assistant", "content": "", "tool_calls": calls})
            else:
                messages.append({"role": "tool", "content": t.text, "tool_name": t.name})
        out: dict[str, Any] = {
            "model": "auto",
            "messages": messages,
            "stream": ask.stream,
            "options": {"num_predict": 256},
        }
        if ask.tools:
            out["tools"] = [{"type": "function", "function": f} for f in (WEATHER, CLOCK)]
        if ask.fmt == "schema":
            out["format"] = SCHEMA
        elif ask.fmt == "json":
            out["format"] = "json"
        return out

    def read(self, check: Check, status: int, headers: dict[str, str], raw: bytes) -> View:
        view = View(status)
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line]
        if status != 200 or errors:
            (first,) = errors[:1] or [{}]
            check.eq("error body keys", sorted(first), ["error"])
            view.error = ollama.ResponseError(json.dumps(first), status).error
            return view
        if not is_stream(headers):
            check.eq("whole body lines", len(lines), 1)
        whole = ROOT_EXTRA if not is_stream(headers) else frozenset()
        for n, data in enumerate(lines):
            line = check.conform(ollama.ChatResponse, data, f"line[{n}]", whole)
            view.text += line.message.content or ""
            for i, c in enumerate(line.message.tool_calls or []):
                raw_id = data["message"]["tool_calls"][i].get("id")
                view.calls.append((raw_id, c.function.name, dict(c.function.arguments)))
            check.eq(f"line[{n}].done", line.done, n == len(lines) - 1)
        if lines:
            last = ollama.ChatResponse.model_validate(lines[-1])  # conformed above
            reason = last.done_reason
            view.stop = {"stop": "stop", "length": "length"}.get(reason or "", f"other: {reason}")
            if view.stop == "stop" and view.calls:
                view.stop = "tool"
            view.usage = (last.prompt_eval_count, last.eval_count)
        return view


CLIENTS: dict[str, Client] = {
    "chat": Chat(),
    "responses": Responses(),
    "anthropic": Anthropic(),
    "ollama": Ollama(),
}


# --- what the upstream received, in its own form ------------------------------------------------


def upstream_links(seen: Seen) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Each tool result the upstream got, with the call it answers: (result, call name, call
    arguments), matched the way that upstream matches them; a result that answers no call fails."""
    body = seen.body
    out: list[tuple[str, str, dict[str, Any] | None]] = []
    if seen.path == "/v1/chat/completions":
        calls: dict[str, tuple[str, dict[str, Any]]] = {}
        for m in body["messages"]:
            for c in m.get("tool_calls") or []:
                assert c.get("id"), f"openai upstream: a tool call with no id: {c}"
                assert c["id"] not in calls, f"openai upstream: tool call id {c['id']} twice"
                calls[c["id"]] = (c["function"]["name"], _args(c["function"]["arguments"]))
            if m["role"] == "tool":
                ref = m.get("tool_call_id")
                assert ref in calls, f"openai upstream: tool_call_id {ref!r} answers no call"
                out.append((_plain(m["content"]), *calls[ref]))
    elif seen.path == "/v1/messages":
        uses: dict[str, tuple[str, dict[str, Any]]] = {}
        for m in body["messages"]:
            blocks = m["content"] if isinstance(m["content"], list) else []
            for b in blocks:
                if b["type"] == "tool_use":
                    assert b.get("id"), f"anthropic upstream: a tool_use with no id: {b}"
                    assert b["id"] not in uses, f"anthropic upstream: tool_use id {b['id']} twice"
                    uses[b["id"]] = (b["name"], b["input"])
                elif b["type"] == "tool_result":
                    ref = b.get("tool_use_id")
                    assert ref in uses, f"anthropic upstream: tool_use_id {ref!r} answers no call"
                    out.append((_plain(b.get("content")), *uses[ref]))
    else:
        named: dict[str, dict[str, Any]] = {}
        for m in body["messages"]:
            for c in m.get("tool_calls") or []:
                named[c["function"]["name"]] = c["function"]["arguments"]
            if m["role"] == "tool":
                name = m.get("tool_name")
                assert name in named, f"ollama upstream: tool_name {name!r} answers no call"
                out.append((m["content"], name, named[name]))
    return out


def _plain(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def upstream_images(seen: Seen) -> list[str]:
    """The base64 data of each image the upstream got, read in its own form."""
    out = []
    for m in seen.body["messages"]:
        out += list(m.get("images") or [])
        for p in m["content"] if isinstance(m.get("content"), list) else []:
            if p.get("type") == "image_url":
                out.append(p["image_url"]["url"].removeprefix("data:image/png;base64,"))
            elif p.get("type") == "image" and p["source"].get("type") == "base64":
                out.append(p["source"]["data"])
    return out


def upstream_format(seen: Seen, fmt: str) -> str | None:
    """Why the upstream's body does not ask for the structured output, in its native form; None
    when it does."""
    body = seen.body
    if seen.path == "/v1/chat/completions":
        rf = body.get("response_format") or {}
        if fmt == "json":
            return None if rf.get("type") == "json_object" else f"response_format {rf}"
        schema = (rf.get("json_schema") or {}).get("schema")
        ok = rf.get("type") == "json_schema" and schema == SCHEMA
        return None if ok else f"response_format {json.dumps(rf)[:200]}"
    if seen.path == "/api/chat":
        want: Any = SCHEMA if fmt == "schema" else "json"
        return None if body.get("format") == want else f"format {body.get('format')!r}"
    native = ((body.get("output_config") or {}).get("format")) or {}
    if native.get("type") == "json_schema" and (fmt == "json" or native.get("schema") == SCHEMA):
        return None
    choice = body.get("tool_choice") or {}
    tools = {t.get("name"): t for t in body.get("tools") or []}
    forced = tools.get(choice.get("name")) if choice.get("type") == "tool" else None
    if forced is not None and (fmt == "json" or forced.get("input_schema") == SCHEMA):
        return None
    return f"output_config {json.dumps(native)[:120]}, tool_choice {choice}"


# --- fixtures and transport ---------------------------------------------------------------------


def send(
    daemon: Daemon, path: str, body: dict[str, Any], alias: str
) -> tuple[int, dict[str, str], bytes]:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"content-type": "application/json", "x-pirouter-route": alias},
        )
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def sdk(daemon: Daemon) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=daemon.url, api_key="unused", max_retries=0, timeout=20)
    yield client
    client.close()


@dataclass
class Cell:
    inbound: str
    upstream: str
    feature: str
    daemon: Daemon
    fake: FakeUpstream
    sdk: anthropic.Anthropic
    check: Check

    @property
    def client(self) -> Client:
        return CLIENTS[self.inbound]

    @property
    def model(self) -> str:
        return MODEL_ID[self.upstream]

    def ask(self, ask: Ask) -> View:
        body = self.client.body(ask)
        status, headers, raw = send(self.daemon, self.client.path, body, ALIAS[self.upstream])
        view = self.client.read(self.check, status, headers, raw)
        if view.error is None:
            self.check.eq(f"status ({raw[:300]!r})", status, 200)
        return view


# --- the features -------------------------------------------------------------------------------


def hello(image: bool = False) -> list[Turn]:
    return [Turn("user", "what is this?" if image else "hello", image=image)]


def text(cell: Cell, stream: bool) -> None:
    cell.fake.script(cell.model, Reply(text=TEXT))
    view = cell.ask(Ask(hello(), stream=stream))
    cell.check.eq("text", view.text, TEXT)
    cell.check.eq("stop", view.stop, "stop")
    cell.check.eq("tool calls", view.calls, [])
    (seen,) = cell.fake.seen
    cell.check.eq("upstream path", seen.path, UPSTREAM_PATH[cell.upstream])


def tools(cell: Cell, stream: bool) -> None:
    """Two tool-call rounds, then the answer: ids non-empty and unique, results linked right."""
    replies = [
        Reply(
            text="",
            finish_reason="tool_calls",
            tool_calls=[
                {
                    "id": up_id,
                    "type": "function",
                    "function": {"name": n, "arguments": json.dumps(a)},
                }
            ],
        )
        for n, a, up_id, _ in ROUNDS
    ]
    cell.fake.script(cell.model, *replies, Reply(text="Clear at 14:00."))
    turns = [Turn("user", "weather and time in Paris?")]
    ids: list[str | None] = []
    for n, (name, args, _, result) in enumerate(ROUNDS):
        view = cell.ask(Ask(turns, stream=stream, tools=True))
        cell.check.eq(
            f"round {n + 1} calls (name, args)", [c[1:] for c in view.calls], [(name, args)]
        )
        cell.check.eq(f"round {n + 1} stop", view.stop, "tool")
        if not view.calls:
            raise AssertionError(f"round {n + 1}: no tool call reached the client")
        call_id = view.calls[0][0]
        if cell.inbound != "ollama" or call_id is not None:  # Ollama's own format may omit ids
            cell.check.that(
                isinstance(call_id, str) and call_id != "", f"round {n + 1}: empty id {call_id!r}"
            )
            cell.check.that(call_id not in ids, f"round {n + 1}: id {call_id!r} seen before {ids}")
        ids.append(call_id)
        turns += [
            Turn("calls", calls=view.calls),
            Turn("result", result, call_id=call_id, name=name),
        ]
    view = cell.ask(Ask(turns, stream=stream, tools=True))
    cell.check.eq("answer text", view.text, "Clear at 14:00.")
    cell.check.eq("answer stop", view.stop, "stop")
    for n, seen in enumerate(cell.fake.seen):
        want = [(result, name, args) for name, args, _, result in ROUNDS[:n]]
        cell.check.eq(f"upstream request {n + 1}: results -> calls", upstream_links(seen), want)


def image(cell: Cell) -> None:
    cell.fake.script(cell.model, Reply(text=TEXT))
    view = cell.ask(Ask(hello(image=True)))
    cell.check.eq("text", view.text, TEXT)
    (seen,) = cell.fake.seen
    cell.check.eq("upstream images", upstream_images(seen), [PNG])
    cell.check.that("what is this?" in json.dumps(seen.body), "upstream lost the question")


def structured(cell: Cell, fmt: Literal["schema", "json"], stream: bool) -> None:
    cell.fake.script(cell.model, Reply(text=json.dumps(ANSWER), json_via_tool=True))
    view = cell.ask(Ask(hello(), stream=stream, fmt=fmt))
    (seen,) = cell.fake.seen
    wrong = upstream_format(seen, fmt)
    cell.check.that(wrong is None, f"{cell.upstream} upstream not asked natively: {wrong}")
    cell.check.eq("tool calls (the JSON must come as text)", view.calls, [])
    try:
        answer = json.loads(view.text)
    except ValueError:
        answer = view.text
    cell.check.eq("answer JSON", answer, ANSWER)
    cell.check.eq("stop", view.stop, "stop")


def usage(cell: Cell, stream: bool) -> None:
    cell.fake.default(cell.model, Reply(text="Counted.", usage=USAGE))
    view = cell.ask(Ask(hello(), stream=stream))
    cell.check.eq("usage (input, output)", view.usage, USAGE)
    if cell.inbound == "anthropic" and stream:
        if cell.upstream == "anthropic":  # counted before the answer begins
            cell.check.eq("message_start.message.usage.input_tokens", view.start_input, USAGE[0])
        else:  # counted only at the end: the start carries pirouter's estimate, never 0
            start = view.start_input or 0
            cell.check.that(start > 0, f"message_start input_tokens {start}: want an estimate")
        # what a real client computes: the anthropic SDK's own stream accumulator
        with cell.sdk.messages.stream(
            model="auto",
            max_tokens=64,
            messages=[{"role": "user", "content": "hello"}],
            extra_headers={"x-pirouter-route": ALIAS[cell.upstream]},
        ) as events:
            final = events.get_final_message()
        got = (final.usage.input_tokens, final.usage.output_tokens)
        cell.check.eq("anthropic SDK get_final_message().usage", got, USAGE)


def length(cell: Cell, stream: bool) -> None:
    cell.fake.script(cell.model, Reply(text="Cut short", finish_reason="length"))
    view = cell.ask(Ask(hello(), stream=stream))
    cell.check.eq("text", view.text, "Cut short")
    cell.check.eq("stop", view.stop, "length")


def error(cell: Cell, stream: bool, status: int) -> None:
    message = f"bad input here ({status})"
    cell.fake.default(cell.model, Reply(kind="status", status=status, error=message))
    view = cell.ask(Ask(hello(), stream=stream))
    cell.check.that(view.error is not None, f"no error reached the client (status {view.status})")
    cell.check.that(view.status >= 400 or stream, f"status {view.status} for an upstream {status}")
    if status < 500:  # the upstream's own words reach the client
        cell.check.that(message in (view.error or ""), f"error {view.error!r} lacks {message!r}")
    cell.check.eq("models called", set(cell.fake.models_called()), {cell.model})


FEATURES: dict[str, Callable[[Cell], None]] = {
    "text": lambda c: text(c, False),
    "stream": lambda c: text(c, True),
    "tools": lambda c: tools(c, False),
    "tools-stream": lambda c: tools(c, True),
    "image": image,
    "schema": lambda c: structured(c, "schema", False),
    "schema-stream": lambda c: structured(c, "schema", True),
    "json": lambda c: structured(c, "json", False),
    "usage": lambda c: usage(c, False),
    "usage-stream": lambda c: usage(c, True),
    "length": lambda c: length(c, False),
    "length-stream": lambda c: length(c, True),
    "error": lambda c: error(c, False, 400),
    "error-stream": lambda c: error(c, True, 400),
    "error-500": lambda c: error(c, False, 500),
}
CELLS = [
    (inbound, upstream, feature)
    for inbound in CLIENTS
    for upstream in ALIAS
    for feature in FEATURES
    if not (inbound == "anthropic" and feature == "json")  # Anthropic's API has no JSON mode
]


@pytest.mark.parametrize(
    ("inbound", "upstream", "feature"), CELLS, ids=["-".join(c) for c in CELLS]
)
def test_matrix(
    daemon: Daemon,
    fake: FakeUpstream,
    sdk: anthropic.Anthropic,
    inbound: str,
    upstream: str,
    feature: str,
) -> None:
    check = Check(f"{inbound}<-{upstream} {feature}")
    try:
        FEATURES[feature](Cell(inbound, upstream, feature, daemon, fake, sdk, check))
    except Exception as exc:  # a cell that cannot go on: say so after what it found
        check.wrong.append(f"{check.ctx} stopped: {type(exc).__name__}: {exc}")
        raise AssertionError("\n".join(check.wrong + check.problems)) from exc
    check.settle()


# --- the checker itself must be able to fail ----------------------------------------------------


def test_walk_names_unknown_and_missing_keys() -> None:
    event = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}, "x": 1}
    problems = walk(event, RawMessageStreamEvent, "message_delta")
    assert problems == [
        "message_delta: unknown key x",
        "message_delta.usage: missing output_tokens",
    ]
    body = {"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": []}}
    assert walk({**body, "pirouter": {}}, ollama.ChatResponse, "line", ROOT_EXTRA) == []
    assert walk({**body, "pirouter": {}}, ollama.ChatResponse, "line") == [
        "line: unknown key pirouter"
    ]


def test_strict_validation_refuses_what_lenient_takes() -> None:
    check = Check("t")
    check.conform(
        ChatCompletionChunk,
        {"id": "c", "choices": [], "created": "1", "model": "m", "object": "chat.completion.chunk"},
        "chunk[0]",
    )
    assert check.problems and "not a strict" in check.problems[0]


def test_a_result_that_answers_no_call_fails() -> None:
    call = {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = {
        "messages": [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_b", "content": "r"},
        ]
    }
    with pytest.raises(AssertionError, match="answers no call"):
        upstream_links(Seen("/v1/chat/completions", "m", body, {}))
    twice = {"messages": [{"role": "assistant", "content": None, "tool_calls": [call, call]}]}
    with pytest.raises(AssertionError, match="twice"):
        upstream_links(Seen("/v1/chat/completions", "m", twice, {}))
