"""Wire formats: one module per protocol, each decoding and encoding both directions.

The helpers here are the shapes the protocols share, written once: the request object every
inbound decoder checks first, a message's content (a string or typed parts), tool-call
arguments, ids for calls that came without one, and usage with what an upstream left out
estimated. Where protocols differ, only the difference is written in their modules.

What an upstream answers is read through the `got_*` helpers: every field pirouter reads is
checked, and a field of the wrong type (a number where text belongs, tokens as words, a tool
call whose arguments are no JSON object) makes the whole answer malformed (`malformed`): it
escalates to the next model like malformed JSON and is never relayed, even when the answer
would pass through in the client's own protocol.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any

import orjson

from pirouter_py.errors import RequestError, UpstreamTransportError
from pirouter_py.types import (
    ChatRequest,
    ContentPart,
    Message,
    TextPart,
    Usage,
    anthropic_only,
    frozen,
    is_billing_line,
)


@frozen
class Envelope:
    """What every protocol's encoder writes around an answer, whole or streamed."""

    alias: str  # the model alias that answered (the body's `model`)
    request_id: str  # pirouter's id of the request (the answer's id derives from it)
    created: int  # when the request arrived (unix seconds)
    request: ChatRequest | None = None  # Responses reads its tools, compaction and `store`
    meta: Mapping[str, Any] = field(default_factory=dict)  # a whole body's `pirouter` object
    include_usage: bool = True  # a streaming OpenAI client asked for the usage chunk
    input_estimate: int = 0  # the router's input estimate, for usage an upstream did not report


def obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def positive(data: dict[str, Any], key: str, where: str | None = None) -> int | None:
    """`data[key]` when it is a positive integer, None when absent; else a 400 naming it."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        name = where or key
        raise RequestError(f"`{name}` must be a positive integer", param=name)
    return value


def flag(data: dict[str, Any], key: str) -> bool | None:
    """`data[key]` when it is true or false, None when absent; else a 400 naming it."""
    value = data.get(key)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"`{key}` must be true or false", param=key)
    return value


def request_object(body: bytes) -> tuple[dict[str, Any], str]:
    """A request body that must be a JSON object naming a `model`: (the object, the model)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError("request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(
            '`model` is required: a model alias, or "auto" to let pirouter choose', param="model"
        )
    return data, model


# reads one typed content part: (the part, its `type`, where it is in the body) -> neutral part
PartReader = Callable[[dict[str, Any], str, str], ContentPart]


def content_parts(
    content: Any, where: str, read: PartReader, noun: str = "content parts"
) -> tuple[ContentPart, ...]:
    """A message's content in any protocol: a string (one text part) or an array of objects
    with a `type`, each read by the protocol's `read`; anything else is a 400 naming the field."""
    if isinstance(content, str):
        return (TextPart(content),)
    if not isinstance(content, list):
        raise RequestError(f"`{where}` must be a string or an array of {noun}", param=where)
    parts: list[ContentPart] = []
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind is None:
            raise RequestError(f"`{here}` must be an object with a `type`", param=here)
        if not isinstance(kind, str):
            raise RequestError(f"`{here}.type` must be a string", param=f"{here}.type")
        parts.append(read(part, kind, here))
    return tuple(parts)


def text_part(part: dict[str, Any], where: str) -> TextPart:
    """`{"type": "text", "text": ...}` (OpenAI's and Anthropic's shape); its other keys, such as
    Anthropic's `cache_control`, are kept."""
    text = part.get("text")
    if not isinstance(text, str):
        raise RequestError(f"`{where}.text` must be a string", param=f"{where}.text")
    extra = {k: v for k, v in part.items() if k not in ("type", "text")}
    return TextPart(text, extra or None)


def arguments_json(arguments: Any) -> str:
    """A tool call's arguments as JSON text: OpenAI sends text; Ollama's `arguments` and
    Anthropic's `input` are objects."""
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments or {}).decode()


def arguments_object(arguments: str) -> Any:
    """A tool call's JSON-text arguments as the object Ollama and Anthropic take ({} for none,
    or for text that is not JSON)."""
    try:
        return orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return {}


# the name OpenAI's json_schema format needs, for a schema another protocol gave without one
OUTPUT_NAME = "output"


