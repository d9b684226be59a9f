"""The command line on real files: exact output, exit codes, config from flag/env/default."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pirouter_py import __version__
from pirouter_py.cli import app
from tests.conftest import EXAMPLE

runner = CliRunner()
EX = str(EXAMPLE)


@pytest.fixture
def cloud_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's key variables set, as a user with keys has them (v0.1's decisions assume
    every model can be called; unset keys leave models out, tested in test_keys.py)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_version() -> None:
    assert run("--version") == (0, f"pirouter {__version__}\n", "")


def test_check_config_prints_v01_lines_then_providers() -> None:
    text = EXAMPLE.read_text(encoding="utf-8").splitlines()
    anthropic = text.index('api_key_env = "ANTHROPIC_API_KEY"') + 1
    openai = text.index('api_key_env = "OPENAI_API_KEY"') + 1
    code, out, err = run("check-config", "--config", EX)
    assert code == 0 and err == ""
    assert out == (
        f"config OK: {EX}\n"
        "  models:    7\n"
        "  rules:     1\n"
        "  providers: 3\n"
        "    anthropic  anthropic  https://api.anthropic.com  "
        "key from $ANTHROPIC_API_KEY (NOT SET)\n"
        "    ollama     ollama     http://127.0.0.1:11434  no key needed\n"
        "    openai     openai     https://api.openai.com  key from $OPENAI_API_KEY (NOT SET)\n"
        "  warnings:  2\n"
        f"    {EX}:{anthropic}: providers.anthropic.api_key_env: ANTHROPIC_API_KEY is not set: "
        "the models of provider `anthropic` (haiku, opus, sonnet) are left out of routing until "
        "it is; export it, or remove api_key_env if the server needs no key\n"
        f"    {EX}:{openai}: providers.openai.api_key_env: OPENAI_API_KEY is not set: the models "
        "of provider `openai` (gpt-4o, gpt-4o-mini) are left out of routing until it is; export "
        "it, or remove api_key_env if the server needs no key\n"
    )


def test_check_config_reports_set_keys_by_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    _, out, _ = run("check-config", "-c", EX)
    assert "key from $OPENAI_API_KEY (set)" in out and "sk-secret-value" not in out


def test_check_config_errors_exit_3_with_located_messages(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(
        '[providers.openai]\n[models.m]\nprovider = "openai"\nmodel_id = "x"\nquality = "stronk"\n'
    )
    code, out, err = run("check-config", "-c", str(path))
    assert (code, out) == (3, "")
    assert err == (
        f'error: {path}:5: models.m.quality: "stronk" is not one of basic, standard, '
        "strong, premium\n"
    )


def test_check_config_json(write_config: Callable[..., Path]) -> None:
    path = write_config(
        '[providers.openai]\n[models.m]\nprovider = "openai"\nmodel_id = "x"\ncolour = 1\n'
    )
    code, out, _ = run("check-config", "--json", "-c", str(path))
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["models"] == 1 and report["rules"] == 0
    assert report["providers"][0]["name"] == "openai"
    assert report["warnings"][0]["line"] == 5 and report["warnings"][0]["key"] == "models.m.colour"
    bad = write_config("[models\n", "bad.toml")
    code, out, _ = run("check-config", "--json", "-c", str(bad))
    assert code == 3 and json.loads(out)["errors"][0]["line"] == 1


def test_warnings_go_to_stderr_for_other_commands(write_config: Callable[..., Path]) -> None:
    path = write_config(
        '[providers.openai]\n[models.m]\nprovider = "openai"\nmodel_id = "x"\ncolour = 1\n'
    )
    code, out, err = run("route", "-c", str(path), "--prompt", "hi")
    assert code == 0 and out.startswith("rule:    policy:balanced:easy\n")
    assert err == f"warning: {path}:5: models.m.colour: unknown key, ignored\n"


def test_models_table_and_json() -> None:
    code, out, _ = run("models", "-c", EX)
    lines = [line.rstrip() for line in out.splitlines()]
    assert code == 0
    assert lines[0].split() == [
        "alias",
        "provider",
        "model",
        "id",
        "quality",
        "context",
        "tools",
        "vision",
        "local",
        "enabled",
        "$/M",
        "in",
        "$/M",
        "out",
    ]
    assert [line.split()[0] for line in lines[1:]] == [
        "gpt-4o",
        "gpt-4o-mini",
        "haiku",
        "llama3.2-local",
        "opus",
        "qwen2.5-coder-local",
        "sonnet",
    ]
    assert lines[3].split() == [
        "haiku",
        "anthropic",
        "claude-haiku-4-5-20251001",
        "basic",
        "200000",
        "yes",
        "no",
        "no",
        "yes",
        "0.80",
        "4.00",
    ]
    code, out, _ = run("models", "--json", "-c", EX)
    rows = json.loads(out)
    assert rows[2] == {
        "alias": "haiku",
        "provider": "anthropic",
        "model_id": "claude-haiku-4-5-20251001",
        "quality": "basic",
        "context_window": 200000,
        "supports_tools": True,
        "supports_vision": False,
        "local": False,
        "enabled": True,
        "input_per_m": 0.8,
        "output_per_m": 4.0,
    }


# v0.1's build.ps1 smoke cases on config.example.toml; results derived from reference §3.
SMOKE = [
    (
        ["--prompt", "hello world"],
        ("policy:balanced:easy", "llama3.2-local", "haiku -> qwen2.5-coder-local -> gpt-4o-mini"),
    ),
    (
        ["--prompt", "debug this distributed SQL migration"],
        ("policy:balanced:hard", "gpt-4o", "sonnet -> opus"),
    ),
    (
        ["--prompt", "search the web for me", "--tools"],
        ("policy:balanced:hard", "gpt-4o", "sonnet -> opus"),
    ),
    (
        ["--model", "sonnet", "--prompt", "translate this paragraph"],
        ("policy:balanced:standard", "qwen2.5-coder-local", "gpt-4o-mini -> gpt-4o -> sonnet"),
    ),
    (
        ["--prompt", "x" * 5000],
        ("policy:balanced:easy", "llama3.2-local", "haiku -> qwen2.5-coder-local -> gpt-4o-mini"),
    ),
    (
        ["--prompt", "hi", "--profile", "best-quality"],
        ("policy:best-quality:easy", "opus", "<none>"),
    ),
    (
        ["--prompt", "hi", "-H", "x-pirouter-route: sonnet"],
        ("explicit-override", "sonnet", "<none>"),
    ),
    (
        ["--prompt", "what is this", "--image"],
        ("policy:balanced:easy", "gpt-4o-mini", "gpt-4o -> sonnet -> opus"),
    ),
    (
        ["--prompt", "hi", "--system", "You debug kernels"],
        ("policy:balanced:hard", "gpt-4o", "sonnet -> opus"),
    ),
]


@pytest.mark.usefixtures("cloud_keys")
@pytest.mark.parametrize(("args", "expected"), SMOKE, ids=[str(i) for i in range(len(SMOKE))])
def test_route_first_three_lines_are_v01s(
    args: list[str], expected: tuple[str, str, str], write_config: Callable[[str], Path]
) -> None:
    """v0.1's decisions, on the example with agent-aware turns off (as a v0.1 file has them)."""
    v01 = write_config(EXAMPLE.read_text().replace("\nturns = true\n", "\nturns = false\n"))
    code, out, err = run("route", *args, "-c", str(v01))
    assert (code, err) == (0, "")
    rule, primary, cascade = expected
    assert out.splitlines()[:3] == [
        f"rule:    {rule}",
        f"primary: {primary}",
        f"cascade: {cascade}",
    ]


