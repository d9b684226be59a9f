"""LiteLLM's proxy as a bench target beside pirouter, on the inbound paths it serves.

It is installed at a pinned version (`VERSION`) into a venv of its own outside the project's
(`HOME`, made once and reused; `.installed` in it marks a finished install), configured as its
users configure it (`litellm --config cfg.yaml --port P`, default workers), with the least logging
it offers. Invariants:
- It sends nothing beyond loopback: every file it would fetch at start-up (the model cost map,
  Anthropic's beta headers, blog posts, autorouter presets, policy templates) is read from its
  bundled copy (`ENV`); no database, no callbacks, no proxies; its environment holds only `ENV`
  and a few system variables, and it runs in the bench's temporary folder (it would load a
  `.env` from its working folder).
- No master key: like pirouter on loopback it authenticates nobody (it refuses to start without
  one unless told `dangerously_permit_weak_or_unset_master_key`).
- A proxy that cannot be installed, started, or fails a path's check is a reason (a string),
  never an exception: the rest of the bench runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from loadgen import ROUTES
from upstream import TEXT

# A release whose `[proxy]` extra installs from PyPI: 1.108.14, 1.109.3 and 1.110.2 (the newest
# on 2026-12-07) pin releases of litellm-proxy-extras or litellm-proxy that PyPI does not have
VERSION = "1.106.12"
HOME = Path.home() / ".cache" / "pirouter-bench" / f"litellm-{VERSION}"
INSTALL_TIMEOUT = 900.0
# Its first start compiles its modules to bytecode (35 s here); later starts take 10-15 s
START_TIMEOUT = 150.0
ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOG": "ERROR",  # also uvicorn's level: no access log line per request
    "NO_PROXY": "127.0.0.1,localhost",
}
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
SETTINGS: dict[str, Any] = {
    "litellm_settings": {"set_verbose": False, "json_logs": False, "callbacks": []},
    "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
}
# The upstream each proxy calls: its model (provider/name) and api_base under the fake upstream's
# root (LiteLLM's OpenAI client adds /chat/completions or /responses, its Anthropic one
# /v1/messages)
KINDS = {"openai": ("openai/bench-model", "/v1"), "anthropic": ("anthropic/bench-model", "")}
# What a stream of each inbound path ends with: a check sees the whole of it
STREAM_ENDS = {"chat": "[DONE]", "messages": "message_stop", "responses": "response.completed"}
STREAM_TEXT = "word "  # each of the upstream's deltas


def install() -> Path | str:
    """The `litellm` program, installed first if need be; or why it could not be."""
    program = HOME / "bin" / "litellm"
    mark = HOME / ".installed"
    if mark.exists() and program.exists():
        return program
    shutil.rmtree(HOME, ignore_errors=True)  # a half-made venv from an interrupted install
    print(f"installing LiteLLM {VERSION} into {HOME} (once)", file=sys.stderr, flush=True)
    pip = [str(HOME / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(HOME)], check=True, capture_output=True, timeout=120
        )
        subprocess.run(
            [*pip, "--disable-pip-version-check", f"litellm[proxy]=={VERSION}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(HOME, ignore_errors=True)
        errors = [ln for ln in str(exc.stderr or "").splitlines() if ln.startswith("ERROR")]
        return f"pip install litellm[proxy]=={VERSION}: " + (errors[-1] if errors else str(exc))
    except (subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(HOME, ignore_errors=True)
        return f"pip install litellm[proxy]=={VERSION}: {exc}"
    mark.write_text(VERSION)
    return program


def environment() -> dict[str, str]:
    """`ENV` and the few system variables a process needs; nothing else of ours."""
    return {key: os.environ[key] for key in KEPT_ENV if key in os.environ} | ENV


def config(folder: Path, upstream: str, kind: str) -> Path:
    """A config whose one model, "auto" (what the load generator asks for), calls the fake
    upstream as a `kind` provider. JSON, which YAML reads."""
    model, suffix = KINDS[kind]
    params = {"model": model, "api_base": upstream + suffix, "api_key": "k"}
    path = folder / f"litellm-{kind}.yaml"
    path.write_text(
        json.dumps({"model_list": [{"model_name": "auto", "litellm_params": params}], **SETTINGS})
    )
    return path


def command(program: Path, config: Path, port: int | str) -> list[str]:
    return [str(program), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]


@contextmanager
def proxy(
    program: Path, config: Path, port: int, folder: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """One proxy in a process group of its own, its stderr in a file in `folder` (the reason,
    when it does not come up); stopped (the group) at the end."""
    log = folder / f"{config.stem}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            command(program, config, port),
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=folder,
            env=environment(),
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the proxy's group, then SIGKILL to what is left of it: a worker its leader
    left behind, or all of it after 15 s."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(15)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> str | None:
    """Wait until the proxy answers `/health/liveliness`; None, or why it did not."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            return f"exited with {proc.returncode}: {lines[-1] if lines else 'no output'}"
        try:
            urllib.request.urlopen(url + "/health/liveliness", timeout=2).close()
            return None
        except OSError:
            time.sleep(0.2)
    return f"did not answer within {START_TIMEOUT:g} s"


