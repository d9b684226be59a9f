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
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.config import init as finder
from pirouter_py.config import load_config
from pirouter_py.errors import ConfigError
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
    # what `pirouter learn` needs is on, and the file says what it does
    assert cfg.routing.learned and cfg.learning.keep_features is True
    assert "learned = true" in text and "# The learned router:" in text
    assert "keep_features = true" in text and "hashed features (never its text)" in text
    assert [r.name for r in cfg.rules] == ["explicit-override"]
    assert "/api/tags" in ollama.listings and "/v1/models" in studio.listings
    # only what the servers list: none of Ollama's usual models it does not have
    assert "qwen2.5-coder:7b" not in text and "llama3.2-local" not in text


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


def init_on_a_terminal(studio: FakeUpstream, target: Path, answers: list[bytes]) -> bytes:
    """`pirouter init -c target` in a pseudo-terminal, answering each [Y/n] in turn; what it
    showed (it must exit 0)."""
    code = (
        "import sys; from pirouter_py.config import init as f; "
        f"f.LOCAL_SERVERS = (('lmstudio', 'LM Studio', {studio.url!r}),); "
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
    asked = len(answers)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
        if answers and seen.count(b"[Y/n]") > asked - len(answers):
            os.write(master, answers.pop(0))
    proc.wait(10)
    os.close(master)
    assert proc.returncode == 0, seen.decode()
    return seen


def test_init_on_a_terminal_asks_for_each_provider(
    servers: tuple[FakeUpstream, FakeUpstream], tmp_path: Path
) -> None:
    """Run in a pseudo-terminal: no to Ollama, yes to LM Studio."""
    target = tmp_path / "config.toml"
    seen = init_on_a_terminal(servers[1], target, [b"n\n", b"y\n"])
    assert b"Use Ollama answering at" in seen and b"Use LM Studio answering at" in seen
    cfg = load_config(target).config
    assert sorted(cfg.providers) == ["lmstudio"]
    assert {m.provider for m in cfg.models.values()} == {"lmstudio"}


def test_init_declining_every_provider_writes_no_model_and_says_what_next(
    servers: tuple[FakeUpstream, FakeUpstream], tmp_path: Path
) -> None:
    """No to both: not one model written (none of Ollama's usual ones either); the output and
    the file say how to add them, and the commands it names complete the file."""
    ollama, studio = servers
    target = tmp_path / "config.toml"
    seen = init_on_a_terminal(studio, target, [b"n\n", b"n\n"]).decode()
    text = target.read_text()
    written = tomllib.loads(text)
    assert "models" not in written and "providers" not in written
    assert "qwen2.5-coder" not in text and "llama3.2-local" not in text
    assert f"wrote {target}: 0 providers, 0 models" in seen
    assert "no provider taken, so no model written; add yours:" in seen
    assert (
        "pirouter providers add NAME --type openai|anthropic|ollama --base-url URL "
        f"[--key-env VAR] -c {target}" in seen
    )
    assert f"pirouter models add ALIAS --provider NAME --model-id ID -c {target}" in seen
    assert "# No provider yet: add one and its models, e.g." in text
    with pytest.raises(ConfigError) as refused:  # `run` says why it cannot serve yet
        load_config(target)
    assert [p.key for p in refused.value.problems] == ["models"]
    run = CliRunner().invoke
    added = run(app, ["providers", "add", "ollama", "--base-url", ollama.url, "-c", str(target)])
    assert added.exit_code == 0, added.output
    assert run(
        app,
        [*("models", "add", "small", "--provider", "ollama", "--model-id", "llama3.2:3b"),
         *("--local", "-c", str(target))],
    ).exit_code == 0  # fmt: skip
    cfg = load_config(target).config
    assert cfg.providers["ollama"].url == ollama.url and list(cfg.models) == ["small"]
    changes = only_changes(text, target.read_text())
    assert "+[providers.ollama]" in changes and all(c.startswith("+") for c in changes)


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


def test_config_set_refuses_a_key_the_config_does_not_have(commented: Path) -> None:
    """A typo is a usage error naming the key it meant; nothing is written."""
    run = CliRunner().invoke
    typo = run(app, ["config", "set", "routing.profle", "best-quality", "-c", str(commented)])
    assert typo.exit_code == 2
    assert typo.stderr == (
        "Error: routing.profle: no such config key (did you mean `routing.profile`?); "
        f"{commented} not changed (config.example.toml explains every key)\n"
    )
    deeper = run(app, ["config", "set", "models.haiku.qualty", "strong", "-c", str(commented)])
    assert deeper.exit_code == 2 and "did you mean `models.haiku.quality`?" in deeper.stderr
    table = '{type = "openai", base_url = "http://127.0.0.1:9", api_kye_env = "K"}'
    inside = run(app, ["config", "set", "providers.x", table, "-c", str(commented)])
    assert inside.exit_code == 2
    assert "providers.x.api_kye_env: no such config key (did you mean" in inside.stderr
    assert run(app, ["config", "set", "nope", "1", "-c", str(commented)]).exit_code == 2
    assert commented.read_text() == EXAMPLE
    # a known key is still set, and a provider's key by itself says how to add one whole
    assert (
        run(
            app, ["config", "set", "routing.profile", "best-quality", "-c", str(commented)]
        ).exit_code
        == 0
    )
    half = run(app, ["config", "set", "providers.fake.type", "openai", "-c", str(commented)])
    assert half.exit_code == 3 and "providers.fake: missing `base_url`" in half.stderr
    assert "hint: `pirouter providers add NAME --type TYPE --base-url URL`" in half.stderr
    model = run(
        app, ["models", "add", "x", "--provider", "fake", "--model-id", "m", "-c", str(commented)]
    )
    assert model.exit_code == 3
    assert "hint: add provider `fake` first: pirouter providers add fake --type" in model.stderr


@pytest.fixture
def platform_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$XDG_CONFIG_HOME in a temp dir, no $PIROUTER_CONFIG: the platform's config.toml path."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PIROUTER_CONFIG", raising=False)
    return tmp_path / "xdg" / "pirouter" / "config.toml"


def test_init_tells_a_daemon_on_the_built_in_default_will_load_the_file(
    servers: tuple[FakeUpstream, FakeUpstream],
    platform_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`pirouter run` first, then `pirouter init`: init says the daemon will load the file, and
    it does, without a restart."""
    from tests.test_reload import DefaultDaemon, health, wait_for

    daemon = DefaultDaemon(platform_dir).start()
    try:
        url = daemon.url
        monkeypatch.setattr(finder, "BIND", url.removeprefix("http://"))
        result = CliRunner().invoke(app, ["init", "--yes"])
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == [
            f"wrote {platform_dir}: 2 providers, 6 models",
            f"the daemon answering at {url} runs on the built-in default: it loads the new file "
            f"within a few seconds (no restart needed); point clients at {url}",
        ]
        (line,) = wait_for(daemon, "config_reloaded", timeout=15)
        assert line["models"] == 6
        assert health(daemon)["config"] == str(platform_dir)
    finally:
        daemon.stop()


def test_init_says_how_to_restart_a_daemon_that_runs_another_config(
    servers: tuple[FakeUpstream, FakeUpstream],
    fake: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = tmp_path / "other.toml"
    other.write_text(
        f'[providers.fake]\ntype = "openai"\nbase_url = "{fake.url}"\n'
        '[models.m]\nprovider = "fake"\nmodel_id = "m-cheap"\n'
    )
    target = tmp_path / "config.toml"
    daemon = Daemon(other).start()
    try:
        url = daemon.url
        monkeypatch.setattr(finder, "BIND", url.removeprefix("http://"))
        result = CliRunner().invoke(app, ["init", "--yes", "-c", str(target)])
    finally:
        daemon.stop()
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == (
        f"a daemon answering at {url} runs with {other}, not {target}: to use the new file, "
        f"stop it (Ctrl-C where it runs) and start `pirouter run -c {target}`"
    )


def test_init_with_no_daemon_or_an_unknown_server_at_the_address(
    servers: tuple[FakeUpstream, FakeUpstream], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing answering: start one. A server that does not say its config (not pirouter, or
    one wanting a client key): restart it."""
    ollama, _ = servers
    port = closed_port()
    monkeypatch.setattr(finder, "BIND", f"127.0.0.1:{port}")
    first = tmp_path / "a.toml"
    result = CliRunner().invoke(app, ["init", "--yes", "-c", str(first)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == (
        f"next: `pirouter run -c {first}`, then point clients at http://127.0.0.1:{port}"
    )
    monkeypatch.setattr(finder, "BIND", ollama.url.removeprefix("http://"))
    second = tmp_path / "b.toml"
    result = CliRunner().invoke(app, ["init", "--yes", "-c", str(second)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == (
        f"a daemon answering at {ollama.url} runs but cannot say with which config (client "
        f"keys?), not {second}: to use the new file, stop it (Ctrl-C where it runs) and start "
        f"`pirouter run -c {second}`"
    )
