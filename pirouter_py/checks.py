"""Answer checks: does a complete answer earn an escalation, and which check says so.

The triggers of v0.1 (a marker, an empty answer, a truncated one, a short one) and the checks
added here, each off unless `[cascade]` or a rule's `escalation` turns it on:
- `require_match` / `forbid_match`: a regex the answer must / must not match (search, any line);
- `json`: the answer parses as JSON (a fenced code block counts), and matches the request's
  `response_format` JSON schema when it gave one; on by itself for a request that asks for
  structured output (in any protocol's words: they all arrive as `response_format`);
- `tool_calls_valid`: every tool call names an offered tool, and its arguments parse as a JSON
  object that validates against that tool's schema (jsonschema);
- `refusal`: the answer opens by declining ("I'm sorry, but I can't...");
- `repetition`: the answer ends in a degenerate loop (its last 120 words are mostly the same few).
The short-answer trigger does not fire on an answer complete by its shape: a letter, a number,
yes or no, ending normally (what a multiple-choice or arithmetic question asks for).
The most specific label wins: marker, empty, truncated, tool call, JSON, forbidden, required,
refusal, repetition, then short. Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pirouter_py import record as rec
from pirouter_py.config import CascadeConfig
from pirouter_py.types import ToolCall, ToolSpec

COMPLETE_SHORT = re.compile(
    r"^\s*(?:\(?[A-Za-z]\)?|-?\d+(?:[.,]\d+)?|yes|no|true|false)\s*\.?\s*$",
    re.IGNORECASE,
)
REFUSAL = re.compile(
    r"^\W{0,3}(?:I'?m sorry|I am sorry|sorry, (?:but )?I|I can(?:no|')t (?:help|assist|do|"
    r"provide|comply)|I cannot (?:help|assist|do|provide|comply)|I won'?t|I'?m (?:not able|unable)|"
    r"I am (?:not able|unable)|As an AI\b)",
    re.IGNORECASE,
)
REFUSAL_MAX_CHARS = 600  # a long answer that starts with an apology is an answer
REPEAT_WINDOW = 120  # words at the end of the answer looked at for a loop
REPEAT_MIN_WORDS = 60
REPEAT_MAX_UNIQUE = 0.15  # at most this share of distinct words in the window: a loop
FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def judge(
    cfg: CascadeConfig,
    text: str,
    tool_calls: bool,
    finish_reason: str | None,
    output_tokens: int,
    *,
    calls: Iterable[ToolCall] = (),
    tools: Iterable[ToolSpec] = (),
    response_format: Any = None,
) -> str | None:
    """The escalation outcome a complete answer earns, or None if it is good to return."""
    if cfg.on_marker and cfg.on_marker in text:
        return rec.ESCALATED_MARKER
    if cfg.on_empty and not text and not tool_calls:
        return rec.ESCALATED_EMPTY
    if cfg.on_truncated and finish_reason == "length":
        return rec.ESCALATED_TRUNCATED
    if cfg.tool_calls_valid and tool_calls and not calls_valid(calls, tools):
        return rec.ESCALATED_TOOL_CALL
    json_asked = cfg.json_check or structured(response_format)
    if json_asked and not tool_calls and not json_valid(text, response_format):
        return rec.ESCALATED_JSON
    if cfg.forbid_match is not None and re.search(cfg.forbid_match, text, re.MULTILINE):
        return rec.ESCALATED_FORBIDDEN
    required = cfg.require_match
    if required is not None and not tool_calls and not re.search(required, text, re.MULTILINE):
        return rec.ESCALATED_MATCH
    if cfg.refusal and not tool_calls and refused(text):
        return rec.ESCALATED_REFUSAL
    if cfg.repetition and repeating(text):
        return rec.ESCALATED_REPETITION
    short = output_tokens < cfg.min_output_tokens or (
        not tool_calls and len(text) < cfg.min_output_chars
    )
    complete = not tool_calls and finish_reason in ("stop", None) and COMPLETE_SHORT.match(text)
    if cfg.on_short_response and short and not complete:
        return rec.ESCALATED_SHORT
    return None


def refused(text: str) -> bool:
    return len(text) <= REFUSAL_MAX_CHARS and REFUSAL.match(text) is not None


def repeating(text: str) -> bool:
    words = text.split()[-REPEAT_WINDOW:]
    return len(words) >= REPEAT_MIN_WORDS and len(set(words)) / len(words) <= REPEAT_MAX_UNIQUE


def _schema_errors(instance: Any, schema: Mapping[str, Any]) -> bool:
    """Does `instance` fail `schema`? (jsonschema, loaded only when a check needs it.)"""
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema)
        return not cls(schema).is_valid(instance)
    except jsonschema.SchemaError:
        return False  # the client's schema is broken: nothing to hold the answer to


def structured(response_format: Any) -> bool:
    """Does the request ask for a JSON answer (`json_schema` or `json_object`)?"""
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_schema",
        "json_object",
    )


def json_valid(text: str, response_format: Any = None) -> bool:
    fenced = FENCE.match(text)
    try:
        value = orjson.loads(fenced.group(1) if fenced else text)
    except orjson.JSONDecodeError:
        return False
    spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return not (isinstance(schema, dict) and _schema_errors(value, schema))


def calls_valid(calls: Iterable[ToolCall], tools: Iterable[ToolSpec]) -> bool:
    offered = {t.name: t for t in tools}
    for call in calls:
        tool = offered.get(call.name)
        if tool is None:
            return False
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            return False
        if not isinstance(arguments, dict):
            return False
        if tool.parameters and _schema_errors(arguments, tool.parameters):
            return False
    return True
