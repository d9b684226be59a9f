"""End to end: the real daemon (a subprocess) driven by the official openai SDK and by raw HTTP,
in front of a scripted fake OpenAI upstream on loopback."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes import Daemon, FakeUpstream, Reply

KEY = "sk-test-upstream-secret-0123456789"

CONFIG = """
[providers.fake]
type = "openai"
base_url = "{url}/v1"
api_key = "{key}"
request_timeout_secs = 2

[models.cheap]
provider = "fake"
model_id = "m-cheap"
quality = "basic"
input_per_m = 0.1
supports_tools = true
supports_vision = true

[models.mid]
provider = "fake"
model_id = "m-mid"
quality = "standard"
input_per_m = 1.0
supports_tools = true
supports_vision = true

[models.strong]
provider = "fake"
model_id = "m-strong"
quality = "strong"
input_per_m = 5.0
supports_tools = true
supports_vision = true

[routing]
max_policy_fallbacks = 2

[[rules]]
name = "explicit-override"
when = { header = { name = "x-pirouter-route", any_value = true } }
then = { primary = "$header:x-pirouter-route" }

[cascade]
on_short_response = true
min_output_tokens = 3
on_marker = "<escalate/>"
on_truncated = true
on_empty = true
max_cooldown_secs = 0  # these tests script each model's failures themselves
"""


pytestmark = pytest.mark.usefixtures("clean_fake")


OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def client(daemon: Daemon) -> openai.OpenAI:
    sdk = openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    OPEN.append(sdk)
    return sdk


def raw(
    daemon: Daemon, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(
        method, path, body=data, headers={"content-type": "application/json", **(headers or {})}
    )
    response = conn.getresponse()
    out = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    conn.close()
    return out


HI = [{"role": "user", "content": "hi"}]


# --- the SDK as a client -------------------------------------------------------------------


def test_sync_sdk_gets_answer_alias_and_routing_headers(daemon: Daemon, fake: FakeUpstream) -> None:
    raw_response = client(daemon).chat.completions.with_raw_response.create(
        model="auto", messages=HI
    )  # type: ignore[arg-type]
    completion = raw_response.parse()
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert completion.model == "cheap"
    assert completion.system_fingerprint == "fp_fake"  # the upstream body passes through
    headers = raw_response.headers
    assert headers["x-pirouter-model"] == "cheap"
    assert headers["x-pirouter-rule"] == "policy:balanced:easy"
    assert headers["x-pirouter-attempts"] == "1"
    assert float(headers["x-pirouter-overhead-ms"]) >= 0
    extra = completion.model_extra or {}
    assert extra["pirouter"]["rule"] == "policy:balanced:easy"
    assert extra["pirouter"]["attempts"][0]["outcome"]["kind"] == "ok"
    assert fake.seen[0].headers["Authorization"] == f"Bearer {KEY}"
    assert fake.seen[0].body["model"] == "m-cheap"


def test_async_sdk(daemon: Daemon) -> None:
    async def go() -> str | None:
        async with openai.AsyncOpenAI(
            base_url=daemon.url + "/v1", api_key="x", max_retries=0
        ) as ac:
            done = await ac.chat.completions.create(model="auto", messages=HI)  # type: ignore[arg-type]
            return done.choices[0].message.content

    assert asyncio.run(go()) == "Hello from the fake upstream."


def test_streaming_sdk_relays_chunks_and_hides_unrequested_usage(
    daemon: Daemon, fake: FakeUpstream
) -> None:
    fake.default("m-cheap", Reply(text="one two three four five six"))
    chunks = list(
        client(daemon).chat.completions.create(
            model="auto",
            messages=HI,  # type: ignore[arg-type]
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "one two three four five six"
    )
    assert all(c.usage is None for c in chunks) and all(c.model == "cheap" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    # pirouter asked the upstream for usage anyway, for the ledger
    assert fake.seen[0].body["stream_options"] == {"include_usage": True}


def test_streaming_usage_when_the_client_asks(daemon: Daemon) -> None:
    chunks = list(
        client(daemon).chat.completions.create(
            model="auto", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )  # type: ignore[arg-type]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_every_field_passes_through(daemon: Daemon, fake: FakeUpstream) -> None:
    client(daemon).chat.completions.create(
        model="auto",
        messages=HI,
        temperature=0.3,
        top_p=0.9,
        stop=["\n\n"],
        n=1,
        seed=7,  # type: ignore[arg-type]
        max_completion_tokens=50,
        response_format={"type": "json_object"},
        user="u-1",
        logprobs=True,
        top_logprobs=2,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        reasoning_effort="low",
        parallel_tool_calls=False,
        metadata={"k": "v"},
    )
    body = fake.seen[0].body
    expected = {
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "n": 1,
        "seed": 7,
        "max_completion_tokens": 50,
        "response_format": {"type": "json_object"},
        "user": "u-1",
        "logprobs": True,
        "top_logprobs": 2,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "reasoning_effort": "low",
        "parallel_tool_calls": False,
        "metadata": {"k": "v"},
    }
    assert {k: body[k] for k in expected} == expected
    assert "stream" not in body


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(daemon: Daemon, fake: FakeUpstream, stream: bool) -> None:
    # tools make the request hard: the policy picks the strong model
    fake.script(
        "m-strong",
        Reply(text="", tool_calls=[CALL], finish_reason="tool_calls"),
        Reply(text="It is sunny in Paris today."),
    )
    sdk = client(daemon)
    if stream:
        chunks = list(
            sdk.chat.completions.create(
                model="auto",
                messages=HI,
                tools=TOOLS,  # type: ignore[arg-type]
                stream=True,
            )
        )
        deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert (
            deltas[0].id == "call_1"
            and deltas[0].function
            and deltas[0].function.name == "get_weather"
        )
        assert "".join(d.function.arguments or "" for d in deltas if d.function) == (
            '{"city": "Paris"}'
        )
    else:
        first = sdk.chat.completions.create(model="auto", messages=HI, tools=TOOLS)  # type: ignore[arg-type]
        calls = first.choices[0].message.tool_calls
        assert first.choices[0].finish_reason == "tool_calls"
        assert calls is not None and calls[0].id == "call_1"
    turn = [
        *HI,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear"}'},
    ]
    final = sdk.chat.completions.create(model="auto", messages=turn, tools=TOOLS)  # type: ignore[arg-type]
    assert final.choices[0].message.content == "It is sunny in Paris today."
    sent = fake.seen[-1].body
    assert sent["tools"] == TOOLS
    assert sent["messages"][1]["tool_calls"] == [CALL]
    assert sent["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": '{"sky": "clear"}',
    }


def test_images_reach_the_upstream(daemon: Daemon, fake: FakeUpstream) -> None:
    image = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
    }
    content = [{"type": "text", "text": "what is this?"}, image]
    client(daemon).chat.completions.create(
        model="auto",
        messages=[  # type: ignore[arg-type]
            {"role": "user", "content": content}
        ],
    )
    assert fake.seen[0].body["messages"][0]["content"] == content


def test_models_list(daemon: Daemon) -> None:
    ids = [m.id for m in client(daemon).models.list()]
    assert ids == ["auto", "cheap", "mid", "strong"]


# --- errors in OpenAI's shape --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "kind"),
    [
        ("POST", "/v1/chat/completions", b"{nope", None, 400, "invalid_request_error"),
        ("POST", "/v1/chat/completions", {"messages": HI}, None, 400, "invalid_request_error"),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "auto", "messages": []},
            None,
            400,
            "invalid_request_error",
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "auto", "messages": [{"role": "wizard"}]},
            None,
            400,
            "invalid_request_error",
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "auto", "messages": HI},
            {"content-type": "text/plain"},
            415,
            "invalid_request_error",
        ),
        ("GET", "/v1/nothing", None, None, 404, "not_found_error"),
        ("GET", "/v1/chat/completions", None, None, 405, "invalid_request_error"),
    ],
)
def test_bad_requests_get_openai_errors(
    daemon: Daemon,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str] | None,
    status: int,
    kind: str,
) -> None:
    code, head, data = raw(daemon, method, path, body, headers)
    error = json.loads(data)["error"]
    assert code == status and error["type"] == kind and error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert head["x-pirouter-request-id"]


def test_missing_model_names_the_param(daemon: Daemon) -> None:
    _, _, data = raw(daemon, "POST", "/v1/chat/completions", {"messages": HI})
    assert json.loads(data)["error"]["param"] == "model"


def test_body_over_the_limit_is_413(daemon: Daemon) -> None:
    big = {"model": "auto", "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}
    code, _, data = raw(daemon, "POST", "/v1/chat/completions", big)
    assert code == 413 and "8388608-byte limit" in json.loads(data)["error"]["message"]


def test_routing_error_is_400(daemon: Daemon, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(daemon).chat.completions.create(
            model="auto",
            messages=HI,  # type: ignore[arg-type]
            extra_headers={"x-pirouter-route": "nope"},
        )
    assert caught.value.status_code == 400 and caught.value.type == "invalid_request_error"
    assert caught.value.message.endswith(
        "rule `explicit-override` selected unknown model alias `nope`"
    )
    assert fake.seen == []


def test_health_endpoints(daemon: Daemon) -> None:
    assert raw(daemon, "GET", "/healthz")[::2] == (200, b"ok")
    status, _, body = raw(daemon, "GET", "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["requests"] >= 0


# --- the escalation matrix -------------------------------------------------------------------

FAIL = {
    "429": Reply(kind="status", status=429, headers={"Retry-After": "3"}),
    "500": Reply(kind="status", status=500),
    "503": Reply(kind="status", status=503),
    "context-400": Reply(
        kind="status", status=400, error="This model's maximum context length is 8192 tokens"
    ),
    "timeout": Reply(kind="hang"),
    "reset": Reply(kind="reset"),
    "malformed": Reply(kind="malformed"),
    "short": Reply(text="ok"),
    "marker": Reply(text="<escalate/> I am not sure about this one"),
    # Cut off within the hold-back window, so streams can escalate too (a stream committed
    # before its finish reason arrives cannot be taken back).
    "truncated": Reply(text="Cut", usage=(5, 50), finish_reason="length"),
    "empty": Reply(text=""),
}
EXPECTED_OUTCOME = {
    "429": "escalated_http_error",
    "500": "escalated_http_error",
    "503": "escalated_http_error",
    "context-400": "escalated_http_error",
    "timeout": "escalated_http_error",
    "reset": "escalated_http_error",
    "malformed": "escalated_http_error",
    "short": "escalated_short_response",
    "marker": "escalated_marker",
    "truncated": "escalated_truncated",
    "empty": "escalated_empty",
}


def sse_events(data: bytes) -> list[Any]:
    out = []
    for block in data.split(b"\n\n"):
        if block.startswith(b"data: "):
            payload = block[6:]
            out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


def stream_text(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("trigger", list(FAIL))
def test_each_trigger_escalates_to_the_next_model(
    daemon: Daemon, fake: FakeUpstream, trigger: str, stream: bool
) -> None:
    fake.script("m-cheap", FAIL[trigger])
    body = {"model": "auto", "messages": HI, "stream": stream}
    status, headers, data = raw(daemon, "POST", "/v1/chat/completions", body)
    assert status == 200, data
    assert fake.models_called() == ["m-cheap", "m-mid"]
    assert headers["x-pirouter-model"] == "mid" and headers["x-pirouter-attempts"] == "2"
    if stream:
        events = sse_events(data)
        assert stream_text(events) == "Hello from the fake upstream." and events[-1] == "[DONE]"
    else:
        answer = json.loads(data)
        assert answer["choices"][0]["message"]["content"] == "Hello from the fake upstream."
        attempts = answer["pirouter"]["attempts"]
        assert [a["outcome"]["kind"] for a in attempts] == [EXPECTED_OUTCOME[trigger], "ok"]
        if trigger == "429":
            assert attempts[0]["outcome"]["status"] == 429
    line = daemon.wait_log(headers["x-pirouter-request-id"])
    assert line["chain"] == [f"cheap:{EXPECTED_OUTCOME[trigger]}", "mid:ok"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_non_retryable_error_stops_the_cascade(
    daemon: Daemon, fake: FakeUpstream, stream: bool
) -> None:
    fake.script(
        "m-cheap", Reply(kind="status", status=401, error=f"Incorrect API key provided: {KEY}")
    )
    status, _, data = raw(
        daemon, "POST", "/v1/chat/completions", {"model": "auto", "messages": HI, "stream": stream}
    )
    error = json.loads(data)["error"]
    assert status == 502 and error["type"] == "upstream_error"
    assert error["message"].startswith("fake (m-cheap): 401 Unauthorized: ")
    assert KEY not in error["message"] and "Incorrect API key provided: ***" in error["message"]
    assert fake.models_called() == ["m-cheap"]
    assert KEY not in "".join(daemon.stderr)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_last_models_short_answer_is_returned_not_thrown_away(
    daemon: Daemon, fake: FakeUpstream, stream: bool
) -> None:
    for model in ("m-cheap", "m-mid", "m-strong"):
        fake.script(model, Reply(text="meh"))
    status, headers, data = raw(
        daemon, "POST", "/v1/chat/completions", {"model": "auto", "messages": HI, "stream": stream}
    )
    assert status == 200 and headers["x-pirouter-model"] == "strong"
    assert fake.models_called() == ["m-cheap", "m-mid", "m-strong"]
    if stream:
        assert stream_text(sse_events(data)) == "meh"
    else:
        answer = json.loads(data)
        assert answer["choices"][0]["message"]["content"] == "meh"
        last = answer["pirouter"]["attempts"][-1]
        assert last["outcome"]["kind"] == "escalated_short_response" and last["returned"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_exhausted_cascade_is_502_naming_every_model(
    daemon: Daemon, fake: FakeUpstream, stream: bool
) -> None:
    for model in ("m-cheap", "m-mid", "m-strong"):
        fake.script(model, Reply(kind="status", status=503))
    status, headers, data = raw(
        daemon, "POST", "/v1/chat/completions", {"model": "auto", "messages": HI, "stream": stream}
    )
    message = json.loads(data)["error"]["message"]
    assert status == 502 and headers["x-pirouter-attempts"] == "3"
    assert message.startswith(
        "cascade exhausted, every model failed (cheap: fake (m-cheap): 503 Service Unavailable"
    )
    assert "mid: fake (m-mid): 503" in message and "strong: fake (m-strong): 503" in message


def test_stream_failure_after_commit_is_continued_by_the_next_model(
    daemon: Daemon, fake: FakeUpstream
) -> None:
    """Cut after its commit, the stream goes on with the policy's next model: one answer, one
    [DONE], no error event (test_faults.py covers every protocol pair)."""
    fake.script("m-cheap", Reply(kind="cut", text="one two three four five six", chunks=4))
    status, headers, data = raw(
        daemon, "POST", "/v1/chat/completions", {"model": "auto", "messages": HI, "stream": True}
    )
    events = sse_events(data)
    assert status == 200 and headers["x-pirouter-model"] == "cheap"
    text = stream_text(events)
    assert text.startswith("one two three four ") and text.endswith("Hello from the fake upstream.")
    assert events[-1] == "[DONE]" and all("error" not in e for e in events[:-1])
    called = fake.models_called()
    assert called[0] == "m-cheap" and len(called) == 2 and called[1] != "m-cheap"


def test_stream_hold_back_hides_an_escalated_start(daemon: Daemon, fake: FakeUpstream) -> None:
    # a marked answer escalates before the client sees a byte of it
    fake.script("m-cheap", Reply(text="<escalate/> let me think about this long question"))
    _, _, data = raw(
        daemon, "POST", "/v1/chat/completions", {"model": "auto", "messages": HI, "stream": True}
    )
    assert "escalate" not in data.decode() and stream_text(sse_events(data)).startswith("Hello")


def test_client_disconnect_cancels_the_upstream(daemon: Daemon, fake: FakeUpstream) -> None:
    fake.script("m-cheap", Reply(text=" ".join(["word"] * 200), chunk_delay=0.05))
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps({"model": "auto", "messages": HI, "stream": True}),
        headers={"content-type": "application/json"},
    )
    response = conn.getresponse()
    rid = response.getheader("x-pirouter-request-id") or ""
    assert response.read1(64)  # the stream started
    conn.close()
    left = time.monotonic()
    deadline = left + 5
    while time.monotonic() < deadline and not fake.seen[0].finished:
        time.sleep(0.02)
    assert fake.seen[0].cancelled, "the upstream request was not cancelled"
    assert time.monotonic() - left < 1.0, "the upstream request outlived the client by > 1 s"
    line = daemon.wait_log(rid)  # recorded with the tokens spent so far, estimated
    assert line["status"] == "client_cancelled" and line["tokens_in"] > 0
    assert line["tokens_out"] > 0


def test_honor_requested_model(fake: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        CONFIG.replace("{url}", fake.url)
        .replace("{key}", KEY)
        .replace("[routing]\n", "[routing]\nhonor_requested_model = true\n")
    )
    process = Daemon(path).start()
    try:
        status, headers, _ = raw(
            process, "POST", "/v1/chat/completions", {"model": "mid", "messages": HI}
        )
        assert status == 200 and headers["x-pirouter-rule"] == "requested:mid"
        assert fake.models_called() == ["m-mid"]
        _, headers, _ = raw(
            process, "POST", "/v1/chat/completions", {"model": "gpt-unknown", "messages": HI}
        )
        assert headers["x-pirouter-rule"] == "policy:balanced:easy"
    finally:
        assert process.stop() == 0


def test_sigterm_lets_in_flight_requests_finish(fake: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.replace("{url}", fake.url).replace("{key}", KEY))
    process = Daemon(path).start()
    fake.script("m-cheap", Reply(text="slow but complete answer here", delay=1.0))
    result: dict[str, Any] = {}

    def call() -> None:
        result["answer"] = raw(
            process, "POST", "/v1/chat/completions", {"model": "auto", "messages": HI}
        )

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while not fake.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.stop(signal.SIGTERM) == 0
    thread.join(10)
    status, _, data = result["answer"]
    assert status == 200
    assert json.loads(data)["choices"][0]["message"]["content"] == "slow but complete answer here"
    assert process.log_lines("shutting_down")[0]["in_flight"] == 1


def test_past_the_limit_routine_request_lines_are_counted_and_the_rest_written(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "config.toml"
    config = CONFIG.replace("{url}", fake.url).replace("{key}", KEY)
    path.write_text("[server]\nlog_requests_per_sec = 1\n" + config)
    process = Daemon(path).start()
    fake.script("m-cheap", Reply(kind="status", status=429))  # one request escalates
    try:
        with ThreadPoolExecutor(8) as pool:
            calls = [
                pool.submit(
                    raw, process, "POST", "/v1/chat/completions", {"model": "auto", "messages": HI}
                )
                for _ in range(8)
            ]
            assert [call.result()[0] for call in calls] == [200] * 8
        deadline = time.monotonic() + 5  # the count is written when its one-second window ends
        while not process.log_lines("request_lines_skipped") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.stop()
    requests = process.log_lines("request")
    skipped = sum(int(x["skipped"]) for x in process.log_lines("request_lines_skipped"))
    escalated = [x for x in requests if len(x["chain"]) == 2]
    assert len(escalated) == 1 and escalated[0]["chain"][0] == "cheap:escalated_http_error"
    assert skipped >= 1 and len(requests) - 1 + skipped == 7  # every routine request told of


def test_connection_refused_escalates(fake: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    text = CONFIG.replace("{url}", fake.url).replace("{key}", KEY) + (
        '\n[providers.down]\ntype = "openai"\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\n'
        '[models.aaa-down]\nprovider = "down"\nmodel_id = "m-down"\nquality = "basic"\n'
    )
    path.write_text(text)
    process = Daemon(path).start()
    try:
        status, headers, data = raw(
            process, "POST", "/v1/chat/completions", {"model": "auto", "messages": HI}
        )
        attempts = json.loads(data)["pirouter"]["attempts"]
        assert status == 200 and headers["x-pirouter-model"] == "cheap"
        assert attempts[0]["alias"] == "aaa-down"
        assert attempts[0]["outcome"]["message"].startswith("down (m-down): connection failed")
    finally:
        process.stop()


def test_daemon_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "config.toml"
    path.write_text(
        '[server]\nbind = "0.0.0.0:11435"\n[providers.ollama]\n[models.m]\n'
        'provider = "ollama"\nmodel_id = "x"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "pirouter_py", "-c", str(path), "run"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # refused at load, like check-config, with the file, line and key
    assert done.returncode == 3
    assert done.stderr.startswith(
        f'error: {path}:2: server.bind: "0.0.0.0:11435" is beyond loopback'
    )
    # a --host beyond loopback is refused by run itself (a usage error)
    path.write_text(path.read_text().replace("0.0.0.0:11435", "127.0.0.1:11435"))
    done = subprocess.run(
        [sys.executable, "-m", "pirouter_py", "-c", str(path), "run", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("Error: refusing to listen on 0.0.0.0")


def test_client_disconnect_cancels_a_whole_request_too(daemon: Daemon, fake: FakeUpstream) -> None:
    fake.script("m-cheap", Reply(text="late", delay=3.0))
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps({"model": "auto", "messages": HI}),
        headers={"content-type": "application/json"},
    )
    deadline = time.monotonic() + 5
    while not fake.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    conn.close()
    while time.monotonic() < deadline and not fake.seen[0].finished:
        time.sleep(0.05)
    assert fake.seen[0].cancelled, "the upstream request was not cancelled"
    line = next(
        x for x in daemon.log_lines() if x["status"] == "client_cancelled" and x["stream"] is False
    )
    assert line["chain"] == ["cheap:client_cancelled"]


def test_metrics_count_requests_attempts_tokens_and_cost(
    daemon: Daemon, fake: FakeUpstream
) -> None:
    fake.script("m-cheap", Reply(kind="status", status=429))
    status, _, _ = raw(daemon, "POST", "/v1/chat/completions", {"model": "auto", "messages": HI})
    assert status == 200
    code, headers, body = raw(daemon, "GET", "/metrics")
    text = body.decode()
    assert code == 200 and headers["content-type"].startswith("text/plain")
    assert (
        'pirouter_attempts_total{alias="cheap",outcome="escalated_http_error",provider="fake"}'
    ) in text
    assert 'pirouter_attempts_total{alias="mid",outcome="ok",provider="fake"}' in text
    assert 'pirouter_tokens_total{alias="mid",direction="output"}' in text
    assert 'pirouter_cost_usd_total{alias="mid"}' in text  # mid costs $1/M input
    assert "pirouter_in_flight_requests 0.0" in text
    assert 'pirouter_upstream_latency_seconds_bucket{alias="mid",le="0.01"}' in text


def test_status_reports_a_running_daemon(daemon: Daemon, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pirouter_py.cli import app

    port = daemon.url.rsplit(":", 1)[1]
    config = tmp_path / "status.toml"
    config.write_text(
        f'[server]\nbind = "127.0.0.1:{port}"\n[providers.ollama]\n[models.m]\n'
        'provider = "ollama"\nmodel_id = "x"\n'
    )
    result = CliRunner().invoke(app, ["status", "-c", str(config)])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"pirouter 0.1.0 is ok at http://127.0.0.1:{port}\n")
    assert "  requests:  " in result.stdout
    # the daemon answering there runs another config than the one named: said
    assert f"(not {config}, the config this command read)" in result.stdout
    report = json.loads(CliRunner().invoke(app, ["status", "--json", "-c", str(config)]).stdout)
    assert report["running"] is True and report["status"] == "ok"
    config.write_text(config.read_text().replace(port, "9"))
    down = CliRunner().invoke(app, ["status", "-c", str(config)])
    assert down.exit_code == 1 and "is not answering at http://127.0.0.1:9" in down.stdout


def test_metrics_can_be_turned_off(fake: FakeUpstream, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    text = CONFIG.replace("{url}", fake.url).replace("{key}", KEY)
    path.write_text("[server]\nmetrics = false\n" + text)
    process = Daemon(path).start()
    try:
        status, _, body = raw(process, "GET", "/metrics")
        assert status == 404 and json.loads(body)["error"]["type"] == "not_found_error"
    finally:
        process.stop()
