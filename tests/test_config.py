"""Loading config.toml: v0.1 compatibility, located errors with exact text, warnings, paths."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pirouter_py.config import BUILTIN_SOURCE, load_config, parse_config
from pirouter_py.errors import ConfigError
from tests.conftest import EXAMPLE, MINI

Write = Callable[[str], Path]

PROVIDER = '[providers.openai]\nbase_url = "https://api.openai.com"\n'
MODEL = '[models.m]\nprovider = "openai"\nmodel_id = "m-1"\n'


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.toml")
    return [str(p) for p in caught.value.problems]


def test_example_config_loads_with_v01_counts_and_defaults() -> None:
    loaded = load_config(EXAMPLE, {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"})
    cfg = loaded.config
    assert loaded.warnings == ()
    assert len(cfg.models) == 7 and len(cfg.rules) == 1
    assert cfg.aliases == (
        "gpt-4o",
        "gpt-4o-mini",
        "haiku",
        "llama3.2-local",
        "opus",
        "qwen2.5-coder-local",
        "sonnet",
    )
    assert cfg.server.bind == "127.0.0.1:11435"
    assert cfg.routing.profile == "balanced" and cfg.routing.max_policy_fallbacks == 3
    assert cfg.cascade.on_marker == "<escalate/>"
    assert cfg.models["haiku"].input_per_m == 0.8 and cfg.models["haiku"].quality == "basic"
    assert cfg.providers["anthropic"].request_timeout_secs == 120


def test_defaults_of_every_optional_key() -> None:
    cfg, warnings = parse_config(PROVIDER + MODEL, "c")
    model = cfg.models["m"]
    assert warnings == ()
    assert (model.input_per_m, model.output_per_m, model.quality, model.context_window) == (
        0.0,
        0.0,
        "standard",
        None,
    )
    assert (model.supports_tools, model.supports_vision, model.local, model.enabled) == (
        False,
        False,
        False,
        True,
    )
    assert (cfg.routing.profile, cfg.routing.auto_cascade) == ("balanced", True)
    assert (cfg.cascade.on_http_error, cfg.cascade.on_short_response) == (True, False)
    assert (cfg.cascade.min_output_tokens, cfg.cascade.on_marker) == (8, None)
    assert (cfg.server.bind, cfg.server.log_level, cfg.ledger.path) == (
        "127.0.0.1:11435",
        "info",
        None,
    )


def test_v01_mini_config_loads() -> None:
    cfg, _ = parse_config(MINI, "c")
    assert [r.name for r in cfg.rules] == ["tool-use", "long-context", "default"]
    assert {m.quality for m in cfg.models.values()} == {"standard"}


def test_wrong_enum_value_is_located_with_choices() -> None:
    text = PROVIDER + MODEL + 'quality = "stronk"\n'
    assert errors_of(text) == [
        'config.toml:6: models.m.quality: "stronk" is not one of basic, standard, strong, premium'
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'input_per_m = "cheap"',
            'config.toml:6: models.m.input_per_m: expected a number, got "cheap"',
        ),
        (
            "supports_tools = 1",
            "config.toml:6: models.m.supports_tools: expected true or false, got 1",
        ),
        (
            "context_window = 1.5",
            "config.toml:6: models.m.context_window: expected an integer, got 1.5",
        ),
        (
            "context_window = -1",
            "config.toml:6: models.m.context_window: must be at least 0, got -1",
        ),
    ],
)
def test_type_errors_say_what_was_expected(line: str, expected: str) -> None:
    assert errors_of(PROVIDER + MODEL + line + "\n") == [expected]


def test_integers_are_accepted_as_prices() -> None:
    cfg, _ = parse_config(PROVIDER + MODEL + "input_per_m = 3\n", "c")
    assert cfg.models["m"].input_per_m == 3.0


def test_missing_required_key() -> None:
    assert errors_of(PROVIDER + '[models.m]\nprovider = "openai"\n') == [
        "config.toml:3: models.m.model_id: required key is missing; add it"
    ]


def test_toml_syntax_error_shows_line_and_column() -> None:
    assert errors_of('[server]\nbind = "127.0.0.1:1\n') == [
        "config.toml:2:20: TOML syntax error: a string is not closed on its line (add the closing"
        ' quote, or use """ for text over several lines)'
    ]
    assert errors_of("[server]\nbind = 127.0.0.1:1\n") == [
        "config.toml:2:13: TOML syntax error: Expected newline or end of document after a statement"
    ]


