"""Text completions and embeddings, in OpenAI's and Ollama's shapes, both directions.

Completions (`/v1/completions`, Ollama's `/api/generate`) are raw prompts with an optional
`suffix` (fill-in-the-middle, what editor autocomplete sends): they go to models that declare
`supports_fim` and are never rewritten into chat. Embeddings (`/v1/embeddings`, `/api/embed`,
the older `/api/embeddings`) go to models of `kind = "embedding"`. Upstreams are always asked for
float vectors; an OpenAI client that asks for base64 gets them packed as float32, as OpenAI does.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Mapping
from typing import Any

import orjson

from pirouter_py.errors import RequestError, UpstreamTransportError
from pirouter_py.types import Embeddings, EmbedRequest, TextAnswer, TextRequest, Usage
from pirouter_py.wire import (
    got_count,
    got_object,
    got_text,
    malformed,
    obj,
    positive,
    request_object,
)

OLLAMA_DONE = {"stop": "stop", "length": "length"}
PIECE_TAIL = b',"index":0,"logprobs":null,"finish_reason":null}]}\n\n'  # CompletionChunks
LINE_TAIL = b',"done":false}\n'  # GenerateLines


def _bad(message: str, param: str | None = None) -> RequestError:
    return RequestError(message, param=param)


def _stop(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    return ()


# ---------------------------------------------------------------------------------------------
# Inbound requests


def decode_completion(body: bytes) -> TextRequest:
    """OpenAI `/v1/completions`: one prompt (a string, or a list of one string)."""
    data, model = request_object(body)
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("`prompt` must be a string (one prompt per request)", "prompt")
    suffix = data.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise _bad("`suffix` must be a string", "suffix")
    temperature = data.get("temperature")
    return TextRequest(
        model=model,
        prompt=prompt,
        suffix=suffix,
        max_tokens=positive(data, "max_tokens"),
        temperature=float(temperature) if isinstance(temperature, int | float) else None,
        stream=data.get("stream") is True,
        stop=_stop(data.get("stop")),
        protocol="openai",
        raw=data,
    )


def decode_generate(body: bytes) -> TextRequest:
    """Ollama `/api/generate`: streamed unless `"stream": false`; options carry the sampling."""
    data, model = request_object(body)
    prompt = data.get("prompt", "")
    if not isinstance(prompt, str):
        raise _bad("`prompt` must be a string", "prompt")
    suffix = data.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise _bad("`suffix` must be a string", "suffix")
    options = obj(data.get("options"))
    temperature = options.get("temperature")
    return TextRequest(
        model=model,
        prompt=prompt,
        suffix=suffix,
        max_tokens=positive(options, "num_predict", "options.num_predict"),
        temperature=float(temperature) if isinstance(temperature, int | float) else None,
        stream=data.get("stream") is not False,
        stop=_stop(options.get("stop")),
        protocol="ollama",
        raw=data,
    )


def _inputs(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise _bad(f"`{name}` must be a string or a non-empty array of strings", name)


def decode_embeddings(body: bytes) -> EmbedRequest:
    """OpenAI `/v1/embeddings`."""
    data, model = request_object(body)
    return EmbedRequest(model, _inputs(data.get("input"), "input"), "openai", data)


def decode_embed(body: bytes) -> EmbedRequest:
    """Ollama `/api/embed` (`input`) and the older `/api/embeddings` (`prompt`)."""
    data, model = request_object(body)
    key = "input" if "input" in data else "prompt"
    return EmbedRequest(model, _inputs(data.get(key), key), "ollama", data)


# ---------------------------------------------------------------------------------------------
# Upstream requests and answers


def completion_body(request: TextRequest, model_id: str, *, stream: bool) -> dict[str, Any]:
    """For an OpenAI-type upstream's `/v1/completions`."""
    if request.protocol == "openai" and request.raw is not None:
        body = {**request.raw, "model": model_id}
    else:
        body = {"model": model_id, "prompt": request.prompt}
        if request.suffix is not None:
            body["suffix"] = request.suffix
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop"] = list(request.stop)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


def generate_body(request: TextRequest, model_id: str, *, stream: bool) -> dict[str, Any]:
    """For an Ollama upstream's `/api/generate`."""
    if request.protocol == "ollama" and request.raw is not None:
        return {**request.raw, "model": model_id, "stream": stream}
    body: dict[str, Any] = {"model": model_id, "prompt": request.prompt, "stream": stream}
    if request.suffix is not None:
        body["suffix"] = request.suffix
    options: dict[str, Any] = {}
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.stop:
        options["stop"] = list(request.stop)
    if options:
        body["options"] = options
    return body


