"""Text completions (fill-in-the-middle) and embeddings through the daemon, driven by the official
`openai` and `ollama` clients, answered by OpenAI- and Ollama-type upstreams."""

from __future__ import annotations

import base64
import http.client
import json
import struct
import time
from collections.abc import Iterator

import ollama
import openai
import pytest
from openai.types import Completion

from pirouter_py.types import TextAnswer, Usage
from pirouter_py.wire import textgen
from tests.fakes import Daemon, FakeUpstream, Reply
from tests.test_sdk_types import Check, sse

CONFIG = """
[providers.up-openai]
type = "openai"
base_url = "{url}"
api_key = "k-openai"
[providers.up-ollama]
type = "ollama"
base_url = "{url}"

[models.chat]
provider = "up-openai"
model_id = "m-chat"
[models.coder-local]
provider = "up-ollama"
model_id = "m-fim-l"
supports_fim = true
local = true
[models.coder-cloud]
provider = "up-openai"
model_id = "m-fim-o"
supports_fim = true
input_per_m = 0.2
output_per_m = 0.4
[models.embed-local]
provider = "up-ollama"
model_id = "nomic-embed-text"
kind = "embedding"
local = true
[models.embed-cloud]
provider = "up-openai"
model_id = "m-emb-o"
kind = "embedding"
input_per_m = 0.02
"""
pytestmark = pytest.mark.usefixtures("clean_fake")
PREFIX, SUFFIX = "def add(a, b):\n    ", "\n    return total\n"
# texts a byte template could get wrong
AWKWARD = [
    "",
    "x",
    'say "hi"',
    "back\\slash \\n \\u0041",
    "line\nbreak\ttab\r\x00\x01\x1f\x7f",
    "é ß 漢字 🙂 \u2028\u2029",
    "</script>&<>'",
    '{"done":true}',
    " " * 3,
]


def vector(text: str) -> list[float]:
    """What the fake upstream embeds `text` as."""
    return [float(len(text)), float(ord(text[0])), 1.5]


@pytest.fixture
def client(daemon: Daemon) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    yield sdk
    sdk.close()


@pytest.fixture
def local(daemon: Daemon) -> Iterator[ollama.Client]:
    client = ollama.Client(host=daemon.url, timeout=20)
    yield client
    client.close()


def test_fill_in_the_middle_goes_to_the_local_fim_model_first(
    client: openai.OpenAI, fake: FakeUpstream, daemon: Daemon
) -> None:
    fake.script("m-fim-l", Reply(text="total = a + b"))
    answer = client.completions.create(model="auto", prompt=PREFIX, suffix=SUFFIX, max_tokens=32)
    assert answer.choices[0].text == "total = a + b" and answer.model == "coder-local"
    (seen,) = fake.seen
    assert seen.path == "/api/generate" and seen.model == "m-fim-l"
    assert (seen.body["prompt"], seen.body["suffix"]) == (PREFIX, SUFFIX)  # never made a chat
    assert seen.body["options"]["num_predict"] == 32
    line = daemon.wait_log(answer.id.removeprefix("cmpl-"))
    assert line["rule"] == "completions" and line["chain"] == ["coder-local:ok"]
    assert line["tokens_out"] == 5  # "total = a + b": five words from the fake