def test_toml_syntax_error_at_the_end_of_the_file() -> None:
    assert errors_of("[server]\nbind =") == [
        "config.toml: TOML syntax error at the end of the file: Invalid value"
    ]


def test_a_syntax_error_before_a_repeated_key_is_the_one_reported() -> None:
    text = "[server]\nbind = = 1\n" + PROVIDER + MODEL + 'model_id = "again"\n'
    assert errors_of(text) == ["config.toml:2:8: TOML syntax error: Invalid value"]


def test_duplicate_key_is_a_syntax_error() -> None:
    assert errors_of(PROVIDER + MODEL + 'model_id = "again"\n') == [
        "config.toml:6: models.m.model_id: is set twice (first at line 5); keep one"
    ]


def test_v01_validation_messages_with_lines() -> None:
    text = (
        PROVIDER
        + MODEL
        + """
[[rules]]
name = "empty"
when = {}
then = { primary = "m" }

[[rules]]
name = "bad-regex"
when = { system_matches = "(unclosed" }
then = { primary = "m" }

[[rules]]
name = "broken"
when = { always = true }
then = { primary = "does-not-exist", cascade = ["m", "mm"] }
"""
    )
    assert errors_of(text) == [
        "config.toml:9: rules[0].when: rule `empty` has an empty predicate; use `always = true` "
        "for a default rule",
        "config.toml:14: rules[1].when.system_matches: rule `bad-regex` has invalid "
        "system_matches regex `(unclosed`: missing ), unterminated subpattern at position 0",
        "config.toml:20: rules[2].then.primary: rule `broken` references unknown model alias "
        "`does-not-exist`",
        "config.toml:20: rules[2].then.cascade: rule `broken` references unknown model alias "
        "`mm`; did you mean `m`?",
    ]


@pytest.mark.parametrize("when", ["{}", "{ always = false }", '{ colour = "blue" }'])
def test_every_empty_predicate_form_is_rejected(when: str) -> None:
    text = PROVIDER + MODEL + f'[[rules]]\nname = "r"\nwhen = {when}\nthen = {{ primary = "m" }}\n'
    assert any("has an empty predicate" in e for e in errors_of(text))


def test_header_targets_are_not_validated_at_load() -> None:
    text = (
        PROVIDER
        + MODEL
        + (
            '[[rules]]\nname = "o"\nwhen = { always = true }\n'
            'then = { primary = "$header:X-Route", cascade = ["$header:x-next"] }\n'
        )
    )
    cfg, _ = parse_config(text, "c")
    assert cfg.rules[0].then.primary == "$header:X-Route"


def test_new_validation_problems_are_all_reported_at_once() -> None:
    text = """[server]
bind = "localhost"

[providers.groq]
base_url = "https://api.groq.com/openai/v1"

[models.a]
provider = "anthropic"
model_id = "x"

[[rules]]
name = "r"
when = { always = true }
then = { primary = "a" }

[[rules]]
name = "r"
when = { has_tools = true }
then = { primary = "a" }
"""
    assert errors_of(text) == [
        'config.toml:2: server.bind: "localhost" is not host:port; write e.g. '
        'bind = "127.0.0.1:11435"',
        'config.toml:4: providers.groq: missing `type`; add type = "openai", "anthropic" or '
        '"ollama" (only tables named after a type may leave it out)',
        "config.toml:8: models.a.provider: provider `anthropic` is not configured "
        "(configured: groq); add a [providers.anthropic] table or fix the name",
        "config.toml:17: rules[1].name: rule name `r` is already used by rules[0]; give each rule "
        "its own name",
    ]


def test_empty_catalog_is_an_error() -> None:
    assert errors_of(PROVIDER) == [
        "config.toml: models: no models declared; add a [models.<alias>] table (see "
        "config.example.toml)"
    ]


