"""The OpenAI Responses wire format (what Codex CLI speaks), inbound: requests, answers, streams.

Requests become neutral `ChatRequest`s, so any provider can answer them:
- `instructions` and `system`/`developer` messages -> system messages; `input` as a string or as
  items: messages (`input_text`, `output_text`, `input_image` parts), `function_call` and
  `custom_tool_call` -> assistant tool calls, `*_output` items -> tool results. `reasoning` items
  are kept only as far as a target can use them (none of the chat targets can: left out).
- Tools: `function` tools as they are. A `custom` tool (free-form input, such as Codex's
  `apply_patch` with its grammar) is offered to function-only targets as a function taking one
  string, `input`, and the call is restored as a `custom_tool_call` on the way back. The tools
  of a `namespace`, and those an `additional_tools` input item adds (Codex), are offered by
  their own names. Hosted tools (`web_search`, `tool_search`, ...) cannot run on a chat target
  and are left out.
Answers are written as a Response object, or as typed server-sent events (`response.created`,
`response.output_item.added` / `.done`, `response.output_text.delta`,
`response.function_call_arguments.delta`, `response.completed`; `response.failed` on an error),
each with its `sequence_number`. A `previous_response_id` is resolved by the server before this
module sees the request (server/responses.py).
"""

from __future__ import annotations

from typing import Any

import orjson

from pirouter_py.errors import RequestError
from pirouter_py.types import (
    ChatRequest,
    ChatResponse,
    ContentPart,
    ImagePart,
    Message,
    OtherPart,
    StreamEvent,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
)
from pirouter_py.wire import (
    Envelope,
    content_parts,
    filled,
    flag,
    new_call_id,
    obj,
    positive,
    request_object,
)

CUSTOM_INPUT = "input"  # the one argument a custom tool takes when offered as a function
CUSTOM_SCHEMA = {
    "type": "object",
    "properties": {CUSTOM_INPUT: {"type": "string", "description": "The tool's whole input."}},
    "required": [CUSTOM_INPUT],
}
HOSTED_TOOLS = frozenset(
    (
        "web_search",
        "web_search_preview",
        "file_search",
        "tool_search",
        "code_interpreter",
        "image_generation",
        "computer_use_preview",
        "local_shell",
        "mcp",
    )
)
# Compaction (Codex's remote compaction: a `compaction_trigger` input item asks for one
# `compaction` output item that stands for the conversation so far). A chat model writes a
# summary; it travels in `encrypted_content`, marked as pirouter's plain text.
COMPACT_PROMPT = (
    "Your context is about to be compacted. Write a summary of the conversation so far that lets "
    "you continue the work without it: the user's goal and constraints, decisions made, files "
    "and commands involved, what is done, what remains, and the next step. Write only the "
    "summary."
)
SUMMARY_MARK = "pirouter-summary:"
SUMMARY_INTRO = "A summary of the conversation so far, which it replaces:"
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# neutral finish reasons that leave a Response `incomplete`, and the reason it gives
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
TEXT_PARTS = frozenset(("input_text", "output_text", "text", "summary_text", "refusal"))


def _bad(message: str, param: str | None = None) -> RequestError:
    return RequestError(message, param=param)


# ---------------------------------------------------------------------------------------------
# Inbound requests


