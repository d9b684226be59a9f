"""In-place edits of the user's config.toml (`models add|enable|disable`, `config set`), with
tomlkit: every comment, blank line and key order outside the edited lines stays as it was.

An edit is checked like a load (`parse_config`) before it is written; one that would make the
file invalid is refused with the errors, and the file is left untouched. Writes are atomic (a
temporary file beside it, then a rename) and keep the file's mode (0600 for a new one).
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
from tomlkit.items import Table

from pirouter_py.config.load import parse_config
from pirouter_py.config.rules import did_you_mean
from pirouter_py.errors import ConfigProblem


class EditError(Exception):
    """An edit that cannot be made: what and why, with the fix."""


def read(path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EditError(
            f"{path}: no config file there; write one with `pirouter init` (or pass --config)"
        ) from None
    except tomlkit.exceptions.ParseError as exc:
        raise EditError(f"{path}:{exc.line}: not valid TOML ({exc}); fix it first") from None


def write(
    path: Path, doc: tomlkit.TOMLDocument, environ: Mapping[str, str] | None = None
) -> tuple[ConfigProblem, ...]:
    """Check the edited text as `pirouter run` would load it, then write it atomically;
    returns the warnings. Raises ConfigError (nothing written) for an invalid result."""
    text = tomlkit.dumps(doc)
    _, warnings = parse_config(text, str(path), environ)
    write_text(path, text)
    return warnings


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


def set_value(doc: tomlkit.TOMLDocument, dotted: str, value: Any) -> None:
    """Set `dotted` to `value`, making the tables on the way when missing."""
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


def add_model(doc: tomlkit.TOMLDocument, alias: str, fields: Mapping[str, Any]) -> None:
    """A new `[models.<alias>]` table after the last model's."""
    models = doc.get("models")
    if models is not None and alias in models:
        raise EditError(
            f"model `{alias}` already exists; change it with "
            f"`pirouter config set models.{alias}.KEY VALUE`, or pick another alias"
        )
    table = tomlkit.table()
    for key, value in fields.items():
        if value is not None:
            table[key] = value
    if models is None:
        models = tomlkit.table(is_super_table=True)
        doc["models"] = models
    models[alias] = table


def set_enabled(doc: tomlkit.TOMLDocument, alias: str, enabled: bool) -> None:
    models = doc.get("models") or {}
    if alias not in models:
        raise EditError(
            f"no model `{alias}` in the file"
            + did_you_mean(alias, list(models))
            + "; `pirouter models` lists them"
        )
    models[alias]["enabled"] = enabled
