"""Neutral, protocol-free values that every wire format decodes into and encodes from.

A `ChatRequest` keeps everything a client sent that a target may need: messages with text and image
parts, tool definitions, assistant tool calls and tool results with their ids, sampling parameters,
and (in `params`) every other field of the inbound body so OpenAI-type upstreams receive it
unchanged. All values are frozen; the router and the cascade never mutate a request.

`frozen` makes the values of the request path: frozen to the type checker (mypy --strict refuses
any assignment to a field), plain slotted dataclasses at run time. A frozen dataclass's `__init__`
sets each field through `object.__setattr__`: a `RequestRecord` took 3.6 µs to make against 0.8,
and the ~80 fields made per request cost ~15 µs of the daemon's CPU per request (same-run A/B at
concurrency 32: 332 and 336 against 317 and 320 µs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, dataclass_transform

T = TypeVar("T")
FROZEN: list[type] = []  # every class made by `frozen` (a test has mypy check each one)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T]) -> type[T]:
    """A frozen dataclass to the type checker, a plain slotted one at run time (see above);
    hashable like a frozen one, from its fields."""
    made = dataclass(slots=True, unsafe_hash=True)(cls)
    FROZEN.append(made)
    return made


Role = Literal["system", "user", "assistant", "tool"]
Protocol = Literal["openai", "anthropic", "ollama", "responses"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")


@frozen
class TextPart:
    """A run of text inside a message."""

    text: str
    extra: Mapping[str, Any] | None = None  # e.g. Anthropic cache_control, passed through


@frozen
class ImagePart:
    """An image: a `data:` URL (base64) or an http(s) URL."""

    url: str
    detail: str | None = None

    @property
    def media_type(self) -> str | None:
        """The MIME type of a data URL, else None."""
        if self.url.startswith("data:"):
            head = self.url[5:].split(",", 1)[0]
            return head.split(";", 1)[0] or None
        return None


@frozen
class OtherPart:
    """A content part pirouter does not interpret (audio, files, ...), kept as it came."""

    kind: str
    data: Mapping[str, Any]


ContentPart = TextPart | ImagePart | OtherPart


@frozen
class ToolCall:
    """A call the model asked for; `arguments` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str


@frozen
class ToolSpec:
    """A function the client offers the model."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)


@frozen
class Message:
    """One turn. `tool_calls` only on assistant turns; `tool_call_id` only on tool results."""

    role: Role
    content: tuple[ContentPart, ...] = ()
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The text parts joined without a separator (images contribute nothing)."""
        parts = self.content
        if len(parts) == 1 and isinstance(parts[0], TextPart):
            return parts[0].text
        return "".join(p.text for p in parts if isinstance(p, TextPart))

    @property
    def has_images(self) -> bool:
        return any(isinstance(p, ImagePart) for p in self.content)


# Claude Code's first system block is a billing line that changes on every request: it is left
# out of session hashes and not sent to non-Anthropic upstreams (it defeats their prefix caches).
BILLING_LINE = "x-anthropic-billing-header:"


def is_billing_line(part: ContentPart) -> bool:
    return isinstance(part, TextPart) and part.text.startswith(BILLING_LINE)


# Blocks only Anthropic reads: reasoning (signed by the provider that wrote it) and its server
# tools' calls and results (web search, code execution...), which no other model ran.
ANTHROPIC_ONLY_PARTS = frozenset(
    ("thinking", "redacted_thinking", "server_tool_use", "mcp_tool_use", "mcp_tool_result")
)


def anthropic_only(part: ContentPart) -> bool:
    return isinstance(part, OtherPart) and (
        part.kind in ANTHROPIC_ONLY_PARTS or part.kind.endswith("_tool_result")
    )


def text_message(role: Role, text: str) -> Message:
    """A message holding one text part."""
    return Message(role=role, content=(TextPart(text),))


@frozen
class ChatRequest:
    """A chat request in neutral form, whatever protocol it arrived in."""

    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    stream: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    tool_choice: Any = None  # OpenAI form: "auto" | "none" | "required" | {"type": "function", ...}
    params: Mapping[str, Any] = field(default_factory=dict)  # every other inbound field
    protocol: Protocol = "openai"  # the format the client spoke
    raw: Mapping[str, Any] | None = None  # the decoded inbound body, for same-format pass-through
    include_usage: bool = False  # a streaming client asked for the usage chunk
    # Provider headers the client sent (anthropic-beta, anthropic-version), for upstreams that
    # speak the same protocol
    headers: Mapping[str, str] = field(default_factory=dict)


@frozen
class Usage:
    """Token counts reported by a provider (0 where it reported none)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@frozen
class ChatResponse:
    """A complete answer from one model."""

    model: str  # the id the provider reported
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    raw: Mapping[str, Any] | None = None  # the provider's body, for same-format pass-through
    protocol: Protocol = "openai"  # the format of `raw`


@frozen
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece carries id and name."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@frozen
class StreamEvent:
    """One increment of a streamed answer; any field may be empty."""

    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    raw: Mapping[str, Any] | None = None  # the provider's chunk, for same-format pass-through
    protocol: Protocol = "openai"  # the format of `raw`


@frozen
class Pin:
    """The model that served this conversation's previous turn, and how long ago."""

    alias: str
    age_s: float
    hard: bool  # within the hard window: always the same model, unless it must escape


@frozen
class TextRequest:
    """A raw text completion (fill-in-the-middle with `suffix`), never rewritten into chat."""

    model: str
    prompt: str
    suffix: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    stop: tuple[str, ...] = ()
    protocol: Protocol = "openai"  # openai: /v1/completions; ollama: /api/generate
    raw: Mapping[str, Any] | None = None  # the decoded inbound body, for same-format pass-through


@frozen
class TextAnswer:
    """A piece of a text completion (a whole one, or one streamed increment)."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


@frozen
class EmbedRequest:
    """Texts to embed."""

    model: str
    inputs: tuple[str, ...]
    protocol: Protocol = "openai"  # openai: /v1/embeddings; ollama: /api/embed(dings)
    raw: Mapping[str, Any] | None = None


@frozen
class Embeddings:
    """One vector per input, in order, and the input tokens they cost."""

    vectors: tuple[tuple[float, ...], ...]
    input_tokens: int = 0
