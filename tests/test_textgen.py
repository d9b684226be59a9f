"""Text completions (fill-in-the-middle) and embeddings through the daemon, driven by the official
`openai` and `ollama` clients, answered by OpenAI- and Ollama-type upstreams."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import ollama
import openai
import pytest

from tests.fakes import Daemon, FakeUpstream, Reply

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