def completion_answer(data: Any, provider: str) -> TextAnswer:
    """An OpenAI completion body or stream chunk (each field it reads checked)."""
    # Most stream chunks are a piece of text: one choice, no finish, no usage (the checks below,
    # for that shape, in one pass)
    choices = data.get("choices") if isinstance(data, dict) else None
    if type(choices) is list and len(choices) == 1 and data.get("usage") is None:
        first = choices[0]
        if type(first) is dict and first.get("finish_reason") is None:
            text = first.get("text")
            if type(text) is str:
                return TextAnswer(text)
    if not isinstance(choices, list):
        raise UpstreamTransportError(f"{provider} returned no choices", retryable=True)
    first = got_object(choices[0], "choices[0]", provider) if choices else {}
    text = got_text(first.get("text"), "choices[0].text", provider)
    finish = got_text(first.get("finish_reason"), "choices[0].finish_reason", provider)
    usage = data.get("usage")
    counted = None
    if usage is not None:
        usage = got_object(usage, "usage", provider)
        counted = Usage(
            got_count(usage.get("prompt_tokens"), "usage.prompt_tokens", provider),
            got_count(usage.get("completion_tokens"), "usage.completion_tokens", provider),
        )
    return TextAnswer(text, finish or None, counted)


def generate_answer(data: Any, provider: str) -> TextAnswer:
    """An Ollama generate body or stream line (each field it reads checked)."""
    if not isinstance(data, dict) or not isinstance(data.get("response", ""), str):
        raise UpstreamTransportError(f"{provider} returned no response", retryable=True)
    done = data.get("done")
    if done is not None and not isinstance(done, bool):
        raise malformed(provider, "`done` is not true or false")
    if not done:
        return TextAnswer(data.get("response", ""))
    usage = Usage(
        got_count(data.get("prompt_eval_count"), "prompt_eval_count", provider),
        got_count(data.get("eval_count"), "eval_count", provider),
    )
    reason = got_text(data.get("done_reason"), "done_reason", provider)
    return TextAnswer(data.get("response", ""), OLLAMA_DONE.get(reason, "stop"), usage)


def embeddings_body(request: EmbedRequest, model_id: str) -> dict[str, Any]:
    """For an OpenAI-type upstream: the client's fields (dimensions...), float vectors."""
    extra = request.raw if request.protocol == "openai" and request.raw is not None else {}
    return {**extra, "model": model_id, "input": list(request.inputs), "encoding_format": "float"}


def embed_body(request: EmbedRequest, model_id: str) -> dict[str, Any]:
    """For an Ollama upstream's `/api/embed`."""
    body: dict[str, Any] = {"model": model_id, "input": list(request.inputs)}
    if request.protocol == "ollama" and request.raw is not None:
        for key in ("truncate", "options", "keep_alive", "dimensions"):
            if key in request.raw:
                body[key] = request.raw[key]
    return body


