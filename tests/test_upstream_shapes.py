"""Text completions and embeddings as upstreams answer them, of the right JSON but the wrong
types: each is a malformed answer (the next model is asked), never a text made up of it."""

from __future__ import annotations

from typing import Any

import pytest

from pirouter_py.errors import UpstreamTransportError
from pirouter_py.wire import textgen

COMPLETION = {"choices": [{"text": "hi", "finish_reason": "stop"}]}
GENERATE = {"response": "hi", "done": True, "done_reason": "stop", "eval_count": 1}
EMBEDDINGS = {"data": [{"index": 0, "embedding": [0.5]}], "usage": {"prompt_tokens": 1}}
CASES: list[tuple[str, Any, dict[str, Any]]] = [
    ("completion-text-number", textgen.completion_answer, {"choices": [{"text": 5}]}),
    ("completion-choice-text", textgen.completion_answer, {"choices": ["hi"]}),
    ("completion-finish-number", textgen.completion_answer, {"choices": [{"finish_reason": 1}]}),
    (
        "completion-tokens-as-words",
        textgen.completion_answer,
        {**COMPLETION, "usage": {"prompt_tokens": "many"}},
    ),
    ("completion-usage-array", textgen.completion_answer, {**COMPLETION, "usage": [1]}),
    ("generate-done-text", textgen.generate_answer, {**GENERATE, "done": "yes"}),
    ("generate-tokens-as-words", textgen.generate_answer, {**GENERATE, "eval_count": "many"}),
    ("generate-reason-number", textgen.generate_answer, {**GENERATE, "done_reason": 2}),
    (
        "embeddings-index-text",
        textgen.embeddings_result,
        {"data": [{"index": "a", "embedding": [0.5]}, {"index": 1, "embedding": [0.5]}]},
    ),
    (
        "embeddings-tokens-as-words",
        textgen.embeddings_result,
        {**EMBEDDINGS, "usage": {"prompt_tokens": "x"}},
    ),
    (
        "embed-tokens-as-words",
        textgen.embed_result,
        {"embeddings": [[0.5]], "prompt_eval_count": "x"},
    ),
]


@pytest.mark.parametrize(("decode", "data"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_wrong_typed_answer_is_malformed(decode: Any, data: dict[str, Any]) -> None:
    with pytest.raises(UpstreamTransportError) as caught:
        decode(data, "p (m)")
    assert caught.value.retryable and "cannot understand" in caught.value.message


@pytest.mark.parametrize(
    ("decode", "data"),
    [
        (textgen.completion_answer, COMPLETION),
        (textgen.generate_answer, GENERATE),
        (textgen.generate_answer, {"response": "h", "done": False}),
        (textgen.embeddings_result, EMBEDDINGS),
        (textgen.embed_result, {"embeddings": [[0.5]], "prompt_eval_count": 1}),
    ],
)
def test_a_well_typed_answer_is_read(decode: Any, data: dict[str, Any]) -> None:
    decode(data, "p (m)")