def test_a_streamed_completion_and_its_fallback(client: openai.OpenAI, fake: FakeUpstream) -> None:
    fake.script("m-fim-l", Reply(kind="status", status=503))
    fake.script("m-fim-o", Reply(text="total = a + b"))
    stream = client.completions.create(
        model="auto", prompt=PREFIX, suffix=SUFFIX, stream=True, max_tokens=32
    )
    pieces = [chunk.choices[0].text for chunk in stream if chunk.choices]
    assert "".join(pieces) == "total = a + b" and len(pieces) > 1
    assert [s.path for s in fake.seen] == ["/api/generate", "/v1/completions"]
    assert fake.seen[1].body["suffix"] == SUFFIX and fake.seen[1].body["model"] == "m-fim-o"


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_generate_with_a_suffix_reaches_an_openai_upstream(
    local: ollama.Client, fake: FakeUpstream, stream: bool
) -> None:
    fake.script("m-fim-o", Reply(text="total = a + b"))
    if stream:
        parts = local.generate(model="coder-cloud", prompt=PREFIX, suffix=SUFFIX, stream=True)
        text = "".join(p.response for p in parts)
    else:
        text = local.generate(model="coder-cloud", prompt=PREFIX, suffix=SUFFIX).response
    assert text == "total = a + b"
    (seen,) = fake.seen
    assert seen.path == "/v1/completions" and seen.body["suffix"] == SUFFIX


def test_a_completion_for_a_chat_model_is_refused_plainly(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="chat", prompt=PREFIX)
    assert "supports_fim = true" in str(raised.value)


def test_openai_embeddings_in_order_and_recorded(
    client: openai.OpenAI, fake: FakeUpstream, daemon: Daemon
) -> None:
    texts = ["alpha beta", "z"]
    for encoding in ("float", "base64"):  # the SDK asks for base64 unless told otherwise
        result = client.embeddings.create(
            model="embed-cloud",
            input=texts,
            encoding_format=encoding,  # type: ignore[arg-type]
        )
        got = [d.embedding for d in result.data]
        if encoding == "base64":  # asked for explicitly, the SDK hands it over packed
            got = [list(struct.unpack("<3f", base64.b64decode(str(v)))) for v in got]
        assert got == [vector(t) for t in texts]
        assert result.model == "embed-cloud" and result.usage.prompt_tokens == 3
    assert all(s.body["encoding_format"] == "float" for s in fake.seen)  # floats from upstream
    lines = [x for x in daemon.log_lines() if x.get("rule") == "embeddings"]
    assert lines and lines[-1]["chain"] == ["embed-cloud:ok"] and lines[-1]["tokens_in"] == 3


def test_ollama_embed_and_the_older_embeddings(local: ollama.Client, fake: FakeUpstream) -> None:
    # Open WebUI and Continue name the model by its id: that names its alias too
    embedded = local.embed(model="nomic-embed-text", input=["hello", "you"])
    assert [list(v) for v in embedded.embeddings] == [vector("hello"), vector("you")]
    legacy = local.embeddings(model="embed-local", prompt="hello")
    assert list(legacy.embedding) == vector("hello")
    assert [s.path for s in fake.seen] == ["/api/embed", "/api/embed"]


def test_chat_never_goes_to_an_embedding_or_fim_only_model(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    answer = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.model in ("chat", "coder-local", "coder-cloud")
    assert not any(s.model.startswith("m-emb") or s.model == "nomic-embed-text" for s in fake.seen)
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="chat", input="x")
    assert 'kind = "embedding"' in str(raised.value)


def test_the_catalogs_say_what_each_alias_serves(
    client: openai.OpenAI, local: ollama.Client
) -> None:
    listed = {m.id: m.model_dump() for m in client.models.list()}
    assert listed["embed-cloud"]["capabilities"] == ["embedding"]
    assert listed["coder-local"]["capabilities"] == ["completion", "insert"]
    assert listed["auto"]["type"] == "model" and listed["auto"]["context_window"] is None
    shown = local.show("coder-local")
    assert list(shown.capabilities or []) == ["completion", "insert"]
    running = {m.model for m in local.ps().models}
    assert running == {"chat", "coder-local", "coder-cloud", "embed-local", "embed-cloud"}


# ---------------------------------------------------------------------------------------------
# Streams: byte templates, and the relay's behaviour around them


