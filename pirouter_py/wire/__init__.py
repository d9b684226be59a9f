"""Wire formats: one module per protocol, each decoding and encoding both directions.

The helpers here are what every inbound decoder checks first.
"""

from __future__ import annotations

from typing import Any

import orjson

from pirouter_py.errors import RequestError


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
