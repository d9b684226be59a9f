"""What one request leaves behind: its attempts and outcome, handed to the ledger.

The cascade fills one `Attempt` per model it tries (a streamed attempt is completed when its
stream ends, so attempts are mutable until the request is done); the server wraps them in a
frozen `RequestRecord` and gives it to its recorder (the SQLite ledger) without waiting.
The JSON of an attempt keeps v0.1's field order and outcome kinds (reference §4.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pirouter_py.types import frozen

# Outcomes of an attempt. v0.1 had the first four; the rest are additions.
OK = "ok"
ESCALATED_HTTP_ERROR = "escalated_http_error"
ESCALATED_SHORT = "escalated_short_response"
ESCALATED_MARKER = "escalated_marker"
ESCALATED_TRUNCATED = "escalated_truncated"
ESCALATED_EMPTY = "escalated_empty"
# answer checks (checks.py)
ESCALATED_MATCH = "escalated_match"  # require_match did not match
ESCALATED_FORBIDDEN = "escalated_forbidden"  # forbid_match matched
ESCALATED_JSON = "escalated_json"
ESCALATED_TOOL_CALL = "escalated_tool_call"
ESCALATED_REFUSAL = "escalated_refusal"
ESCALATED_REPETITION = "escalated_repetition"
FATAL_ERROR = "fatal_error"  # a non-retryable failure: the cascade stopped here
STREAM_ERROR = "stream_error"  # the upstream failed after the client had received bytes
CLIENT_CANCELLED = "client_cancelled"  # the client went away while this attempt ran
ANSWER_OUTCOMES = frozenset(
    (
        OK,
        ESCALATED_SHORT,
        ESCALATED_MARKER,
        ESCALATED_TRUNCATED,
        ESCALATED_EMPTY,
        ESCALATED_MATCH,
        ESCALATED_FORBIDDEN,
        ESCALATED_JSON,
        ESCALATED_TOOL_CALL,
        ESCALATED_REFUSAL,
        ESCALATED_REPETITION,
    )
)

# Request statuses.
STATUS_OK = "ok"
STATUS_EXHAUSTED = "exhausted"
STATUS_UPSTREAM_ERROR = "upstream_error"
STATUS_ROUTING_ERROR = "routing_error"
STATUS_CLIENT_CANCELLED = "client_cancelled"
STATUS_INTERNAL_ERROR = "internal_error"  # a bug in pirouter ended the request
STATUS_SHUTDOWN = "shutdown"  # still running when the drain's shutdown_timeout_secs ran out


@dataclass(slots=True)
class Attempt:
    """One model tried for one request."""

    alias: str
    provider: str
    model_id: str
    outcome: str = "pending"
    status: int | None = None  # the upstream's HTTP status, when it answered with an error
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None  # time to the first streamed event
    returned: bool = False  # this attempt's answer went to the client
    note: str | None = None  # what the request lost on its way to this provider, if anything

    def to_json(self) -> dict[str, Any]:
        outcome: dict[str, Any] = {"kind": self.outcome}
        if self.outcome in ANSWER_OUTCOMES:
            outcome |= {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        if self.error is not None:
            outcome["message"] = self.error
        if self.status is not None:
            outcome["status"] = self.status
        out = {
            "alias": self.alias,
            "provider": self.provider,
            "model_id": self.model_id,
            "latency_ms": round(self.latency_ms),
            "outcome": outcome,
        }
        if self.ttft_ms is not None:
            out["ttft_ms"] = round(self.ttft_ms)
        if self.returned and self.outcome != OK:
            out["returned"] = True
        if self.note is not None:
            out["note"] = self.note
        return out


@frozen
class RequestRecord:
    """Everything the ledger keeps about one request (never keys; prompt text only with
    [ledger] store_prompts)."""

    request_id: str
    ts: float  # unix seconds when the request arrived
    protocol: str
    requested_model: str
    rule: str | None
    difficulty: str | None
    primary: str | None
    final: str | None
    status: str
    http_status: int
    streamed: bool
    latency_ms: float
    overhead_ms: float
    ttft_ms: float | None = None
    user_agent: str = ""
    attempts: tuple[Attempt, ...] = field(default_factory=tuple)
    prompt: str | None = None  # the request's messages as JSON, only with [ledger] store_prompts
    answer: str | None = None  # the answer text, likewise
    session: str | None = None  # the conversation, when session affinity is on
    pin: str | None = None  # what affinity did: hard, soft, soft-lost, escaped:<why>
    estimated_tokens: int = 0  # the router's input estimate (not stored; for rate limits)
    # A Responses answer the client asked to keep, with [ledger] store_prompts on:
    # (response id, a hash of the client key, the conversation's items as JSON)
    stored_response: tuple[str, str, str] | None = None
    features: str | None = None  # hashed feature ids (routing/learned.py), [learning] keep_features
    client: str | None = None  # the name of the client key it came with (server/access.py)
    # the headers routing read (routing/decide.kept_headers) as a JSON object, for `replay`
    route_headers: str | None = None
    # a hash of the latest user instruction in its conversation (ledger/labels.instruction_key):
    # the same again soon after is a regenerate, a label for `learn`
    instruction_key: str | None = None

    @property
    def input_tokens(self) -> int:
        return sum(a.input_tokens for a in self.attempts)

    @property
    def output_tokens(self) -> int:
        return sum(a.output_tokens for a in self.attempts)


def left_out(count: int) -> str:
    """The marker at the end of a kept text that was cut: how much of it was not kept."""
    return f"\n[pirouter: {count:,} more characters not kept ([ledger] max_stored_chars)]"


def capped(text: str, most: int) -> str:
    """`text`, or its first `most` characters and the marker."""
    return text if len(text) <= most else text[:most] + left_out(len(text) - most)


class Kept:
    """A streamed answer's text as it is kept for the ledger (store_prompts) or a shadow check's
    judge: at most `most` characters held; the rest only counted, so a huge stream does not grow
    the daemon."""

    __slots__ = ("left", "most", "parts", "size")

    def __init__(self, most: int) -> None:
        self.most = most
        self.parts: list[str] = []
        self.size = 0
        self.left = 0  # characters past `most`, not kept

    def add(self, text: str) -> None:
        room = self.most - self.size
        if len(text) <= room:
            self.parts.append(text)
            self.size += len(text)
            return
        if room > 0:
            self.parts.append(text[:room])
            self.size = self.most
        self.left += len(text) - max(room, 0)

    def text(self) -> str:
        kept = "".join(self.parts)
        return kept + left_out(self.left) if self.left else kept
