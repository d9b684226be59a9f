"""In-place edits of the user's config.toml (`providers add|remove`, `models add|enable|disable`,
`config set`), with tomlkit: every comment, blank line and key order outside the edited lines
stays as it was.

An edit is checked like a load (`parse_config`) before it is written; one that would make the
file invalid is refused with the errors, and the file is left untouched. One exception: a file
with no model yet is fine to write (`init` with every provider declined, then `providers add`;
`models add` completes it). `config set` refuses a key the config does not have (UnknownKey: a
typo is never written). Writes are atomic (a temporary file beside it, then a rename) and keep
the file's mode (0600 for a new one).
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import Table, Whitespace

from pirouter_py.config.load import parse_config
from pirouter_py.config.rules import did_you_mean
from pirouter_py.errors import ConfigError, ConfigProblem

# A provider's name, as `providers add` takes it (the table name models refer to)
PROVIDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EditError(Exception):
    """An edit that cannot be made: what and why, with the fix."""


class UnknownKey(EditError):
    """`config set` named a key the config does not have: a usage error, nothing written."""


def read(path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EditError(
            f"{path}: no config file there; write one with `pirouter init` (or pass --config)"
        ) from None
    except tomlkit.exceptions.ParseError as exc:
        raise EditError(f"{path}:{exc.line}: not valid TOML ({exc}); fix it first") from None


def check_text(
    text: str, source: str, environ: Mapping[str, str] | None = None
) -> tuple[ConfigProblem, ...]:
    """The warnings of `text` loaded as `pirouter run` would; ConfigError for an invalid one,
    except that declaring no model yet is fine here (a file on its way to having some)."""
    try:
        return parse_config(text, source, environ)[1]
    except ConfigError as exc:
        if any(p.key != "models" for p in exc.problems) or tomllib.loads(text).get("models"):
            raise
        return exc.warnings


def write(
    path: Path,
    doc: tomlkit.TOMLDocument,
    environ: Mapping[str, str] | None = None,
    setting: str | None = None,
) -> tuple[ConfigProblem, ...]:
    """Check the edited text as `pirouter run` would load it, then write it atomically;
    returns the warnings. Raises ConfigError (nothing written) for an invalid result, and
    UnknownKey when `setting` (the dotted key `config set` set) or a key inside it is not one
    the config has."""
    text = tomlkit.dumps(doc)
    warnings = check_text(text, str(path), environ)
    if setting is not None:
        unknown = [
            w
            for w in warnings
            if w.message.startswith("unknown key")
            and (w.key == setting or w.key.startswith((f"{setting}.", f"{setting}[")))
        ]
        if unknown:
            raise UnknownKey(_unknown(unknown[0], path))
    write_text(path, text)
    return warnings


def _unknown(problem: ConfigProblem, path: Path) -> str:
    close = re.search(r"did you mean `([^`]+)`", problem.message)
    parent = problem.key.rsplit(".", 1)[0] + "." if "." in problem.key else ""
    hint = f" (did you mean `{parent}{close[1]}`?)" if close else ""
    return (
        f"{problem.key}: no such config key{hint}; {path} not changed "
        "(config.example.toml explains every key)"
    )


def write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Replace `path` with `text` atomically, keeping its mode (or `mode`, or 0600)."""
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o600
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        Path(temp).chmod(mode)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


_PART = re.compile(r'"([^"]*)"|([^."]+)')


def split_key(dotted: str) -> list[str]:
    """`models."gpt-4o".quality` -> ["models", "gpt-4o", "quality"]."""
    parts: list[str] = []
    rest = dotted
    while rest:
        match = _PART.match(rest)
        if match is None:
            raise EditError(f"{dotted!r} is not a dotted key; write e.g. routing.profile")
        parts.append(match[1] if match[1] is not None else match[2].strip())
        rest = rest[match.end() :]
        if rest.startswith("."):
            rest = rest[1:]
            if not rest:
                raise EditError(f"{dotted!r} ends with a dot")
        elif rest:
            raise EditError(f"{dotted!r} is not a dotted key; quote names with dots in them")
    return parts


def value_of(text: str) -> Any:
    """A value as TOML reads it (`true`, `2.5`, `["a", "b"]`, `"quoted"`), else the text as a
    string (`balanced`, `127.0.0.1:9000`)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _resolve(doc: Container | Table, parts: list[str]) -> list[str]:
    """Join parts back where an existing table's name has dots in it (`models.llama3.2-3b.x`
    names the table `llama3.2-3b` when it exists)."""
    out: list[str] = []
    node: Any = doc
    i = 0
    while i < len(parts):
        for j in range(len(parts), i, -1):
            name = ".".join(parts[i:j])
            if isinstance(node, Table | Container) and name in node and j - i > 1:
                break
        else:
            name, j = parts[i], i + 1
        out.append(name)
        node = node.get(name) if isinstance(node, Table | Container) else None
        i = j
    return out


def dotted_key(parts: list[str]) -> str:
    """A key path written as load.py's problems write it: `models."llama3.2-3b".quality`."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else f'"{p}"' for p in parts)