@pytest.mark.parametrize("text", AWKWARD)
@pytest.mark.parametrize("finish", [None, "stop", "length"])
def test_streamed_pieces_are_byte_for_byte_what_the_general_encoders_write(
    text: str, finish: str | None
) -> None:
    piece = TextAnswer(text, finish, Usage(3, 4) if finish else None)
    chunks = textgen.CompletionChunks('co"der\\é', 'rid"\\1', 1_700_000_000)
    general = textgen.completion_chunk(
        piece, alias='co"der\\é', request_id='rid"\\1', created=1_700_000_000
    )
    assert chunks.encode(piece) == (general if text or finish else b"")
    lines = textgen.GenerateLines('co"der\\é')
    while True:  # the general encoder reads the clock itself: compared within one second
        second = int(time.time())
        fast = lines.encode(piece)
        general = textgen.encode_generate(piece, alias='co"der\\é', done=False) + b"\n"
        if int(time.time()) == second:
            break
    assert fast == (general if text else b"")
    last = TextAnswer("", finish or "stop", piece.usage)
    assert lines.end(last) == textgen.encode_generate(last, alias='co"der\\é') + b"\n"
    assert chunks.end(last) == b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("chunk", "read"),
    [
        ({"choices": [{"text": 'é"', "index": 0, "finish_reason": None}]}, TextAnswer('é"')),
        ({"choices": [{"text": "", "finish_reason": None}]}, TextAnswer("")),
        ({"choices": [{"finish_reason": None}]}, TextAnswer("")),  # no text: the checks say ""
        ({"choices": [{"text": "a", "finish_reason": "length"}]}, TextAnswer("a", "length")),
        ({"choices": [{"text": "a", "finish_reason": ""}]}, TextAnswer("a")),
        (
            {"choices": [{"text": "a"}], "usage": {"prompt_tokens": 2, "completion_tokens": 1}},
            TextAnswer("a", None, Usage(2, 1)),
        ),
        ({"choices": [], "usage": None}, TextAnswer("")),
        ({"choices": [{"text": "a"}, {"text": "b"}]}, TextAnswer("a")),
    ],
)
def test_a_text_chunk_reads_the_same_by_the_fast_path_or_the_checks(
    chunk: dict[str, object], read: TextAnswer
) -> None:
    assert textgen.completion_answer(chunk, "up") == read


def _stream(daemon: Daemon, path: str, body: dict[str, object]) -> tuple[str, bytes]:
    """A streamed POST read to its end: (request id, body)."""
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        return response.getheader("x-pirouter-request-id") or "", response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("model", "model_id"), [("coder-local", "m-fim-l"), ("coder-cloud", "m-fim-o")]
)
def test_an_ollama_stream_ends_with_the_counts_whichever_upstream(
    daemon: Daemon, fake: FakeUpstream, model: str, model_id: str
) -> None:
    words = ' "quoted" back\\slash é\n' * 30  # many pieces, several to an upstream read
    fake.script(model_id, Reply(text=words, usage=(11, 90)))
    rid, body = _stream(daemon, "/api/generate", {"model": model, "prompt": PREFIX})
    lines = [json.loads(line) for line in body.splitlines()]
    assert "".join(x["response"] for x in lines) == words
    assert not any(x["done"] for x in lines[:-1]) and all(x["model"] == model for x in lines)
    assert lines[-1] == lines[-1] | {"done": True, "done_reason": "stop", "response": ""}
    assert (lines[-1]["prompt_eval_count"], lines[-1]["eval_count"]) == (11, 90)
    line = daemon.wait_log(rid)
    assert line["status"] == "ok" and (line["tokens_in"], line["tokens_out"]) == (11, 90)