@pytest.mark.parametrize("bind", ["127.0.0.1:11435", "localhost:80", "[::1]:8080", "0.0.0.0:0"])
def test_valid_binds(bind: str) -> None:
    keys = '\napi_keys_env = ["K"]' if bind.startswith("0.") else ""  # beyond loopback: keys
    parse_config(f'[server]\nbind = "{bind}"{keys}\n' + PROVIDER + MODEL, "c")


@pytest.mark.parametrize("bind", ["127.0.0.1", ":80", "host:99999", "a b:1", "[::1:80"])
def test_invalid_binds(bind: str) -> None:
    (message,) = errors_of(f'[server]\nbind = "{bind}"\n' + PROVIDER + MODEL)
    assert message.startswith("config.toml:2: server.bind:")


def test_unknown_keys_are_warnings_with_lines_and_suggestions() -> None:
    text = PROVIDER + MODEL + 'qualty = "strong"\n[routing]\nprofle = "balanced"\n[colour]\n'
    cfg, warnings = parse_config(text, "config.toml")
    assert [str(w) for w in warnings] == [
        "config.toml:6: models.m.qualty: unknown key, ignored (did you mean `quality`?)",
        "config.toml:8: routing.profle: unknown key, ignored (did you mean `profile`?)",
        "config.toml:9: colour: unknown key, ignored",
    ]
    assert cfg.models["m"].quality == "standard"


def test_named_providers_and_base_url_normalisation() -> None:
    text = """
[providers.openai]
base_url = "https://api.openai.com/v1/"
[providers.openrouter]
type = "openai"
base_url = "https://openrouter.ai/api/v1"
request_timeout_secs = 0
[providers.anthropic]
[providers.ollama]
[providers.lmstudio]
type = "openai"
base_url = "http://127.0.0.1:1234/"
[models.m]
provider = "openrouter"
model_id = "x"
"""
    cfg, _ = parse_config(text, "c")
    urls = {name: (p.kind, p.url) for name, p in cfg.providers.items()}
    assert urls == {
        "openai": ("openai", "https://api.openai.com"),
        "openrouter": ("openai", "https://openrouter.ai/api"),
        "anthropic": ("anthropic", "https://api.anthropic.com"),
        "ollama": ("ollama", "http://127.0.0.1:11434"),
        "lmstudio": ("openai", "http://127.0.0.1:1234"),
    }
    assert cfg.providers["openrouter"].request_timeout_secs == 1


def test_named_provider_needs_a_base_url() -> None:
    text = '[providers.groq]\ntype = "openai"\n[models.m]\nprovider = "groq"\nmodel_id = "x"\n'
    assert errors_of(text) == [
        "config.toml:1: providers.groq: missing `base_url`; add the URL of this openai server"
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://", "names no host"),
        ("https://:8080", "names no host"),
        ("http://127.0.0.1:port", "is not a valid URL (Port could not be cast"),
        ("http://127.0.0.1:99999", "is not a valid URL (Port out of range"),
    ],
)
def test_a_base_url_must_name_a_server(url: str, problem: str) -> None:
    text = f'[providers.local]\ntype = "openai"\nbase_url = "{url}"\n' + MODEL.replace(
        '"openai"', '"local"'
    )
    (only,) = errors_of(text)
    assert only.startswith(f'config.toml:3: providers.local.base_url: "{url}" {problem}')


def test_empty_marker_and_dead_header_predicate_are_warnings() -> None:
    text = (
        PROVIDER
        + MODEL
        + (
            '[[rules]]\nname = "h"\nwhen = { header = { name = "X-Team" } }\n'
            'then = { primary = "m" }\n'
            '[cascade]\non_marker = ""\n'
        )
    )
    cfg, warnings = parse_config(text, "config.toml")
    assert [str(w) for w in warnings] == [
        "config.toml:8: rules[0].when.header: has neither `equals` nor `any_value = true`, so it "
        "never matches; add one of them",
        "config.toml:11: cascade.on_marker: is empty, which v0.1 matched in every answer; ignored "
        'here. Remove it or set a marker such as "<escalate/>"',
    ]
    assert cfg.cascade.on_marker is None
    assert cfg.rules[0].when.header is not None and cfg.rules[0].when.header.name == "x-team"


# --- where the config comes from ---------------------------------------------------------------