@pytest.mark.usefixtures("cloud_keys")
def test_route_explains_rules_and_candidates() -> None:
    code, out, _ = run("route", "--prompt", "hello world", "-c", EX)
    assert code == 0
    assert out.splitlines()[3:] == [
        "",
        "request: 7 estimated tokens, difficulty easy (no difficulty keyword in the latest "
        "instruction), user turn, tools no, images no",
        "rules, first match wins:",
        "  skip   explicit-override  header x-pirouter-route is absent",
        "policy: profile balanced, easy needs quality basic or better",
        "   1 llama3.2-local       primary   basic, $0/M in+out, local",
        "   2 haiku                fallback  basic, $4.8/M in+out, cloud",
        "   3 qwen2.5-coder-local  fallback  standard, $0/M in+out, local",
        "   4 gpt-4o-mini          fallback  standard, $0.75/M in+out, cloud",
        "   5 gpt-4o               ranked    strong, $12.5/M in+out, cloud",
        "   6 sonnet               ranked    strong, $18/M in+out, cloud",
        "   7 opus                 ranked    premium, $90/M in+out, cloud",
    ]


@pytest.mark.usefixtures("cloud_keys")
def test_route_json() -> None:
    code, out, _ = run("route", "--json", "--tools", "--prompt", "hi", "-c", EX)
    doc = json.loads(out)
    assert code == 0
    assert {
        k: doc[k] for k in ("rule", "primary", "cascade", "difficulty", "estimated_tokens")
    } == {  # agent-aware: offering a tool asks for a model that takes tools, not a strong one
        "rule": "policy:balanced:easy",
        "primary": "haiku",
        "cascade": ["qwen2.5-coder-local", "gpt-4o-mini", "gpt-4o"],
        "difficulty": "easy",
        "estimated_tokens": 4,
    }
    assert (doc["turn"], doc["effort"]) == ("user", None)
    explanation = doc["explanation"]
    assert explanation["difficulty_reason"] == "no difficulty keyword in the latest instruction"
    assert explanation["rules"] == [
        {
            "name": "explicit-override",
            "matched": False,
            "reason": "header x-pirouter-route is absent",
            "checks": [
                {"key": "header", "held": False, "detail": "header x-pirouter-route is absent"}
            ],
        }
    ]
    dropped = [c for c in explanation["candidates"] if c["verdict"] == "dropped"]
    assert [c["alias"] for c in dropped] == ["llama3.2-local"]  # it takes no tools


