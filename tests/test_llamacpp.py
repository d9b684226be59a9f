"""A real llama.cpp server behind pirouter, spoken to in every inbound protocol.

The model is tiny and random (tests/llamacpp.py), so its words are noise; what is checked is what
only the real server can show: its chunks (a first delta with `content: null`), its usage chunk
with `timings` and cached prompt tokens, its finish reasons, and the errors it answers with (an
image it has no projector for, a prompt longer than its context). Every body and event the
client gets is read with the official SDK's types (`test_sdk_types`'s readers: strict
validation, unknown and missing keys by path). Tool calls and JSON schemas are not tried here:
llama.cpp turns them into grammars its sampler cannot start on this byte-level vocabulary.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from tests import llamacpp
from tests.conftest import need
from tests.fakes import Daemon
from tests.test_sdk_types import CLIENTS, Ask, Check, Turn, View, send

SERVER = llamacpp.binary()
pytestmark = need(
    "llama-server",
    SERVER,
    "bash .ci/build-llama-server (builds /opt/llama.cpp/llama-server; or set LLAMA_SERVER)",
)
CONFIG = """
[ledger]
path = "{ledger}"
[providers.llama]
type = "openai"
base_url = "{url}"
[models.tiny]
provider = "llama"
model_id = "tiny"
supports_tools = true
supports_vision = true
"""  # no context_window: the router lets a long prompt through, for llama.cpp to refuse
MAX_TOKENS = {"chat": "max_tokens", "responses": "max_output_tokens", "anthropic": "max_tokens"}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert SERVER is not None
    where = tmp_path_factory.mktemp("llama")
    model = llamacpp.tiny_model(where / "tiny.gguf")
    with llamacpp.serving(SERVER, model, where / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def daemon(llama: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    where = tmp_path_factory.mktemp("llama-daemon")
    config = where / "config.toml"
    config.write_text(CONFIG.format(url=llama, ledger=where / "ledger.db"))
    started = Daemon(config).start()
    yield started
    started.stop()


def ask(
    daemon: Daemon,
    inbound: str,
    stream: bool,
    *,
    tokens: int = 16,
    image: bool = False,
    text: str = "hello",
) -> tuple[View, Check]:
    """One request in the client's protocol, its answer read with the SDK's types."""
    client = CLIENTS[inbound]
    body = client.body(Ask([Turn("user", text, image=image)], stream=stream))
    if inbound == "ollama":
        body["options"] = {"num_predict": tokens}
    else:
        body[MAX_TOKENS[inbound]] = tokens
    # "<-openai": an OpenAI-type upstream, whose own additions (`timings`) are passed through
    check = Check(f"{inbound}<-openai (llama.cpp) {'stream' if stream else 'whole'}")
    status, headers, raw = send(daemon, client.path, body, "tiny")
    view = client.read(check, status, headers, raw)
    check.settle()  # every body and event as the SDK's types have it
    return view, check


INBOUND = list(CLIENTS)
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


@pytest.mark.parametrize("inbound", INBOUND)
@STREAM
def test_text_usage_and_length(daemon: Daemon, inbound: str, stream: bool) -> None:
    """Noise, cut at 16 tokens (or ended by the model): counted as llama.cpp counted it."""
    view, _ = ask(daemon, inbound, stream)
    assert view.error is None and view.status == 200
    assert view.stop in ("stop", "length"), view.stop
    assert view.usage is not None
    prompt, answer = view.usage
    assert prompt and prompt > 0 and answer is not None and 0 < answer <= 16, view.usage
    if view.stop == "length":
        assert answer == 16


@pytest.mark.parametrize("inbound", INBOUND)
def test_an_image_llamacpp_cannot_read_is_its_error_in_the_clients_protocol(
    daemon: Daemon, inbound: str
) -> None:
    """No vision projector loaded: llama.cpp refuses the image, and the client reads why."""
    view, _ = ask(daemon, inbound, False, image=True)
    assert view.status >= 400 and view.error, view
    assert "image" in view.error.lower(), view.error


@pytest.mark.parametrize("inbound", INBOUND)
def test_a_prompt_past_its_context_is_its_error_in_the_clients_protocol(
    daemon: Daemon, inbound: str
) -> None:
    """llama.cpp answers 400 `exceed_context_size_error` (its own error type) for a prompt past
    its context: the client reads that, in its protocol."""
    view, _ = ask(daemon, inbound, False, text="many words " * 400)
    assert view.status >= 400 and view.error, view
    assert "context" in view.error.lower(), view.error
    # a request too long for it says nothing of the model's health: it is not cooling
    with urllib.request.urlopen(daemon.url + "/health", timeout=5) as answer:
        health = json.load(answer)
    assert not health.get("models", {}).get("tiny", {}).get("cooling"), health