def test_explicit_path_wins_over_environment(
    write_config: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = write_config(PROVIDER + MODEL)
    other = write_config(MINI, "other.toml")
    monkeypatch.setenv("PIROUTER_CONFIG", str(other))
    assert load_config(chosen).path == chosen
    assert load_config().path == other


def test_platform_default_path_is_used(isolated_env: Path) -> None:
    path = isolated_env / ".config" / "pirouter" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(PROVIDER + MODEL)
    loaded = load_config()
    assert loaded.path == path and not loaded.is_default


def test_missing_named_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml")
    assert str(caught.value) == (
        f"{tmp_path / 'nope.toml'}: config file not found (named by --config); check the path, "
        "or write one there with `pirouter init`"
    )
    monkeypatch.setenv("PIROUTER_CONFIG", str(tmp_path / "env.toml"))
    with pytest.raises(ConfigError, match=r"named by \$PIROUTER_CONFIG"):
        load_config()


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[server]")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(tmp_path / "bin.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_builtin_default_without_keys_is_local_ollama(isolated_env: Path) -> None:
    loaded = load_config()
    assert loaded.is_default and loaded.source == BUILTIN_SOURCE
    assert loaded.default_path == isolated_env / ".config" / "pirouter" / "config.toml"
    assert loaded.config.aliases == ("llama3.2-local", "qwen2.5-coder-local")
    assert set(loaded.config.providers) == {"ollama"}


def test_builtin_default_adds_clouds_whose_keys_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = load_config().config
    assert set(cfg.providers) == {"ollama", "openai"}
    assert {"gpt-4o", "gpt-4o-mini"} <= set(cfg.aliases)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    cfg = load_config().config
    assert set(cfg.providers) == {"ollama", "openai", "anthropic"}
    assert len(cfg.models) == 7
    assert cfg.providers["anthropic"].api_key_env == "ANTHROPIC_API_KEY"


def test_unknown_keys_inside_a_rule_are_errors_all_at_once() -> None:
    """A typo inside `when` would widen the rule (v0.1-style warning, then it matched every
    non-stream request): every such key is an error, located, with the spelling, in one go."""
    text = (
        '[providers.ollama]\n[models.m]\nprovider = "ollama"\nmodel_id = "x"\n'
        "[[rules]]\n"
        'name = "r"\n'
        'when = { stream = false, promt_matches = "x" }\n'
        'then = { primary = "m", cascde = ["m"], escalation = { on_short_respons = true } }\n'
        "[surver]\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.toml")
    found = [(p.line, p.key, p.message) for p in caught.value.problems]
    assert found == [
        (
            7,
            "rules[0].when.promt_matches",
            "unknown key in the rule's `when`: ignoring it would change what the rule matches; "
            "fix or remove it (did you mean `prompt_matches`?)",
        ),
        (
            8,
            "rules[0].then.cascde",
            "unknown key in the rule's `then`: ignoring it would change what the rule does; "
            "fix or remove it (did you mean `cascade`?)",
        ),
        (
            8,
            "rules[0].then.escalation.on_short_respons",
            "unknown key in the rule's `then`: ignoring it would change what the rule does; "
            "fix or remove it (did you mean `on_short_response`?)",
        ),
    ]
    # outside rules an unknown key stays a warning
    _, warnings = parse_config(text.split("[[rules]]", maxsplit=1)[0] + "[surver]\n", "c.toml")
    assert [w.key for w in warnings] == ["surver"]


def test_a_public_bind_without_client_keys_is_a_located_config_error() -> None:
    base = '[providers.ollama]\n[models.m]\nprovider = "ollama"\nmodel_id = "x"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config('[server]\nbind = "0.0.0.0:11435"\n' + base, "c.toml")
    [problem] = caught.value.problems
    assert (problem.line, problem.key) == (2, "server.bind")
    assert "beyond loopback" in problem.message and "api_keys_env" in problem.message
    keyed = '[server]\nbind = "0.0.0.0:11435"\napi_keys_env = ["K"]\n' + base
    assert parse_config(keyed, "c.toml")[0].server.bind == "0.0.0.0:11435"
    assert parse_config('[server]\nbind = "[::1]:8080"\n' + base, "c.toml")