def schema_format(schema: dict[str, Any], strict: bool = False) -> dict[str, Any]:
    """A JSON schema asked for by another protocol (Ollama's `format`, Anthropic's
    `output_config.format`) as OpenAI's `response_format`, the neutral form."""
    spec: dict[str, Any] = {"name": OUTPUT_NAME, "schema": schema}
    if strict:
        spec["strict"] = True
    return {"type": "json_schema", "json_schema": spec}


def new_call_id() -> str:
    """An id for a tool call its upstream gave none (Ollama's /api/chat never does; some
    OpenAI-compatible servers send none or ""). Random, 64 bits: no other call of the conversation,
    earlier or later, has it (a position-made id such as `call_0` repeats on the next turn, and an
    agent then takes the second call for the first, interrupted)."""
    return f"call_{random.getrandbits(64):016x}"


def filled(usage: Usage | None, input_estimate: int, output_chars: int) -> Usage:
    """Usage as the upstream reported it, with what it left out estimated: the input as the
    router estimated it, the output a token per 3 bytes of text (as the router counts). Every
    protocol's client is told both counts (Claude Code compacts by them)."""
    usage = usage or Usage()
    if usage.input_tokens and (usage.output_tokens or not output_chars):
        return usage
    return Usage(
        usage.input_tokens or input_estimate,
        usage.output_tokens or (output_chars // 3 + 1 if output_chars else 0),
        usage.cache_read_tokens,
        usage.cache_write_tokens,
    )


def foreign(part: ContentPart) -> bool:
    """A part only an Anthropic upstream takes: a thinking block, a server tool's call or result,
    or Claude Code's billing line. Toward other protocols it is left out (the billing line
    defeats their prefix caches)."""
    return is_billing_line(part) or anthropic_only(part)


def without_foreign(messages: tuple[Message, ...]) -> list[Message]:
    """The messages to send an upstream of another protocol: foreign parts left out, and a
    message left with nothing at all (a system message that was only the billing line) dropped."""
    out = []
    for m in messages:
        if not any(foreign(p) for p in m.content):
            out.append(m)
            continue
        kept = tuple(p for p in m.content if not foreign(p))
        if kept or m.tool_calls or m.role == "tool":
            out.append(Message(m.role, kept, m.name, m.tool_calls, m.tool_call_id))
    return out


# ---------------------------------------------------------------------------------------------
# What an upstream answers


def malformed(where: str, what: str) -> UpstreamTransportError:
    """An answer of the right JSON but the wrong shape, from the upstream `where` names: the
    next model is asked (never relayed, never a 500)."""
    return UpstreamTransportError(
        f"{where}: answered with a body pirouter cannot understand: {what}", retryable=True
    )


def _a(value: Any) -> str:
    """A JSON value's kind, for messages: "a number", "an object"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "an object" if isinstance(value, dict) else "an array"


def got_object(value: Any, field: str, where: str) -> dict[str, Any]:
    """A field that must be a JSON object when present: {} when absent or null."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise malformed(where, f"`{field}` is {_a(value)}, not an object")
    return value


def got_list(value: Any, field: str, where: str) -> list[Any]:
    """A field that must be an array when present: [] when absent or null."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise malformed(where, f"`{field}` is {_a(value)}, not an array")
    return value


def got_text(value: Any, field: str, where: str) -> str:
    """A field that must be text when present: "" when absent or null."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise malformed(where, f"`{field}` is {_a(value)}, not text")
    return value


def got_name(value: Any, field: str, where: str) -> str:
    """A name that must be there: non-empty text (a tool call's name, a block's type)."""
    if not isinstance(value, str) or not value:
        raise malformed(where, f"`{field}` is {_a(value) if value != '' else 'empty'}, not a name")
    return value


def got_count(value: Any, field: str, where: str) -> int:
    """A token count or an index: a whole number, not negative; 0 when absent or null."""
    if value is None:
        return 0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < 0
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise malformed(where, f"`{field}` is {value!r}, not a count")
    return int(value)


def got_arguments(text: str, field: str, where: str) -> str:
    """A tool call's arguments as JSON text, which must hold an object ("" stands for none)."""
    if not text:
        return text
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise malformed(where, f"`{field}` is not JSON: {text[:80]!r}") from None
    if not isinstance(parsed, dict):
        raise malformed(where, f"`{field}` is {_a(parsed)}, not a JSON object")
    return text