def decode_request(body: bytes) -> ChatRequest:
    data, model = request_object(body)
    stream = flag(data, "stream")
    max_tokens = positive(data, "max_output_tokens")
    messages: list[Message] = []
    instructions = data.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("`instructions` must be a string", "instructions")
    if instructions:
        messages.append(Message("system", (TextPart(instructions),)))
    raw_input = data.get("input")
    if isinstance(raw_input, str):
        messages.append(Message("user", (TextPart(raw_input),)))
    elif isinstance(raw_input, list):
        messages += _items(raw_input)
    else:
        raise _bad("`input` must be a string or an array of input items", "input")
    if not any(m.role != "system" for m in messages):
        raise _bad("`input` must hold at least one message", "input")
    compacting = isinstance(raw_input, list) and any(
        isinstance(i, dict) and i.get("type") == "compaction_trigger" for i in raw_input
    )
    added = [
        (f"input[{i}].tools", item.get("tools"))
        for i, item in enumerate(raw_input if isinstance(raw_input, list) else ())
        if isinstance(item, dict) and item.get("type") == "additional_tools"
    ]
    if compacting:  # no tools are offered, but the body must still be well formed
        for where, given in [("tools", data.get("tools")), *added]:
            _tool_kinds(given, where)
        tools: tuple[ToolSpec, ...] = ()
    else:
        tools = _tools(data.get("tools")) + tuple(
            spec for where, given in added for spec in _tools(given or [], where)
        )
    params: dict[str, Any] = {}
    if isinstance(data.get("top_p"), int | float):
        params["top_p"] = data["top_p"]
    if data.get("parallel_tool_calls") is False:
        params["parallel_tool_calls"] = False
    fmt = obj(data.get("text")).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":  # structured output
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        params["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        params["response_format"] = {"type": "json_object"}
    temperature = data.get("temperature")
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        tools=tools,
        stream=bool(stream),
        temperature=float(temperature) if isinstance(temperature, int | float) else None,
        max_tokens=max_tokens,
        tool_choice=_choice(data.get("tool_choice")) if tools else None,
        params=params,
        protocol="responses",
        raw=data,
        include_usage=True,
    )


def _parts(content: Any, where: str) -> tuple[ContentPart, ...]:
    return content_parts(content, where, _part)


def _part(part: dict[str, Any], kind: str, where: str) -> ContentPart:
    if kind in TEXT_PARTS and isinstance(part.get("text"), str):
        return TextPart(part["text"])  # without `annotations`: no chat target takes them
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return ImagePart(part["image_url"], part.get("detail"))
    return OtherPart(kind, part)


def _kind(value: dict[str, Any], where: str, default: str | None = None) -> str | None:
    """An item's or a tool's `type`: a string, or `default` when absent; anything else (an object
    or an array, which no table of kinds can look up) is a 400 naming it."""
    kind = value.get("type", default)
    if kind is not None and not isinstance(kind, str):
        raise _bad(f"`{where}.type` must be a string", f"{where}.type")
    return kind


def _items(items: list[Any]) -> list[Message]:
    """Input items -> messages; consecutive calls join one assistant message, as chat has it."""
    out: list[Message] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"`{where}` must be an object", where)
        kind = _kind(item, where, "message")
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in ROLES:
                raise _bad(
                    f"`{where}.role` must be user, assistant, system or developer",
                    f"{where}.role",
                )
            out.append(Message(ROLES[role], _parts(item.get("content"), f"{where}.content")))  # type: ignore[arg-type]
        elif kind in ("function_call", "custom_tool_call"):
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise _bad(f"`{where}` needs `call_id` and `name`", where)
            if kind == "function_call":
                arguments = item.get("arguments")
                arguments = arguments if isinstance(arguments, str) else "{}"
            else:
                arguments = orjson.dumps({CUSTOM_INPUT: str(item.get("input", ""))}).decode()
            call = ToolCall(call_id, name, arguments)
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and not last.tool_call_id:
                out[-1] = Message("assistant", last.content, last.name, (*last.tool_calls, call))
            else:
                out.append(Message("assistant", (), tool_calls=(call,)))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise _bad(f"`{where}.call_id` is required", where)
            output = item.get("output")
            parts = _parts(output, f"{where}.output") if output is not None else ()
            out.append(Message("tool", parts, tool_call_id=call_id))
        elif kind == "reasoning":
            continue  # encrypted or summarised reasoning of another model: no chat target takes it
        elif kind == "additional_tools":
            continue  # tools offered from here on (Codex): read with the request's tools
        elif kind == "compaction_trigger":  # Codex: summarise the conversation so far
            out.append(Message("user", (TextPart(COMPACT_PROMPT),)))
        elif kind == "compaction":  # a summary that replaced the conversation before it
            summary = item.get("encrypted_content")
            if isinstance(summary, str) and summary.startswith(SUMMARY_MARK):
                text = summary.removeprefix(SUMMARY_MARK)
                out.append(Message("user", (TextPart(f"{SUMMARY_INTRO}\n\n{text}"),)))
            # another service's encrypted summary cannot be read: the conversation goes on
        else:
            raise _bad(
                f"`{where}` is a `{kind}` item, which pirouter cannot send to a chat model", where
            )
    return out


