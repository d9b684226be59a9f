"""The first five minutes: `pirouter init` against fake Ollama and OpenAI-compatible servers on
loopback and a set of key variables; `models add|enable|disable` and `config set` editing a
commented file in place (byte for byte outside the edited lines); validation that reports every
error and warning at once; the providers' probe at `run` start."""

from __future__ import annotations

import difflib
import os
import pty
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.config import init as finder
from pirouter_py.config import load_config
from tests.fakes import Daemon, FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
CLOUD_VARS = [env for _, _, _, env, _, _ in finder.CLOUDS]


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    """A fake Ollama (at $OLLAMA_HOST) and a fake LM Studio (in place of its default port);
    the other default ports are closed ones; no cloud variable is set."""
    ollama, studio = FakeUpstream(), FakeUpstream()
    ollama.listed = {
        "llama3.2:3b": ["completion"],
        "qwen2.5-coder:14b": ["completion", "tools"],
        "llama3.3:70b": ["completion", "tools", "vision"],
        "nomic-embed-text:latest": ["embedding"],
    }
    studio.listed = {"qwen2.5-7b-instruct": [], "text-embedding-nomic-embed-text-v1.5": []}
    ollama.start()
    studio.start()
    for env in CLOUD_VARS:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("OLLAMA_HOST", ollama.url.removeprefix("http://"))
    monkeypatch.setattr(
        finder,
        "LOCAL_SERVERS",
        (
            ("lmstudio", "LM Studio", studio.url),
            ("llamacpp", "llama.cpp server", f"http://127.0.0.1:{closed_port()}"),
        ),
    )
    yield ollama, studio
    ollama.stop()
    studio.stop()


