"""Where each key stands: tables, arrays of tables, quoted and dotted keys, multi-line values."""

from __future__ import annotations

from pirouter_py.config.toml_lines import key_lines, locate

DOC = '''# comment
[server]
bind = "x"          # 3

[models."gpt-4o"]
quality = "strong"  # 6
notes = """
quality = "not a key"
"""
context_window = 5  # 10

[[rules]]
name = "a"          # 13
when = { header = { name = "x", any_value = true } }
then = { primary = "p", cascade = [
  "q",
  "r",
] }

[[rules]]           # 20
name = "b"
[rules.when]        # 22
always = true       # 23
site.name = "dotted"  # 24
'''


def test_every_kind_of_key_is_located() -> None:
    lines = key_lines(DOC)
    assert lines[("server",)] == 2
    assert lines[("server", "bind")] == 3
    assert lines[("models", "gpt-4o", "quality")] == 6
    assert lines[("models", "gpt-4o", "context_window")] == 10
    assert ("models", "gpt-4o", "quality") in lines and lines[("rules", 0, "name")] == 13
    assert lines[("rules", 0, "then")] == 15
    assert lines[("rules", 1)] == 20
    assert lines[("rules", 1, "when")] == 22
    assert lines[("rules", 1, "when", "always")] == 23
    assert lines[("rules", 1, "when", "site", "name")] == 24


def test_text_inside_multiline_strings_is_not_a_key() -> None:
    lines = key_lines(DOC)
    # "quality" on line 8 is inside a multi-line string: the real key stays at line 6.
    assert lines[("models", "gpt-4o", "quality")] == 6
    assert 8 not in lines.values()


def test_locate_falls_back_to_the_enclosing_key() -> None:
    lines = key_lines(DOC)
    assert locate(lines, ("rules", 0, "when", "header", "name")) == 14
    assert locate(lines, ("rules", 0, "then", "cascade", 1)) == 15
    assert locate(lines, ("nowhere",)) is None


def test_keys_set_twice_are_reported() -> None:
    repeated: list[tuple[tuple[str | int, ...], int]] = []
    key_lines("[a]\nx = 1\ny = 2\nx = 3\n", repeated)
    assert repeated == [(("a", "x"), 4)]


def test_malformed_text_never_raises() -> None:
    # found by the fuzzer: an unclosed array-of-tables header, and a key holding U+0085, which
    # str.splitlines() (but not TOML) treats as a line break
    assert key_lines("[[") == {("",): 1, ("", 0): 1}
    assert key_lines('[server]\n"0\x85" = 1\n')[("server", "0\x85")] == 2
    assert key_lines('["\\q"]\n') == {("\\q",): 1}
