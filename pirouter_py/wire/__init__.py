"""Wire formats: one module per protocol, each decoding and encoding both directions.

The helpers here are what every inbound decoder checks first.
"""

from __future__ import annotations

from typing import Any

import orjson

from pirouter_py.errors import RequestError
from pirouter_py.types import ContentPart, Message, OtherPart, is_billing_line

# Anthropic's reasoning blocks: signed by the provider that wrote them, meaningless to others.
REASONING_PARTS = frozenset(("thinking", "redacted_thinking"))


def obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


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


def foreign(part: ContentPart) -> bool:
    """A part only an Anthropic upstream takes: a thinking block, or Claude Code's billing line.
    Toward other protocols it is left out (the billing line defeats their prefix caches)."""
    return is_billing_line(part) or (isinstance(part, OtherPart) and part.kind in REASONING_PARTS)


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