def seen(upstream: str) -> dict[str, int]:
    with urllib.request.urlopen(upstream + "/seen", timeout=5) as response:
        return dict(json.load(response)["hits"])


def check(url: str, route: str, stream: bool, upstream: str) -> tuple[str | None, list[str]]:
    """One request on an inbound path as the load generator sends it: (None when the answer is
    200 with the upstream's text, else what went wrong; the upstream paths it called)."""
    path, body = ROUTES[route]
    before = seen(upstream)
    request = urllib.request.Request(
        url + path,
        data=json.dumps({**body, "stream": stream}).encode(),
        headers={"content-type": "application/json"},
    )
    error = None
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode(errors="replace")
        if stream and (STREAM_TEXT not in text or STREAM_ENDS[route] not in text):
            error = f"200 but the stream lacks {STREAM_TEXT!r} or {STREAM_ENDS[route]!r}"
        elif not stream and TEXT not in text:
            error = f"200 but no {TEXT!r} in {text[:120]!r}"
    except urllib.error.HTTPError as exc:
        answer = exc.read().decode(errors="replace").replace("\n", " ")
        error = f"{exc.code}: {answer[:200]}"
    except OSError as exc:
        error = str(exc)
    after = seen(upstream)
    called = sorted(p for p, n in after.items() if n > before.get(p, 0))
    return error, called


def start(
    stack: ExitStack, folder: Path, upstream: str, ports: dict[str, int]
) -> tuple[dict[str, tuple[str, int]], dict[str, Any]]:
    """Install if need be and start one proxy per upstream kind on its port (together: each
    takes seconds to come up), on `stack`. Returns ({kind: (url, pid)} of those up, what to
    record: version, settings, and why each that is not up is not ("not installed: ...")."""
    info: dict[str, Any] = {
        "version": VERSION,
        "venv": str(HOME),
        "env": ENV,
        "settings": SETTINGS,
        "models": {kind: KINDS[kind][0] for kind in ports},
        "workers": "default (1)",
        "failed": {},
    }
    program = install()
    if isinstance(program, str):
        info["failed"] = dict.fromkeys(ports, f"not installed: {program}")
        return {}, info
    info["command"] = " ".join(command(Path("litellm"), Path("litellm-KIND.yaml"), "PORT"))
    started = {}
    began = time.monotonic()
    for kind, port in ports.items():
        cfg = config(folder, upstream, kind)
        proc = stack.enter_context(proxy(program, cfg, port, folder))
        started[kind] = (f"http://127.0.0.1:{port}", proc, folder / f"{cfg.stem}.log")
    up = {}
    for kind, (url, proc, log) in started.items():
        why = ready(proc, url, log)
        if why is None:
            up[kind] = (url, proc.pid)
        else:
            info["failed"][kind] = f"did not start: {why}"
    info["start_s"] = round(time.monotonic() - began, 1)
    return up, info