def _tools(tools: Any, where: str = "tools") -> tuple[ToolSpec, ...]:
    """The tools a chat target can call (custom ones as functions of one string)."""
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _bad(f"`{where}` must be an array", where)
    out: list[ToolSpec] = []
    for j, tool in enumerate(tools):
        here = f"{where}[{j}]"
        kind = _kind(tool, here) if isinstance(tool, dict) else None
        if kind in HOSTED_TOOLS:
            continue
        if kind == "namespace":  # a group of tools: each is offered by its own name
            out += _tools(tool.get("tools") or [], f"{here}.tools")
            continue
        if kind not in ("function", "custom") or not isinstance(tool.get("name"), str):
            raise _bad(f"`{here}` must be a function or custom tool with a `name`", here)
        description = tool.get("description")
        if kind == "function":
            params = tool.get("parameters")
            out.append(
                ToolSpec(tool["name"], description, params if isinstance(params, dict) else {})
            )
            continue
        fmt = tool.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "grammar":
            syntax, definition = fmt.get("syntax", ""), fmt.get("definition", "")
            grammar = f"The input must match this {syntax} grammar:\n{definition}"
            description = f"{description}\n\n{grammar}" if description else grammar
        out.append(ToolSpec(tool["name"], description, CUSTOM_SCHEMA))
    return tuple(out)


def _tool_kinds(tools: Any, where: str) -> None:
    """Every tool's `type` (in namespaces too) is a string, when the tools are not read."""
    for j, tool in enumerate(tools if isinstance(tools, list) else ()):
        if isinstance(tool, dict) and _kind(tool, f"{where}[{j}]") == "namespace":
            _tool_kinds(tool.get("tools"), f"{where}[{j}].tools")


def _choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        return {"type": "function", "function": {"name": choice.get("name")}}
    return None


# ---------------------------------------------------------------------------------------------
# Answers


def _compacting(request: ChatRequest | None) -> bool:
    """Does the request end with Codex's `compaction_trigger`?"""
    items = request.raw.get("input") if request is not None and request.raw else None
    last = items[-1] if isinstance(items, list) and items else None
    return isinstance(last, dict) and last.get("type") == "compaction_trigger"


def _compaction_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "compaction", "id": item_id, "encrypted_content": SUMMARY_MARK + text}


def _stored(request: ChatRequest | None) -> bool:
    """Did the client ask pirouter to keep this answer (for a later `previous_response_id`)?"""
    return bool(request is not None and request.raw and request.raw.get("store") is True)


def _custom(request: ChatRequest | None) -> frozenset[str]:
    """The names of the custom tools the client offered (in `tools`, in namespaces, in
    `additional_tools` items): their calls are restored as custom tool calls."""
    raw = request.raw if request is not None and request.raw else {}
    found: set[str] = set()

    def scan(tools: Any) -> None:
        for tool in tools if isinstance(tools, list) else ():
            if isinstance(tool, dict) and tool.get("type") == "custom":
                found.add(str(tool.get("name")))
            elif isinstance(tool, dict) and tool.get("type") == "namespace":
                scan(tool.get("tools"))

    scan(raw.get("tools"))
    items = raw.get("input")
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            scan(item.get("tools"))
    return frozenset(found)