def set_value(doc: tomlkit.TOMLDocument, dotted: str, value: Any) -> str:
    """Set `dotted` to `value`, making the tables on the way when missing; returns the key as
    problems name it."""
    parts = _resolve(doc, split_key(dotted))
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        if part not in node:
            node[part] = tomlkit.table()
        node = node[part]
        if not isinstance(node, Table | Container | dict):
            where = ".".join(parts[: i + 1])
            raise EditError(f"{where} is a value, not a table; cannot set {dotted} inside it")
    node[parts[-1]] = value
    return dotted_key(parts)


def add_provider(doc: tomlkit.TOMLDocument, name: str, fields: Mapping[str, Any]) -> None:
    """A new `[providers.<name>]` table after the last provider's."""
    if not PROVIDER_NAME.fullmatch(name):
        raise EditError(
            f"{name!r} cannot name a provider: use letters, digits, `-`, `_` and `.` "
            "(e.g. openrouter, lm-studio)"
        )
    providers = doc.get("providers")
    if providers is not None and name in providers:
        raise EditError(
            f"provider `{name}` already exists; change it with "
            f"`pirouter config set providers.{name}.KEY VALUE`, or remove it first with "
            f"`pirouter providers remove {name}`"
        )
    table = _table(fields)
    if providers is None:
        providers = _section(doc, "providers")
    elif len(providers):
        # The comments and blank lines after the last provider's keys introduce what follows
        # (config.example.toml's [models] notes): they move below the new table.
        moved = _trailing(providers[list(providers)[-1]])
        if moved and not isinstance(moved[0][1], Whitespace):
            table.add(tomlkit.nl())
        table.value.body.extend(moved)
    providers[name] = table


def _trailing(table: Any) -> list[tuple[Any, Any]]:
    """Take the comments and blank lines that end `table`'s body (they introduce what follows
    it in the file, not its keys) out of it."""
    body = table.value.body if isinstance(table, Table) else []
    n = 0
    while n < len(body) and body[len(body) - 1 - n][0] is None:
        n += 1
    moved = body[len(body) - n :]
    del body[len(body) - n :]  # unkeyed items only: the table's key map stays right
    return moved


def remove_provider(doc: tomlkit.TOMLDocument, name: str) -> None:
    """Delete `[providers.<name>]`; refused while a model uses it (naming them)."""
    providers = doc.get("providers") or {}
    if name not in providers:
        raise EditError(
            f"no provider `{name}` in the file"
            + did_you_mean(name, list(providers))
            + "; `pirouter providers list` lists them"
        )
    models = doc.get("models") or {}
    users = [
        alias for alias, m in models.items() if isinstance(m, dict) and m.get("provider") == name
    ]
    if users:
        listed = ", ".join(f"`{a}`" for a in users)
        raise EditError(
            f"provider `{name}` is used by model{'s' if len(users) > 1 else ''} {listed}; "
            f"point {'them' if len(users) > 1 else 'it'} at another provider "
            f"(`pirouter config set models.{dotted_key([users[0]])}.provider OTHER`) "
            f"or delete {'their' if len(users) > 1 else 'its'} [models.<alias>] "
            f"table{'s' if len(users) > 1 else ''} first"
        )
    # what follows the removed table's keys introduces the next part of the file: it stays,
    # under the table before it
    names = list(providers)
    moved = _trailing(providers[name])
    if names.index(name) > 0:
        before: Any = providers[names[names.index(name) - 1]]
    else:
        keys = [k for k, _ in doc.body if k is not None]
        at = keys.index(tomlkit.key("providers")) if tomlkit.key("providers") in keys else 0
        before = doc.body[[k for k, _ in doc.body].index(keys[at - 1])][1] if at else None
    if isinstance(before, Table):
        body = before.value.body
        if (
            moved
            and body
            and isinstance(moved[0][1], Whitespace)
            and isinstance(body[-1][1], Whitespace)
        ):
            moved = moved[1:]  # one blank line between the tables, as there was
        body.extend(moved)
    del providers[name]


def add_model(doc: tomlkit.TOMLDocument, alias: str, fields: Mapping[str, Any]) -> None:
    """A new `[models.<alias>]` table after the last model's."""
    models = doc.get("models")
    if models is not None and alias in models:
        raise EditError(
            f"model `{alias}` already exists; change it with "
            f"`pirouter config set models.{alias}.KEY VALUE`, or pick another alias"
        )
    if models is None:
        models = _section(doc, "models")
    models[alias] = _table(fields)


def _table(fields: Mapping[str, Any]) -> Any:
    """A new table of the fields given a value (None: left out)."""
    table = tomlkit.table()
    for key, value in fields.items():
        if value is not None:
            table[key] = value
    return table


def _section(doc: tomlkit.TOMLDocument, name: str) -> Any:
    """A new `[name]` super-table (its tables `[name.<key>]`) at the end of `doc`."""
    section = tomlkit.table(is_super_table=True)
    doc[name] = section
    return section


def set_enabled(doc: tomlkit.TOMLDocument, alias: str, enabled: bool) -> None:
    models = doc.get("models") or {}
    if alias not in models:
        raise EditError(
            f"no model `{alias}` in the file"
            + did_you_mean(alias, list(models))
            + "; `pirouter models` lists them"
        )
    models[alias]["enabled"] = enabled
