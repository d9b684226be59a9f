"""`pirouter providers list|add|remove` on real files in a temp dir: an added provider is a
new table (every other line of the file as it was) that loads as `pirouter run` would load it;
refusals (usage, a duplicate, a bad URL, a provider models still use) leave the file untouched
and say what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.config import load_config
from tests.test_init import EXAMPLE, only_changes

KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "LOCAL_KEY")


@pytest.fixture
def commented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """config.example.toml in a temp dir, no key variable set but OPENAI_API_KEY."""
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-shown")
    path = tmp_path / "config.toml"
    path.write_text(EXAMPLE)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_add_writes_one_new_table_that_loads(commented: Path) -> None:
    code, out, _ = run(
        *("providers", "add", "openrouter", "--type", "openai"),
        *("--base-url", "https://openrouter.ai/api/v1", "--key-env", "OPENROUTER_API_KEY"),
        *("-c", str(commented)),
    )
    assert code == 0
    assert out == (
        f"added provider `openrouter` in {commented}\n"
        "next: add its models: `pirouter models add ALIAS --provider openrouter --model-id ID`\n"
    )
    # after the last provider, before the notes that introduce what follows it
    after = commented.read_text()
    assert only_changes(EXAMPLE, after) == [
        "+[providers.openrouter]",
        '+type = "openai"',
        '+base_url = "https://openrouter.ai/api/v1"',
        '+api_key_env = "OPENROUTER_API_KEY"',
        "+",
    ]
    assert after.index("[providers.openrouter]") < after.index("# [providers.lmstudio]")
    provider = load_config(commented).config.providers["openrouter"]
    assert (provider.kind, provider.url, provider.key_envs) == (
        "openai",
        "https://openrouter.ai/api",  # normalised at load, as written
        ("OPENROUTER_API_KEY",),
    )
    code, _, err = run(
        *("models", "add", "or-mini", "--provider", "openrouter"),
        *("--model-id", "openai/gpt-4o-mini", "-c", str(commented)),
    )
    assert code == 0
    assert "OPENROUTER_API_KEY is not set: the models of provider `openrouter` (or-mini)" in err


def test_a_provider_named_after_its_type_needs_neither_type_nor_url(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '# mine\n[providers.ollama]\n[models.small]\nprovider = "ollama"\nmodel_id = "m"\n'
    )
    code, _, err = run("providers", "add", "anthropic", "--key-env", "ANTHROPIC_API_KEY",
                       "-c", str(path))  # fmt: skip
    assert code == 0, err
    provider = load_config(path).config.providers["anthropic"]
    assert (provider.kind, provider.url) == ("anthropic", "https://api.anthropic.com")
    assert path.read_text().startswith("# mine\n[providers.ollama]\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("lmstudio", "--base-url", "http://127.0.0.1:1234"),
            "Error: say which API provider `lmstudio` speaks: --type openai|anthropic|ollama "
            "(OpenRouter, LM Studio, vLLM, llama.cpp and Groq speak openai)\n",
        ),
        (
            ("groq", "--type", "openai"),
            "Error: say where provider `groq` answers: --base-url URL (e.g. "
            "http://127.0.0.1:1234, https://openrouter.ai/api)\n",
        ),
        (
            ("openai", "--key-env", "sk-proj-abc123"),
            "Error: --key-env takes the name of the environment variable holding the key "
            "(e.g. OPENROUTER_API_KEY), never the key itself\n",
        ),
        (
            ("my box", "--type", "ollama", "--base-url", "http://127.0.0.1:11434"),
            "Error: 'my box' cannot name a provider: use letters, digits, `-`, `_` and `.` "
            "(e.g. openrouter, lm-studio)\n",
        ),
    ],
)
def test_add_usage_errors_write_nothing(
    commented: Path, args: tuple[str, ...], message: str
) -> None:
    code, out, err = run("providers", "add", *args, "-c", str(commented))
    assert (code, out, err) == (2, "", message)
    assert commented.read_text() == EXAMPLE


def test_add_refuses_a_duplicate_and_a_bad_url(commented: Path) -> None:
    code, _, err = run("providers", "add", "openai", "-c", str(commented))
    assert code == 3
    assert err == (
        "Error: provider `openai` already exists; change it with `pirouter config set "
        "providers.openai.KEY VALUE`, or remove it first with `pirouter providers remove openai`\n"
    )
    code, _, err = run("providers", "add", "box", "--type", "openai", "--base-url", "http://",
                       "-c", str(commented))  # fmt: skip
    assert code == 3
    assert f"not changed: the edit would leave {commented} invalid" in err
    assert f"error: {commented}:" in err and "providers.box.base_url" in err
    assert commented.read_text() == EXAMPLE


def test_list_shows_types_urls_keys_and_models(commented: Path) -> None:
    code, out, _ = run("providers", "list", "--json", "-c", str(commented))
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert sorted(rows) == ["anthropic", "ollama", "openai"]
    assert rows["openai"] == {
        "name": "openai",
        "type": "openai",
        "base_url": "https://api.openai.com",
        "api_key_env": ["OPENAI_API_KEY"],
        "key": "set",
        "models": ["gpt-4o", "gpt-4o-mini"],
    }
    assert rows["anthropic"]["key"] == "not set" and rows["ollama"]["key"] == "none"
    code, out, _ = run("providers", "list", "-c", str(commented))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "type", "base", "url", "key", "models"]
    assert lines[3].split() == [
        *("openai", "openai", "https://api.openai.com", "$OPENAI_API_KEY", "(set)"),
        *("gpt-4o,", "gpt-4o-mini"),
    ]
    assert "sk-never-shown" not in out


def test_list_a_file_with_a_provider_and_no_model_yet(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[providers.local]\ntype = "openai"\nbase_url = "http://127.0.0.1:1234"\n')
    code, out, _ = run("providers", "list", "--json", "-c", str(path))
    assert code == 0
    assert [(r["name"], r["type"], r["base_url"], r["models"]) for r in json.loads(out)] == [
        ("local", "openai", "http://127.0.0.1:1234", [])
    ]
    path.write_text(path.read_text() + "[server]\nbind = 3\n")  # any other error still fails
    code, _, err = run("providers", "list", "-c", str(path))
    assert code == 3 and "server.bind" in err


def test_remove_refuses_a_provider_models_use_and_removes_an_unused_one(
    commented: Path,
) -> None:
    code, _, err = run("providers", "remove", "anthropic", "-c", str(commented))
    assert code == 3
    assert err == (
        "Error: provider `anthropic` is used by models `haiku`, `sonnet`, `opus`; point them at "
        "another provider (`pirouter config set models.haiku.provider OTHER`) or delete their "
        "[models.<alias>] tables first\n"
    )
    code, _, err = run("providers", "remove", "anthropik", "-c", str(commented))
    assert code == 3 and "no provider `anthropik` in the file; did you mean `anthropic`?" in err
    assert commented.read_text() == EXAMPLE
    run("providers", "add", "spare", "--type", "ollama", "--base-url", "http://127.0.0.1:9",
        "-c", str(commented))  # fmt: skip
    code, out, _ = run("providers", "remove", "spare", "-c", str(commented))
    assert (code, out) == (0, f"removed provider `spare` in {commented}\n")
    assert "spare" not in load_config(commented).config.providers
    assert commented.read_text() == EXAMPLE  # every comment around it stays


def test_remove_keeps_the_comments_that_introduce_what_follows(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    text = (
        '# top\n[server]\nbind = "127.0.0.1:11435"\n\n'
        '# the first provider\n[providers.a]\ntype = "openai"\nbase_url = "http://127.0.0.1:1"\n\n'
        '# the second\n[providers.b]\ntype = "openai"\nbase_url = "http://127.0.0.1:2"\n\n'
        '# models follow\n[models.m]\nprovider = "b"\nmodel_id = "x"\n'
    )
    path.write_text(text)
    assert run("providers", "remove", "a", "-c", str(path))[0] == 0
    assert only_changes(text, path.read_text()) == [
        "-[providers.a]",
        '-type = "openai"',
        '-base_url = "http://127.0.0.1:1"',
    ]  # its own comment stays too: pirouter cannot tell what a comment is about