def test_route_explains_every_predicate_of_nested_rules(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(
        '[providers.ollama]\n[models.a]\nprovider = "ollama"\nmodel_id = "a"\n'
        '[[rules]]\nname = "agents"\nwhen = { client_matches = "aider", any = [{ stream = true },'
        ' { not = { max_tokens_gt = 100 } }] }\nthen = { profile = "local-first" }\n'
    )
    args = ["route", "-p", "hi", "-H", "User-Agent: aider/1", "--max-tokens", "500", "--stream"]
    code, out, _ = run(*args, "-c", str(path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "rule:    agents"
    start = lines.index("rules, first match wins:")
    assert lines[start + 1 : start + 8] == [
        "  match  agents  all of client_matches, any hold",
        "          + client_matches: client_matches 'aider' finds 'aider' in the user agent",
        "          + any: 1 of 2 hold",
        "              + any[0]: holds",
        "                  + stream: stream = true, and the request streams",
        "              - any[1]: fails",
        "                  - not: the inner table holds",
    ]
    code, out, _ = run(*args[:-1], "-c", str(path))  # no stream: any fails, the rule is skipped
    assert "  skip   agents  any: 0 of 2 hold" in out.splitlines()


def test_route_reads_the_prompt_from_stdin() -> None:
    code, out, _ = run("route", "--prompt", "-", "-c", EX, stdin="debug my code\n")
    assert code == 0 and out.startswith("rule:    policy:balanced:hard\n")


@pytest.mark.usefixtures("cloud_keys")
def test_route_routing_error_exits_1() -> None:
    code, out, err = run("route", "-p", "hi", "-H", "x-pirouter-route: nope", "-c", EX)
    assert (code, out) == (1, "")
    assert err == "Error: rule `explicit-override` selected unknown model alias `nope`\n"


def test_route_usage_errors_exit_2() -> None:
    assert run("route", "-c", EX)[0] == 2  # --prompt is required
    code, _, err = run("route", "-p", "hi", "-H", "no-colon", "-c", EX)
    assert code == 2 and "'no-colon' is not 'Name: value'" in err
    assert run("route", "-p", "hi", "--profile", "fastest", "-c", EX)[0] == 2


def test_config_option_before_or_after_the_command(write_config: Callable[..., Path]) -> None:
    path = write_config('[providers.openai]\n[models.only]\nprovider = "openai"\nmodel_id = "x"\n')
    assert run("--config", str(path), "route", "-p", "hi")[1].splitlines()[1] == "primary: only"
    assert run("route", "-p", "hi", "--config", str(path))[1].splitlines()[1] == "primary: only"
    # after the command wins over before it
    assert run("-c", EX, "route", "-p", "hi", "-c", str(path))[1].splitlines()[1] == "primary: only"


def test_config_from_environment(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config('[providers.openai]\n[models.only]\nprovider = "openai"\nmodel_id = "x"\n')
    monkeypatch.setenv("PIROUTER_CONFIG", str(path))
    assert run("check-config")[1].splitlines()[0] == f"config OK: {path}"


def test_builtin_default_is_announced(isolated_env: Path) -> None:
    code, out, err = run("check-config")
    where = isolated_env / ".config" / "pirouter" / "config.toml"
    assert code == 0 and out.splitlines()[:3] == [
        "config OK: <built-in default>",
        "  models:    2",
        "  rules:     1",
    ]
    assert err == (
        f"note: no config file at {where}; running on the built-in default "
        "(`pirouter init` writes one for what you have, or pass --config)\n"
    )


def test_missing_config_file_exits_3(tmp_path: Path) -> None:
    code, out, err = run("models", "-c", str(tmp_path / "nope.toml"))
    assert (code, out) == (3, "")
    assert err.startswith(f"error: {tmp_path / 'nope.toml'}: config file not found")


def test_installed_entry_points_run(tmp_path: Path) -> None:
    """The console script and `python -m pirouter_py` as a user runs them (no traceback)."""
    bindir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bindir / "pirouter"), "route", "-c", str(tmp_path / "x.toml"), "-p", "hi"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 3 and "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "pirouter_py", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"pirouter {__version__}\n")
    done = subprocess.run(
        [sys.executable, "-m", "pirouter_py", "route"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_help_does_not_import_the_config_stack() -> None:
    """`pirouter --help` must start fast: pydantic, tomlkit and aiohttp stay out of its path."""
    code = (
        "import sys, pirouter_py.cli; "
        "print(sorted(m for m in ('pydantic', 'tomlkit', 'aiohttp', 'rich') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "[]"


def test_collection_is_off_while_a_command_starts_and_back_on_after() -> None:
    """Start-up (imports, config) runs without the collector; once the config is loaded what lives
    is frozen out of its sight and collection resumes (a long `ledger tail` must not leak)."""
    code = f"""
import atexit, gc, sys
import pirouter_py.config as config
from pirouter_py import cli
seen = []
real = config.load_config
def load_config(*args, **kwargs):
    seen.append(gc.isenabled())
    return real(*args, **kwargs)
config.load_config = load_config
atexit.register(lambda: print(seen, gc.isenabled(), gc.get_freeze_count() > 10_000))
sys.argv = ["pirouter", "--config", {EX!r}, "route", "--prompt", "hi"]
cli.main()
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[False] True True"


# The same requests on the example as it is, agent-aware: tools do not make a turn hard (a model
# must still take them), the system prompt's keywords do not count, the instruction's do.
TURNS = [
    (["--prompt", "search the web for me", "--tools"], "policy:balanced:easy", "haiku"),
    (["--prompt", "hi", "--system", "You debug kernels"], "policy:balanced:easy", "llama3.2-local"),
    (["--prompt", "debug this distributed SQL migration"], "policy:balanced:hard", "gpt-4o"),
    (["--prompt", "title?", "--max-tokens", "60"], "policy:balanced:easy", "llama3.2-local"),
]


@pytest.mark.parametrize(
    ("args", "rule", "primary"), TURNS, ids=[str(i) for i in range(len(TURNS))]
)
@pytest.mark.usefixtures("cloud_keys")
def test_route_with_agent_aware_turns(args: list[str], rule: str, primary: str) -> None:
    code, out, err = run("route", *args, "-c", EX)
    assert (code, err) == (0, "")
    assert out.splitlines()[:2] == [f"rule:    {rule}", f"primary: {primary}"]
