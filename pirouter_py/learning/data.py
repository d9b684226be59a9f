"""Labelled examples: the JSON-lines format `eval` reads and `ledger labels` writes.

One object per line:

    {"prompt": "..."}  or  {"messages": [{"role": "user", "content": "..."}, ...]}
    "labels": {"<alias>": score, ...}            scores in 0..1 (1: good enough)
    "tokens": {"<alias>": {"in": n, "out": n}}   optional, for costs
    "label_sources": {"<alias>": source}         optional: where each label came from, as
                                                 `ledger labels` writes it (ledger/labels.py):
                                                 feedback, check, shadow, regenerate, answered;
                                                 `learn` weighs a label by it (learning/train.py),
                                                 a label without one as given by a person
    "model", "tools", "max_tokens", "stream", "reasoning_effort"
                                                 optional, as in an OpenAI chat body (routing
                                                 reads them; "model" defaults to "auto")
    "headers": {"<name>": "value", ...}          optional: the request headers routing reads
                                                 (User-Agent, x-pirouter-*, those rules name),
                                                 so `eval` decides as the daemon did

A ledger line without kept text carries `"features"` (hashed ids, routing/learned.py) instead: it
can train a learned router but not be re-routed by `eval`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pirouter_py.errors import ExitCode, PirouterError
from pirouter_py.ledger import labels as ledger_labels
from pirouter_py.ledger.labels import SOURCES as LABEL_SOURCES
from pirouter_py.routing import features as feats
from pirouter_py.routing import learned
from pirouter_py.types import ChatRequest
from pirouter_py.wire import codecs

GOOD = ledger_labels.GOOD  # a score at or above this is "good enough"
BODY_KEYS = ("model", "tools", "max_tokens", "stream", "reasoning_effort")  # read as a chat body's


@dataclass(slots=True)
class Example:
    labels: dict[str, float]
    ids: list[int]
    request: ChatRequest | None = None  # None: only features were kept
    tokens: dict[str, tuple[int, int]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    sources: dict[str, str] = field(default_factory=dict)  # alias: where its label came from


class DataError(PirouterError):
    """A labelled file that cannot be read: names the file, line and what to fix."""

    exit_code = ExitCode.USAGE


def _request(line: dict[str, Any]) -> ChatRequest | None:
    if "messages" in line:
        messages = line["messages"]
    elif "prompt" in line:
        if not isinstance(line["prompt"], str):
            raise ValueError('"prompt" must be a string')
        messages = [{"role": "user", "content": line["prompt"]}]
    else:
        return None
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list of chat messages')
    body = {"model": "auto", **{k: line[k] for k in BODY_KEYS if k in line}, "messages": messages}
    return codecs.BY_PROTOCOL["openai"].decode_request(orjson.dumps(body))


def _labels(line: dict[str, Any]) -> dict[str, float]:
    labels = line.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ValueError('"labels" must be an object of alias: score (0..1)')
    out = {}
    for alias, score in labels.items():
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise ValueError(f'labels["{alias}"] must be a number in 0..1, not {score!r}')
        out[alias] = float(score)
    return out


def _tokens(line: dict[str, Any]) -> dict[str, tuple[int, int]]:
    tokens = line.get("tokens") or {}
    if not isinstance(tokens, dict):
        raise ValueError('"tokens" must be an object of alias: {"in": n, "out": n}')
    out = {}
    for alias, t in tokens.items():
        if not isinstance(t, dict):
            raise ValueError(f'tokens["{alias}"] must be {{"in": n, "out": n}}')
        tin, tout = t.get("in", 0), t.get("out", 0)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (tin, tout)):
            raise ValueError(f'tokens["{alias}"] needs whole numbers "in" and "out"')
        out[alias] = (tin, tout)
    return out


def _sources(line: dict[str, Any], labels: dict[str, float]) -> dict[str, str]:
    sources = line.get("label_sources") or {}
    if not isinstance(sources, dict):
        raise ValueError('"label_sources" must be an object of alias: source')
    for alias, source in sources.items():
        if alias not in labels:
            raise ValueError(f'label_sources["{alias}"] names no label of "labels"')
        if source not in LABEL_SOURCES:
            raise ValueError(
                f'label_sources["{alias}"] must be one of {", ".join(LABEL_SOURCES)}, '
                f"not {source!r}"
            )
    return dict(sources)


def _headers(line: dict[str, Any]) -> dict[str, str]:
    headers = line.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ValueError('"headers" must be an object of name: value (strings)')
    return {str(name).lower(): value for name, value in headers.items()}


def example(line: Any) -> Example:
    """One labelled line as an Example; ValueError says what is wrong with it."""
    if not isinstance(line, dict):
        raise ValueError("each line must be a JSON object")
    labels = _labels(line)
    request = _request(line)
    headers = _headers(line)
    raw = line.get("features")
    if request is not None:  # the ids the daemon reads: the turn may come from a header
        ids = learned.request_ids(request, feats.extract(request, headers))
    elif (kept := learned.decode_ids(raw) if isinstance(raw, str) else None) is not None:
        ids = kept
    else:
        raise ValueError('a line needs "prompt" or "messages" (or "features" from the ledger)')
    return Example(labels, ids, request, _tokens(line), headers, _sources(line, labels))


def examples(lines: Iterable[Any]) -> list[Example]:
    return [example(line) for line in lines]


def read(path: Path) -> list[Example]:
    """The examples of a labelled JSON-lines file; DataError names the first bad line."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            out.append(example(orjson.loads(raw)))
        except orjson.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not JSON ({exc})") from None
        except (ValueError, PirouterError) as exc:
            message = exc.message if isinstance(exc, PirouterError) else str(exc)
            raise DataError(
                f"{path}:{number}: {message} (see README, 'Labelled prompts')"
            ) from None
    if not out:
        raise DataError(f"{path}: no labelled lines")
    return out