def _call_item(call: ToolCall, custom: frozenset[str], status: str = "completed") -> dict[str, Any]:
    if call.name in custom:
        try:
            given = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            given = None
        text = given.get(CUSTOM_INPUT) if isinstance(given, dict) else None
        return {
            "type": "custom_tool_call",
            "id": f"ctc_{call.id}",
            "call_id": call.id,
            "name": call.name,
            "input": text if isinstance(text, str) else call.arguments,
            "status": status,
        }
    return {
        "type": "function_call",
        "id": f"fc_{call.id}",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _usage(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _response(
    rid: str,
    alias: str,
    created: int,
    output: list[dict[str, Any]],
    status: str,
    usage: Usage | None,
    finish_reason: str | None = None,
    store: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": created,
        "status": status,
        "model": alias,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "store": store,
        "usage": _usage(usage),
        "error": None,
        "incomplete_details": None,
    }
    reason = INCOMPLETE.get(finish_reason or "")
    if status == "completed" and reason is not None:
        body["status"] = "incomplete"
        body["incomplete_details"] = {"reason": reason}
    return body


def encode_response(response: ChatResponse, env: Envelope) -> bytes:
    """The Response object a Responses client gets, with pirouter's `pirouter` field."""
    custom = _custom(env.request)
    output: list[dict[str, Any]] = []
    if _compacting(env.request):
        output.append(_compaction_item(f"cmp_{env.request_id}", response.text))
    elif response.text or not response.tool_calls:
        output.append(_message_item(f"msg_{env.request_id}", response.text))
    output += [_call_item(c, custom) for c in response.tool_calls]
    body = _response(
        env.request_id,
        env.alias,
        env.created,
        output,
        "completed",
        response.usage,
        response.finish_reason,
        _stored(env.request),
    )
    body["pirouter"] = env.meta
    return orjson.dumps(body)


DELTA_HEAD = (
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":'
)


class StreamEncoder:
    """Turns StreamEvents into the typed server-sent events a Responses client reads."""

    def __init__(self, env: Envelope) -> None:
        self.alias = env.alias
        self.input_estimate = env.input_estimate
        self.chars = 0  # text sent, for an output estimate when the upstream reports none
        self.rid = env.request_id
        self.created = env.created
        self.custom = _custom(env.request)
        self.store = _stored(env.request)
        self.summary: list[str] | None = [] if _compacting(env.request) else None
        self.seq = 0
        self.started = False
        self.output: list[dict[str, Any]] = []  # finished items
        self.text: list[str] | None = None  # the open message item's text, when one is open
        self.delta_ids = b""  # the open message item's ids as its text deltas write them
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.failed = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _delta(self, text: str) -> bytes:
        """`response.output_text.delta`, the one event of every piece of text: the bytes `_event`
        would write for it (type, sequence_number, item_id, output_index, content_index, delta,
        logprobs), the item's part made once."""
        seq = self.seq
        self.seq += 1
        return b"".join(
            (
                DELTA_HEAD,
                str(seq).encode(),
                self.delta_ids,
                orjson.dumps(text),
                b',"logprobs":[]}\n\n',
            )
        )

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        body = _response(
            self.rid, self.alias, self.created, [], "in_progress", None, store=self.store
        )
        return self._event("response.created", response=body) + self._event(
            "response.in_progress", response=body
        )

    def _close_text(self) -> bytes:
        if self.text is None:
            return b""
        text, self.text = "".join(self.text), None
        index = len(self.output)
        item = _message_item(f"msg_{self.rid}_{index}", text)
        part = {"type": "output_text", "text": text, "annotations": []}
        self.output.append(item)
        ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return (
            self._event("response.output_text.done", text=text, logprobs=[], **ids)
            + self._event("response.content_part.done", part=part, **ids)
            + self._event("response.output_item.done", output_index=index, item=item)
        )

    def encode(self, event: StreamEvent) -> bytes:
        out = self._start()
        if event.usage is not None:
            self.usage = event.usage
        if event.finish_reason:
            self.finish_reason = event.finish_reason
        self.chars += len(event.text)
        if event.text and self.summary is not None:  # a compaction: one item, at the end
            self.summary.append(event.text)
        elif event.text:
            index = len(self.output)
            item_id = f"msg_{self.rid}_{index}"
            if self.text is None:
                self.text = []
                self.delta_ids = (
                    b',"item_id":'
                    + orjson.dumps(item_id)
                    + b',"output_index":'
                    + str(index).encode()
                    + b',"content_index":0,"delta":'
                )
                item = _message_item(item_id, "", "in_progress")
                part = {"type": "output_text", "text": "", "annotations": []}
                out += self._event("response.output_item.added", output_index=index, item=item)
                out += self._event(
                    "response.content_part.added",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            self.text.append(event.text)
            out += self._delta(event.text)
        for delta in event.tool_calls:
            call = self.calls.get(delta.index)
            if call is None:
                out += self._close_text()
                call = self.calls[delta.index] = [delta.id or new_call_id(), "", ""]
            if delta.name:
                call[1] += delta.name
            call[2] += delta.arguments
        return out

    def _calls(self) -> bytes:
        """Each tool call, whole: added and done (arguments are held until they are complete,
        so a custom tool's input is restored from them)."""
        out = b""
        for call_id, name, arguments in self.calls.values():
            index = len(self.output)
            item = _call_item(ToolCall(call_id, name, arguments), self.custom)
            out += self._event(
                "response.output_item.added",
                output_index=index,
                item=item | {"status": "in_progress"},
            )
            if item["type"] == "function_call":
                ids = {"item_id": item["id"], "output_index": index}
                out += self._event("response.function_call_arguments.delta", delta=arguments, **ids)
                out += self._event(
                    "response.function_call_arguments.done", arguments=arguments, **ids
                )
            out += self._event("response.output_item.done", output_index=index, item=item)
            self.output.append(item)
        self.calls = {}
        return out

    def _compaction(self) -> bytes:
        if self.summary is None:
            return b""
        index = len(self.output)
        item = _compaction_item(f"cmp_{self.rid}", "".join(self.summary))
        self.output.append(item)
        return self._event(
            "response.output_item.added", output_index=index, item=item
        ) + self._event("response.output_item.done", output_index=index, item=item)

    def end(self) -> bytes:
        if self.failed:  # response.failed was the last event
            return b""
        out = self._start() + self._close_text() + self._calls() + self._compaction()
        body = _response(
            self.rid,
            self.alias,
            self.created,
            self.output,
            "completed",
            filled(self.usage, self.input_estimate, self.chars),
            self.finish_reason,
            self.store,
        )
        kind = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, response=body)

    def error(self, message: str, kind: str = "upstream_error") -> bytes:
        """`response.failed`, closing the stream (no `end` follows on the client's side)."""
        body = _response(
            self.rid, self.alias, self.created, self.output, "failed", self.usage, store=self.store
        )
        body["error"] = {"code": kind, "message": message}
        self.failed = True
        return self._start() + self._event("response.failed", response=body)


def decode_compact(body: bytes) -> ChatRequest:
    """`POST /v1/responses/compact`: the conversation in `input`, to be summarised (whole)."""
    data, _ = request_object(body)
    given = data.get("input")
    items = [{"role": "user", "content": given}] if isinstance(given, str) else given
    if not isinstance(items, list):
        raise _bad("`input` must be a string or an array of input items", "input")
    data = {**data, "input": [*items, {"type": "compaction_trigger"}], "stream": False}
    return decode_request(orjson.dumps(data))


def encode_compact(response: ChatResponse, env: Envelope) -> bytes:
    """The compacted conversation: one `compaction` item that stands for it."""
    return orjson.dumps(
        {
            "id": f"resp_{env.request_id}",
            "object": "response.compaction",
            "created_at": env.created,
            "model": env.alias,
            "output": [_compaction_item(f"cmp_{env.request_id}", response.text)],
            "usage": _usage(response.usage),
            "pirouter": env.meta,
        }
    )