def _vector(value: Any, provider: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(isinstance(x, int | float) for x in value):
        raise UpstreamTransportError(f"{provider} returned a malformed vector", retryable=True)
    return tuple(float(x) for x in value)


def embeddings_result(data: Any, provider: str) -> Embeddings:
    """OpenAI's list of embedding objects."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise UpstreamTransportError(f"{provider} returned no embeddings", retryable=True)
    indexed = [
        (
            got_count(
                got_object(item, f"data[{j}]", provider).get("index"), f"data[{j}].index", provider
            ),
            item,
        )
        for j, item in enumerate(items)
    ]
    vectors = tuple(
        _vector(item.get("embedding"), provider)
        for _, item in sorted(indexed, key=lambda pair: pair[0])
    )
    usage = got_object(data.get("usage"), "usage", provider)
    return Embeddings(
        vectors, got_count(usage.get("prompt_tokens"), "usage.prompt_tokens", provider)
    )


def embed_result(data: Any, provider: str) -> Embeddings:
    """Ollama's `/api/embed` answer."""
    vectors = data.get("embeddings") if isinstance(data, dict) else None
    if not isinstance(vectors, list):
        raise UpstreamTransportError(f"{provider} returned no embeddings", retryable=True)
    tokens = got_count(data.get("prompt_eval_count"), "prompt_eval_count", provider)
    return Embeddings(tuple(_vector(v, provider) for v in vectors), tokens)


# ---------------------------------------------------------------------------------------------
# Answers to the client


def _openai_usage(usage: Usage | None) -> dict[str, int]:
    u = usage or Usage()
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def _completion(answer: TextAnswer, alias: str, request_id: str, created: int) -> dict[str, Any]:
    choice = {
        "text": answer.text,
        "index": 0,
        "logprobs": None,
        "finish_reason": answer.finish_reason,
    }
    return {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": created,
        "model": alias,
        "choices": [choice],
    }


def encode_completion(answer: TextAnswer, *, alias: str, request_id: str, created: int) -> bytes:
    body = _completion(answer, alias, request_id, created)
    body["choices"][0]["finish_reason"] = answer.finish_reason or "stop"
    return orjson.dumps(body | {"usage": _openai_usage(answer.usage)})


def completion_chunk(answer: TextAnswer, *, alias: str, request_id: str, created: int) -> bytes:
    return b"data: " + orjson.dumps(_completion(answer, alias, request_id, created)) + b"\n\n"


def _ollama_time(now: int | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def encode_generate(answer: TextAnswer, *, alias: str, done: bool = True) -> bytes:
    """One Ollama generate object: the whole answer, or a streamed line (`done` on the last)."""
    body: dict[str, Any] = {
        "model": alias,
        "created_at": _ollama_time(),
        "response": answer.text,
        "done": done,
    }
    if done:
        u = answer.usage or Usage()
        body |= {
            "done_reason": answer.finish_reason or "stop",
            "prompt_eval_count": u.input_tokens,
            "eval_count": u.output_tokens,
        }
    return orjson.dumps(body)


class CompletionChunks:
    """A streamed completion to an OpenAI client: each piece as `completion_chunk` writes it,
    made from a template built once per stream (a piece of text is its JSON string between the
    template's halves; orjson writes a dict compact, in its keys' order), and `[DONE]` at the end.
    A piece with nothing to show encodes to nothing (b"")."""

    __slots__ = ("alias", "created", "head", "request_id")

    def __init__(self, alias: str, request_id: str, created: int) -> None:
        self.alias, self.request_id, self.created = alias, request_id, created
        self.head = b"".join(
            (
                b'data: {"id":',
                orjson.dumps(f"cmpl-{request_id}"),
                b',"object":"text_completion","created":',
                orjson.dumps(created),
                b',"model":',
                orjson.dumps(alias),
                b',"choices":[{"text":',
            )
        )

    def encode(self, piece: TextAnswer) -> bytes:
        if piece.finish_reason is None:
            return self.head + orjson.dumps(piece.text) + PIECE_TAIL if piece.text else b""
        if not (piece.text or piece.finish_reason):
            return b""
        return completion_chunk(
            piece, alias=self.alias, request_id=self.request_id, created=self.created
        )

    @staticmethod
    def end(last: TextAnswer) -> bytes:
        return b"data: [DONE]\n\n"


class GenerateLines:
    """A streamed completion to an Ollama client: each piece of text a line as `encode_generate`
    writes it (`"done": false`), made from a template rebuilt once a second (its `created_at`),
    and a last line with the finish and the counts."""

    __slots__ = ("alias", "head", "second")

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.second = -1
        self.head = b""

    def encode(self, piece: TextAnswer) -> bytes:
        if not piece.text:
            return b""
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.head = b"".join(
                (
                    b'{"model":',
                    orjson.dumps(self.alias),
                    b',"created_at":',
                    orjson.dumps(_ollama_time(now)),
                    b',"response":',
                )
            )
        return self.head + orjson.dumps(piece.text) + LINE_TAIL

    def end(self, last: TextAnswer) -> bytes:
        return encode_generate(last, alias=self.alias, done=True) + b"\n"


def encode_embeddings(result: Embeddings, *, alias: str, raw: Mapping[str, Any] | None) -> bytes:
    """OpenAI's list of embedding objects, as floats or, when asked, base64 float32."""
    packed = raw is not None and raw.get("encoding_format") == "base64"

    def vector(v: tuple[float, ...]) -> Any:
        if not packed:
            return list(v)
        return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()

    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector(v)}
                for i, v in enumerate(result.vectors)
            ],
            "model": alias,
            "usage": {"prompt_tokens": result.input_tokens, "total_tokens": result.input_tokens},
        }
    )


def encode_embed(result: Embeddings, *, alias: str, legacy: bool) -> bytes:
    """Ollama's `/api/embed` answer, or `/api/embeddings`' single `embedding`."""
    if legacy:
        return orjson.dumps({"embedding": list(result.vectors[0]) if result.vectors else []})
    return orjson.dumps(
        {
            "model": alias,
            "embeddings": [list(v) for v in result.vectors],
            "prompt_eval_count": result.input_tokens,
        }
    )