def test_init_writes_what_it_found_and_it_loads(
    servers: tuple[FakeUpstream, FakeUpstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ollama, studio = servers
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-written")
    monkeypatch.setenv("OPENROUTER_API_KEY", "or-test-never-written")
    target = tmp_path / "conf" / "config.toml"
    result = CliRunner().invoke(app, ["init", "--yes", "-c", str(target)])
    assert result.exit_code == 0, result.output
    assert f"wrote {target}: 4 providers, 10 models" in result.stdout
    assert (target.stat().st_mode & 0o777) == 0o600
    text = target.read_text()
    assert "never-written" not in text  # keys stay in the environment
    loaded = load_config(target)
    assert loaded.warnings == ()
    cfg = loaded.config
    assert sorted(cfg.providers) == ["lmstudio", "ollama", "openai", "openrouter"]
    assert cfg.providers["ollama"].url == ollama.url
    assert cfg.providers["lmstudio"].kind == "openai" and cfg.providers["lmstudio"].url == (
        studio.url
    )
    assert cfg.providers["lmstudio"].key_envs == ()  # keyless: nothing is sent
    assert cfg.providers["openrouter"].key_envs == ("OPENROUTER_API_KEY",)
    models = {a: cfg.models[a] for a in cfg.models}
    assert {a: (m.model_id, m.quality) for a, m in models.items() if m.provider == "ollama"} == {
        "llama3.2-3b": ("llama3.2:3b", "basic"),
        "qwen2.5-coder-14b": ("qwen2.5-coder:14b", "standard"),
        "llama3.3-70b": ("llama3.3:70b", "strong"),
        "nomic-embed-text-latest": ("nomic-embed-text:latest", "standard"),
    }
    assert models["qwen2.5-coder-14b"].supports_tools and models["qwen2.5-coder-14b"].local
    assert models["qwen2.5-coder-14b"].context_window == 32768  # from /api/show
    assert models["llama3.3-70b"].supports_vision
    assert not models["llama3.2-3b"].supports_tools
    assert models["nomic-embed-text-latest"].kind == "embedding"
    assert models["text-embedding-nomic-embed-text-v1.5"].kind == "embedding"
    assert models["qwen2.5-7b-instruct"].provider == "lmstudio"
    assert models["gpt-4.1"].input_per_m == 2.0 and models["gpt-4.1"].quality == "strong"
    assert models["or-claude-sonnet"].provider == "openrouter"
    assert cfg.routing.turns and cfg.affinity.enabled
    assert [r.name for r in cfg.rules] == ["explicit-override"]
    assert "/api/tags" in ollama.listings and "/v1/models" in studio.listings


def test_init_print_is_the_golden_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing local answers; OpenAI's and Anthropic's variables are set."""
    for env in CLOUD_VARS:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{closed_port()}")
    monkeypatch.setattr(finder, "LOCAL_SERVERS", ())
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "y")
    result = CliRunner().invoke(app, ["init", "--print"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / "init-print.toml").read_text()
    assert "found OpenAI: $OPENAI_API_KEY is set: 2 models" in result.stderr


def test_init_with_nothing_found_writes_ollama_defaults_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for env in CLOUD_VARS:
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{closed_port()}")
    monkeypatch.setattr(finder, "LOCAL_SERVERS", ())
    target = tmp_path / "config.toml"
    first = CliRunner().invoke(app, ["init", "-c", str(target)])
    assert first.exit_code == 0, first.output
    assert "found no local model server" in first.stderr
    assert sorted(load_config(target).config.models) == ["llama3.2-local", "qwen2.5-coder-local"]
    target.write_text(target.read_text() + "# my own note\n")
    before = target.read_text()
    again = CliRunner().invoke(app, ["init", "-c", str(target)])
    assert again.exit_code == 1
    assert f"{target} exists" in again.stderr and "--force" in again.stderr
    assert target.read_text() == before
    forced = CliRunner().invoke(app, ["init", "--force", "-c", str(target)])
    assert forced.exit_code == 0, forced.output
    backups = list(tmp_path.glob("config.toml.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == before
    assert "# my own note" not in target.read_text()


def test_init_on_a_terminal_asks_for_each_provider(
    servers: tuple[FakeUpstream, FakeUpstream], tmp_path: Path
) -> None:
    """Run in a pseudo-terminal: no to Ollama, yes to LM Studio."""
    target = tmp_path / "config.toml"
    code = (
        "import sys; from pirouter_py.config import init as f; "
        f"f.LOCAL_SERVERS = (('lmstudio', 'LM Studio', {servers[1].url!r}),); "
        "from pirouter_py.cli import main; sys.argv = ['pirouter', 'init', '-c', sys.argv[1]]; "
        "main()"
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(target)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=os.environ.copy(),
        cwd=ROOT,
    )
    os.close(slave)
    seen = b""
    answers = [b"n\n", b"y\n"]
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
        if answers and seen.count(b"[Y/n]") > 2 - len(answers):
            os.write(master, answers.pop(0))
    proc.wait(10)
    os.close(master)
    assert proc.returncode == 0, seen.decode()
    assert b"Use Ollama answering at" in seen and b"Use LM Studio answering at" in seen
    assert sorted(load_config(target).config.providers) == ["lmstudio"]


EXAMPLE = (ROOT / "config.example.toml").read_text()


def only_changes(before: str, after: str) -> list[str]:
    """The lines removed (-) and added (+) between two texts."""
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), n=0, lineterm="")
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


@pytest.fixture
def commented(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(EXAMPLE)
    path.chmod(0o640)
    return path


def test_config_set_changes_one_line_and_keeps_every_comment(commented: Path) -> None:
    result = CliRunner().invoke(
        app, ["config", "set", "routing.profile", "best-quality", "-c", str(commented)]
    )
    assert result.exit_code == 0, result.output
    assert only_changes(EXAMPLE, commented.read_text()) == [
        '-profile = "balanced"',
        '+profile = "best-quality"',
    ]
    assert (commented.stat().st_mode & 0o777) == 0o640
    assert load_config(commented).config.routing.profile == "best-quality"
    # a quoted alias with a dot; a number
    result = CliRunner().invoke(
        app,
        ["config", "set", 'models."gpt-4o-mini".input_per_m', "0.2", "-c", str(commented)],
    )
    assert result.exit_code == 0, result.output
    assert load_config(commented).config.models["gpt-4o-mini"].input_per_m == 0.2
    assert only_changes(EXAMPLE, commented.read_text()) == [
        "-input_per_m = 0.15",
        "+input_per_m = 0.2",
        '-profile = "balanced"',
        '+profile = "best-quality"',
    ]


def test_an_edit_that_breaks_the_file_is_refused_and_writes_nothing(commented: Path) -> None:
    result = CliRunner().invoke(
        app, ["config", "set", "models.haiku.quality", "supreme", "-c", str(commented)]
    )
    assert result.exit_code == 3
    assert commented.read_text() == EXAMPLE
    assert f"not changed: the edit would leave {commented} invalid" in result.stderr
    assert f"error: {commented}:" in result.stderr
    assert 'models.haiku.quality: "supreme" is not one of basic' in result.stderr


def test_models_add_disable_enable_round_trip(commented: Path) -> None:
    run = CliRunner().invoke
    added = run(
        app,
        [
            *("models", "add", "groq-70b", "--provider", "openai", "--model-id"),
            *("llama-3.3-70b", "--quality", "strong", "--input-per-m", "0.59"),
            *("--output-per-m", "0.79", "--tools", "-c", str(commented)),
        ],
    )
    assert added.exit_code == 0, added.output
    after_add = commented.read_text()
    changes = only_changes(EXAMPLE, after_add)
    assert all(line.startswith("+") for line in changes)  # nothing of the file changed
    assert "+[models.groq-70b]" in changes and '+model_id = "llama-3.3-70b"' in changes
    model = load_config(commented).config.models["groq-70b"]
    assert (model.quality, model.output_per_m, model.supports_tools) == ("strong", 0.79, True)
    assert run(app, ["models", "disable", "groq-70b", "-c", str(commented)]).exit_code == 0
    assert not load_config(commented).config.models["groq-70b"].enabled
    assert only_changes(after_add, commented.read_text()) == ["+enabled = false"]
    assert run(app, ["models", "enable", "groq-70b", "-c", str(commented)]).exit_code == 0
    assert only_changes(after_add, commented.read_text()) == ["+enabled = true"]
    again = run(app, ["models", "add", "groq-70b", "--provider", "openai", "--model-id", "x",
                      "-c", str(commented)])  # fmt: skip
    assert again.exit_code == 3 and "model `groq-70b` already exists" in again.stderr
    missing = run(app, ["models", "disable", "sonet", "-c", str(commented)])
    assert missing.exit_code == 3 and "no model `sonet`" in missing.stderr
    assert "did you mean `sonnet`" in missing.stderr
    unknown = run(
        app,
        ["models", "add", "x", "--provider", "nope", "--model-id", "m", "-c", str(commented)],
    )
    assert unknown.exit_code == 3 and "provider `nope` is not configured" in unknown.stderr


def test_models_lists_the_catalog_without_a_subcommand(commented: Path) -> None:
    result = CliRunner().invoke(app, ["models", "--json", "-c", str(commented)])
    assert result.exit_code == 0, result.output
    assert "haiku" in result.stdout and '"enabled": true' in result.stdout


def test_every_error_and_warning_at_once_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(
        "[model.extra]\n"  # 1: singular: a warning with its hint, shown with the errors
        'provider = "x"\n'
        "[providers.fake]\n"
        'type = "openai"\n'
        'base_url = "http://127.0.0.1:9"\n'
        "[models.cheap]\n"
        'provider = "fake"\n'
        'model_id = "m"\n'
        'quality = "supreme"\n'  # 9: a type error...
        "[[rules]]\n"
        'name = "r"\n'
        "when = { stream = false }\n"
        'then = { primary = "cheap", cascade = ["nope"] }\n'  # 13: ...and a semantic one
    )
    result = CliRunner().invoke(app, ["check-config", "-c", str(path)])
    assert result.exit_code == 3
    assert result.stderr.splitlines() == [
        f"warning: {path}:1: model: unknown key, ignored (did you mean `models`?)",
        f'error: {path}:9: models.cheap.quality: "supreme" is not one of basic, standard, '
        "strong, premium",
        f"error: {path}:13: rules[0].then.cascade: rule `r` references unknown model alias `nope`",
    ]


def test_run_probes_each_provider_once_and_says_how_it_is(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.reset()
    fake.refused_keys["bad-key"] = 401
    config = tmp_path / "config.toml"
    config.write_text(
        f'[providers.good]\ntype = "openai"\nbase_url = "{fake.url}"\napi_key = "good-key"\n'
        f'[providers.bad]\ntype = "openai"\nbase_url = "{fake.url}"\napi_key = "bad-key"\n'
        f'[providers.nokey]\ntype = "anthropic"\nbase_url = "{fake.url}"\n'
        'api_key_env = "PIROUTER_TEST_NEVER_SET"\n'
        f'[providers.gone]\ntype = "ollama"\nbase_url = "http://127.0.0.1:{closed_port()}"\n'
        '[models.a]\nprovider = "good"\nmodel_id = "m-cheap"\n'
        '[models.b]\nprovider = "bad"\nmodel_id = "m-cheap"\n'
        '[models.c]\nprovider = "nokey"\nmodel_id = "m-cheap"\n'
        '[models.d]\nprovider = "gone"\nmodel_id = "m-cheap"\n'
    )
    config.chmod(0o600)
    daemon = Daemon(config).start()
    try:
        deadline = time.monotonic() + 10
        while sum("  provider " in line for line in daemon.stderr) < 4:
            assert time.monotonic() < deadline, daemon.stderr
            time.sleep(0.05)
    finally:
        daemon.stop()
    lines = {line.split(" ")[3]: line.strip() for line in daemon.stderr if "  provider " in line}
    assert lines["good"] == f"provider good ({fake.url}): ok, 2 models listed"
    assert lines["bad"] == f"provider bad ({fake.url}): unauthorised, HTTP 401: check the key"
    assert lines["nokey"] == (
        f"provider nokey ({fake.url}): key missing, $PIROUTER_TEST_NEVER_SET not set"
    )
    assert (
        lines["gone"].startswith("provider gone (http://127.0.0.1:")
        and ": refused, " in (lines["gone"])
    )
    assert fake.listings == ["/v1/models", "/v1/models"]  # once each; never a completion
    assert fake.seen == []