@pytest.mark.parametrize("path", ["/v1/completions", "/api/generate"])
def test_an_upstream_failing_mid_stream_ends_it_with_an_error_in_the_clients_protocol(
    daemon: Daemon, fake: FakeUpstream, path: str
) -> None:
    fake.script("m-fim-o", Reply(text="one two three four five", kind="cut", chunks=3))
    body = {"model": "coder-cloud", "prompt": PREFIX, "stream": True}
    rid, data = _stream(daemon, path, body)
    if path == "/api/generate":
        *pieces, error = [json.loads(line) for line in data.splitlines()]
        assert "".join(p["response"] for p in pieces) == "one two three "
        assert isinstance(error["error"], str) and error["error"]
    else:
        events = [e.removeprefix("data: ") for e in data.decode().split("\n\n") if e]
        *chunks, error = [json.loads(e) for e in events]
        assert "".join(c["choices"][0]["text"] for c in chunks) == "one two three "
        assert error["error"]["type"] == "upstream_error"
    assert len(fake.seen) == 1  # committed at the first piece: no fallback after it
    line = daemon.wait_log(rid)
    assert line["status"] == "upstream_error" and line["chain"] == ["coder-cloud:stream_error"]


@pytest.mark.parametrize("path", ["/v1/completions", "/api/generate"])
def test_a_client_leaving_a_completion_stream_closes_the_upstream(
    daemon: Daemon, fake: FakeUpstream, path: str
) -> None:
    fake.script("m-fim-o", Reply(text=" ".join(["word"] * 200), chunk_delay=0.05))
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = {"model": "coder-cloud", "prompt": PREFIX, "stream": True}
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    rid = response.getheader("x-pirouter-request-id") or ""
    assert response.read1(64)  # the stream started
    conn.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not fake.seen[0].finished:
        time.sleep(0.02)
    assert fake.seen[0].cancelled, "the upstream request was not cancelled"
    line = daemon.wait_log(rid)  # recorded with the tokens spent so far, estimated
    assert line["status"] == "client_cancelled" and line["chain"] == [
        "coder-cloud:client_cancelled"
    ]
    assert line["tokens_in"] > 0 and line["tokens_out"] > 0


@pytest.mark.parametrize("path", ["/v1/completions", "/api/generate"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_every_body_and_piece_is_the_sdks_own_type_strictly(
    daemon: Daemon, fake: FakeUpstream, path: str, stream: bool
) -> None:
    """What the byte templates write is read with the official SDKs' types, strictly (a key the
    type lacks, or one it requires missing, fails by its path): OpenAI's `Completion` for the
    body and each streamed chunk, Ollama's `GenerateResponse` for the body and each line. The
    text is the awkward one a template could get wrong."""
    awkward = 'say "hi" back\\slash é 🙂'
    fake.script("m-fim-l", Reply(text=awkward))
    body = {"model": "auto", "prompt": PREFIX, "suffix": SUFFIX, "stream": stream}
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    assert response.status == 200, raw
    check = Check(f"{path} {'stream' if stream else 'whole'}")
    if path == "/api/generate":
        pieces = [json.loads(line) for line in raw.splitlines() if line.strip()]
        read = [
            check.conform(ollama.GenerateResponse, p, f"line {n}") for n, p in enumerate(pieces)
        ]
        text = "".join(r.response or "" for r in read)
        check.that(bool(read[-1].done), "the last line is done")
    else:
        datas = [d for _, d in sse(raw)] if stream else [raw.decode()]
        assert not stream or datas[-1] == "[DONE]"
        chunks = [json.loads(d) for d in datas if d != "[DONE]"]
        # A streamed chunk before the last has `"finish_reason": null`, as OpenAI's server (and
        # vLLM's, llama.cpp's) writes it; openai-python types every chunk as a `Completion`,
        # whose finish_reason may not be null. Checked here, then read as the last one is.
        finishes = [choice["finish_reason"] for c in chunks for choice in c["choices"]]
        check.eq("the finish reasons", finishes, [None] * (len(finishes) - 1) + ["stop"])
        for c in chunks:
            c["choices"] = [{**choice, "finish_reason": "stop"} for choice in c["choices"]]
        read = [check.conform(Completion, c, f"chunk {n}") for n, c in enumerate(chunks)]
        text = "".join(choice.text for r in read for choice in r.choices)
    check.eq("the text", text.replace(" ", ""), awkward.replace(" ", ""))
    check.settle()
