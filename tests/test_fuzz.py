"""Property-based fuzzing: no client input and no config text makes pirouter fail other than with
its own clear errors; the daemon answers every body with a 4xx in the client's format, never 5xx."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import importlib.util
import json
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pirouter_py.config import parse_config
from pirouter_py.errors import ConfigError, RequestError
from pirouter_py.wire import anthropic, ollama, openai, responses, textgen
from tests.fakes import Daemon

BROTLI = any(importlib.util.find_spec(m) for m in ("brotli", "brotlicffi"))
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
roles = st.one_of(
    st.sampled_from(
        ["system", "developer", "user", "assistant", "tool", "function", "wizard", "", None, 3]
    ),
    json_values,  # an object or an array too: unhashable, so no lookup table may take it
)
kinds = st.one_of(st.text(max_size=12), json_values)  # a part's or a tool's `type`, as sent
parts = st.one_of(
    st.text(max_size=30),
    st.none(),
    st.integers(),
    json_values,
    st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"type": st.just("text"), "text": st.one_of(st.text(), st.none())}
            ),
            st.fixed_dictionaries(
                {"type": st.just("image_url"), "image_url": st.one_of(st.text(), json_values)}
            ),
            st.fixed_dictionaries(
                {
                    "type": st.one_of(
                        st.sampled_from(
                            ["image", "tool_use", "tool_result", "document", "input_text"]
                        ),
                        kinds,
                    )
                },
                optional={
                    "source": json_values,
                    "id": st.text(),
                    "name": st.text(),
                    "input": json_values,
                    "tool_use_id": st.one_of(st.text(), st.none()),
                    "content": json_values,
                },
            ),
            json_values,
        ),
        max_size=3,
    ),
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles},
        optional={
            "content": parts,
            "tool_calls": json_values,
            "tool_call_id": json_values,
            "images": json_values,
            "name": json_values,
        },
    ),
    max_size=4,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.text(max_size=10), json_values),
        "messages": messages,
        "tools": json_values,
        "stream": json_values,
        "max_tokens": json_values,
        "temperature": json_values,
        "system": parts,
        "tool_choice": json_values,
        "options": json_values,
    },
)
# Responses input items: every kind pirouter reads, and some it does not
items = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.one_of(
                    st.sampled_from(
                        [
                            "message",
                            "function_call",
                            "function_call_output",
                            "custom_tool_call",
                            "custom_tool_call_output",
                            "reasoning",
                            "additional_tools",
                            "compaction",
                            "compaction_trigger",
                            "wizard",
                        ]
                    ),
                    kinds,
                )
            },
            optional={
                "role": roles,
                "content": parts,
                "call_id": json_values,
                "name": json_values,
                "arguments": json_values,
                "input": json_values,
                "output": parts,
                "tools": json_values,
                "encrypted_content": json_values,
            },
        ),
        json_values,
    ),
    max_size=4,
)
responses_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.text(max_size=10), json_values),
        "input": st.one_of(st.text(max_size=20), items, json_values),
        "instructions": json_values,
        "tools": st.one_of(
            json_values,
            st.lists(
                st.fixed_dictionaries(
                    {
                        "type": st.one_of(
                            st.sampled_from(["function", "custom", "namespace", "web_search"]),
                            kinds,
                        )
                    },
                    optional={"name": json_values, "tools": json_values, "format": json_values},
                ),
                max_size=3,
            ),
        ),
        "stream": json_values,
        "store": json_values,
        "text": json_values,
        "max_output_tokens": json_values,
        "previous_response_id": json_values,
    },
)
text_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.text(max_size=10), json_values),
        "prompt": json_values,
        "suffix": json_values,
        "input": json_values,
        "max_tokens": json_values,
        "stream": json_values,
        "options": json_values,
        "stop": json_values,
    },
)
DECODERS = {
    "openai": openai.decode_request,
    "anthropic": anthropic.decode_request,
    "ollama": ollama.decode_request,
    "responses": responses.decode_request,
    "compact": responses.decode_compact,
    "completion": textgen.decode_completion,
    "generate": textgen.decode_generate,
    "embeddings": textgen.decode_embeddings,
    "embed": textgen.decode_embed,
}


@pytest.mark.parametrize("protocol", list(DECODERS))
@SETTINGS
@given(body=st.one_of(bodies, responses_bodies, text_bodies, json_values))
# Found by this test (a 500): an Ollama tool message whose name was not a string.
@example(body={"model": "0", "messages": [{"role": "tool", "content": None, "name": [None]}]})
# Found by this test (a 500 on /v1/responses): unhashable values where a table is looked up
@example(body={"model": "0", "input": [{"type": "message", "role": {}, "content": "hi"}]})
@example(body={"model": "0", "input": [{"type": "message", "role": [], "content": "hi"}]})
@example(body={"model": "0", "input": "hi", "tools": [{"type": {}, "name": "f"}]})
@example(
    body={"model": "0", "input": "hi", "tools": [{"type": "namespace", "tools": [{"type": []}]}]}
)
def test_decoders_fail_only_with_request_errors(protocol: str, body: Any) -> None:
    try:
        DECODERS[protocol](json.dumps(body).encode())
    except RequestError as exc:
        assert exc.message and exc.http_status == 400


@pytest.mark.parametrize("protocol", list(DECODERS))
@SETTINGS
@given(raw=st.binary(max_size=200))
def test_decoders_take_any_bytes(protocol: str, raw: bytes) -> None:
    with contextlib.suppress(RequestError):
        DECODERS[protocol](raw)


toml_values = st.one_of(
    st.text(max_size=12),
    st.integers(-5, 10**6),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.text(max_size=8), max_size=3),
)
keys = st.sampled_from(
    [
        "provider",
        "model_id",
        "quality",
        "context_window",
        "supports_tools",
        "input_per_m",
        "enabled",
        "type",
        "base_url",
        "bind",
        "profile",
        "name",
        "when",
        "then",
        "primary",
        "cascade",
        "always",
        "system_matches",
        "tokens_in_gt",
        "header",
        "on_marker",
        "path",
        "bogus",
    ]
)


@SETTINGS
@given(text=st.text(max_size=300))
def test_config_loader_takes_any_text(text: str) -> None:
    try:
        parse_config(text, "fuzz.toml")
    except ConfigError as exc:
        assert all(str(p).startswith("fuzz.toml") for p in exc.problems)


@SETTINGS
@given(
    doc=st.dictionaries(
        st.sampled_from(
            ["server", "providers", "models", "routing", "cascade", "ledger", "rules", "stats"]
        ),
        st.one_of(
            toml_values,
            st.dictionaries(
                st.text(min_size=1, max_size=6),
                st.dictionaries(keys, toml_values, max_size=5),
                max_size=3,
            ),
            st.dictionaries(keys, toml_values, max_size=5),
            st.lists(
                st.dictionaries(
                    keys,
                    st.one_of(toml_values, st.dictionaries(keys, toml_values, max_size=3)),
                    max_size=4,
                ),
                max_size=3,
            ),
        ),
        max_size=6,
    )
)
def test_config_loader_takes_any_document(doc: dict[str, Any]) -> None:
    import tomlkit

    try:
        text = tomlkit.dumps(doc)
    except Exception:  # not every generated mapping is representable in TOML
        return
    try:
        parse_config(text, "fuzz.toml")
    except ConfigError as exc:
        assert exc.problems and all(str(p).startswith("fuzz.toml") for p in exc.problems)


CONFIG = """
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.m]
provider = "fake"
model_id = "m"
supports_tools = true
supports_vision = true
supports_fim = true
[models.e]
provider = "fake"
model_id = "e"
kind = "embedding"
"""
PATHS = {
    "/v1/chat/completions": "openai",
    "/v1/messages": "anthropic",
    "/api/chat": "ollama",
    "/v1/responses": "openai",
    "/v1/responses/compact": "openai",
    "/v1/completions": "openai",
    "/api/generate": "ollama",
    "/v1/embeddings": "openai",
    "/api/embed": "ollama",
    "/api/embeddings": "ollama",
}


@pytest.fixture(scope="module")
def connection(daemon: Daemon) -> Any:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    yield conn
    conn.close()


@pytest.mark.usefixtures("clean_fake")
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    path=st.sampled_from(list(PATHS)),
    body=st.one_of(bodies, responses_bodies, text_bodies, json_values, st.binary(max_size=60)),
)
def test_the_daemon_never_answers_5xx_to_client_input(
    connection: Any, path: str, body: Any
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection.request("POST", path, body=data, headers={"content-type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    assert response.status < 500, payload
    assert b"Traceback" not in payload
    if response.status >= 400:
        error_message(PATHS[path], payload)


def error_message(shape: str, payload: bytes) -> str:
    """The message of an error body, checked to be in the protocol `shape` of its endpoint."""
    error = json.loads(payload)
    if shape == "openai":
        assert set(error["error"]) == {"message", "type", "param", "code"}
        return str(error["error"]["message"])
    if shape == "anthropic":
        assert error["type"] == "error" and error["error"]["message"]
        return str(error["error"]["message"])
    assert isinstance(error["error"], str) and error["error"]
    return error["error"]


def post_raw(connection: Any, path: str, data: bytes) -> tuple[int, Any]:
    connection.request("POST", path, body=data, headers={"content-type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


# Responses fields read as keys of a table or members of a set: an object or an array there is
# unhashable (a TypeError, then a 500, before these were checked). Each: a body, the field named.
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "role": ({"input": [{"type": "message", "role": "X", "content": "hi"}]}, "input[0].role"),
    "part-type": (
        {"input": [{"type": "message", "role": "user", "content": [{"type": "X"}]}]},
        "input[0].content[0].type",
    ),
    "item-type": ({"input": [{"type": "X", "role": "user", "content": "hi"}]}, "input[0].type"),
    "tool-type": ({"input": "hi", "tools": [{"type": "X", "name": "f"}]}, "tools[0].type"),
    "namespaced-tool-type": (
        {"input": "hi", "tools": [{"type": "namespace", "tools": [{"type": "X"}]}]},
        "tools[0].tools[0].type",
    ),
    "added-tool-type": (
        {"input": [{"type": "additional_tools", "tools": [{"type": "X"}]}, "HI"]},
        "input[0].tools[0].type",
    ),
}


@pytest.mark.usefixtures("clean_fake")
@pytest.mark.parametrize("value", [{"a": 1}, ["a"]], ids=["object", "array"])
@pytest.mark.parametrize("field", list(HOSTILE))
@pytest.mark.parametrize("path", ["/v1/responses", "/v1/responses/compact"])
def test_an_object_or_array_where_responses_wants_a_string_is_400_naming_it(
    connection: Any, path: str, field: str, value: Any
) -> None:
    template, named = HOSTILE[field]
    text = json.dumps({"model": "auto", **template}).replace(
        '"HI"', '{"role": "user", "content": "hi"}'
    )
    data = text.replace('"X"', json.dumps(value)).encode()
    connection.request("POST", path, body=data, headers={"content-type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    assert response.status == 400, payload
    assert f"`{named}`" in error_message("openai", payload)
    assert json.loads(payload)["error"]["param"] == named


# Every POST endpoint, and the protocol its errors are in
POSTS = {
    **PATHS,
    "/v1/messages/count_tokens": "anthropic",
    "/v1/feedback": "openai",
    "/api/show": "ollama",
}
CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def post_encoded(daemon: Daemon, path: str, data: bytes, encoding: str) -> tuple[int, bytes]:
    """POST `data` labelled `Content-Encoding: encoding`, on a connection of its own."""
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        headers = {"content-type": "application/json", "content-encoding": encoding}
        conn.request("POST", path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.usefixtures("clean_fake")
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("path", list(POSTS))
def test_a_body_that_is_not_the_compressed_data_its_encoding_says_is_400(
    daemon: Daemon, path: str, encoding: str
) -> None:
    data = json.dumps(CHAT).encode()  # labelled compressed, sent plain
    status, payload = post_encoded(daemon, path, data, encoding)
    if encoding == "br" and not BROTLI:
        # aiohttp refuses a coding it cannot decode before any handler runs (no route, so no
        # protocol to answer in): its own plain 400
        assert status == 400 and b"brotli" in payload
        return
    assert status == 400, payload
    message = error_message(POSTS[path], payload)
    assert f"request body is not valid {encoding} data" in message
    assert f"Content-Encoding: {encoding}" in message


@pytest.mark.usefixtures("clean_fake")
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/api/chat"])
def test_a_compressed_body_is_read(daemon: Daemon, path: str, encoding: str) -> None:
    data = json.dumps({**CHAT, "max_tokens": 64}).encode()
    packed = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    status, payload = post_encoded(daemon, path, packed, encoding)
    assert status == 200, payload
    assert b"Hello from the fake upstream." in payload


@pytest.mark.usefixtures("clean_fake")
def test_deep_nesting_and_invalid_utf8_are_400(connection: Any) -> None:
    deep = b'{"model": "auto", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    status, body = post_raw(connection, "/v1/chat/completions", deep)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    bad = b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
    for path in PATHS:
        assert post_raw(connection, path, bad)[0] == 400


@pytest.mark.usefixtures("clean_fake")
def test_a_ten_thousand_message_conversation_is_routed(connection: Any) -> None:
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"}
        for i in range(10_000)
    ]
    status, body = post_raw(
        connection,
        "/v1/chat/completions",
        json.dumps({"model": "auto", "messages": turns}).encode(),
    )
    assert status == 200 and body["choices"][0]["message"]["content"]


def test_a_client_trickling_its_body_gets_408(fake: Any, tmp_path: Any) -> None:
    import socket
    import time

    path = tmp_path / "config.toml"
    path.write_text("[server]\nbody_timeout_secs = 1\n" + CONFIG.replace("{url}", fake.url))
    slow = Daemon(path).start()
    try:
        host, port = slow.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                f"POST /v1/messages HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            started = time.monotonic()
            reply = b""
            sock.settimeout(0.3)
            while b"did not arrive" not in reply and time.monotonic() - started < 8:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")  # one byte every 0.3 s: never enough, never done
                with contextlib.suppress(TimeoutError):
                    reply += sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408")
        assert b'"type":"error"' in reply and b"did not arrive within 1 s" in reply
        assert time.monotonic() - started < 4
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 200  # still serving
        connection.close()
    finally:
        slow.stop()


def test_a_header_flood_is_refused_and_the_daemon_stays_up(connection: Any, daemon: Any) -> None:
    import socket

    host, port = daemon.url.removeprefix("http://").split(":")
    flood = b"".join(b"X-Flood-%d: %s\r\n" % (i, b"a" * 4000) for i in range(400))
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n" + flood)
        reply = sock.recv(4096)
    assert reply.split(b" ", 2)[1] in (b"400", b"413", b"431")  # aiohttp's own refusal
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"ok")
