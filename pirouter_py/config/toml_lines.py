"""Where each key of a TOML document stands: dotted key paths mapped to 1-based line numbers.

tomlkit keeps comments and layout but not positions, and config errors must name the line. This
scanner walks the (already syntax-checked) text once: table headers, array-of-tables headers
(`[[rules]]` gives `("rules", 0)`, `("rules", 1)`, ...), key/value lines and dotted keys, skipping
multi-line strings and arrays. Keys inside an inline table resolve to the line of the key that
holds the table, through `locate()`'s longest-prefix lookup.
"""

from __future__ import annotations

import json

KeyPath = tuple[str | int, ...]


def _unquote(quoted: str) -> str:
    """A basic-string key's text; malformed ones (the file is rejected anyway) as written."""
    try:
        value = json.loads(quoted)
    except ValueError:
        return quoted.strip('"')
    return value if isinstance(value, str) else quoted


def _split_key(text: str) -> tuple[str, ...]:
    """`models."gpt-4o".quality` -> ("models", "gpt-4o", "quality")."""
    parts: list[str] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            end = i + 1
            while end < n and text[end] != ch:
                end += 2 if (ch == '"' and text[end] == "\\") else 1
            quoted = text[i : end + 1]
            buf.append(_unquote(quoted) if ch == '"' else quoted[1:-1])
            i = end + 1
            continue
        if ch == ".":
            parts.append("".join(buf).strip(" \t"))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf).strip(" \t"))
    return tuple(parts)


class _Scanner:
    """Tracks strings and brackets that continue past the end of a line."""

    def __init__(self) -> None:
        self.multiline: str | None = None  # the closing delimiter of an open multi-line string
        self.depth = 0  # open [ and { brackets

    @property
    def open(self) -> bool:
        return self.multiline is not None or self.depth > 0

    def feed(self, text: str) -> None:
        i, n = 0, len(text)
        if self.multiline is not None:
            end = text.find(self.multiline)
            if end < 0:
                return
            i = end + 3
            self.multiline = None
        while i < n:
            ch = text[i]
            if ch == "#":
                return
            if ch in "\"'":
                triple = text[i : i + 3]
                if triple in ('"""', "'''"):
                    end = text.find(triple, i + 3)
                    if end < 0:
                        self.multiline = triple
                        return
                    i = end + 3
                    continue
                i += 1
                while i < n and text[i] != ch:
                    i += 2 if (ch == '"' and text[i] == "\\") else 1
                i += 1
                continue
            if ch in "[{":
                self.depth += 1
            elif ch in "]}":
                self.depth -= 1
            i += 1


def _find_unquoted(text: str, target: str) -> int:
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == target:
            return i
    return -1


def key_lines(text: str, repeated: list[tuple[KeyPath, int]] | None = None) -> dict[KeyPath, int]:
    """Map every table header and key in `text` to its 1-based line number (the first, if set
    twice); keys assigned again are appended to `repeated` with the line of the repeat."""
    lines: dict[KeyPath, int] = {}
    arrays: dict[KeyPath, int] = {}  # array-of-tables path -> number of elements so far
    table: KeyPath = ()
    scanner = _Scanner()

    def resolve(path: tuple[str, ...], keep_last: bool) -> KeyPath:
        out: list[str | int] = []
        for i, part in enumerate(path):
            out.append(part)
            key = tuple(out)
            if key in arrays and not (keep_last and i == len(path) - 1):
                out.append(arrays[key] - 1)
        return tuple(out)

    # TOML lines end at \n (or \r\n) only; str.splitlines() would also split at \x85 and others.
    for lineno, raw in enumerate(text.split("\n"), 1):
        if scanner.open:
            scanner.feed(raw)
            continue
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[["):
            end = stripped.find("]]")
            path = resolve(_split_key(stripped[2 : end if end > 0 else None]), keep_last=True)
            index = arrays.get(path, 0)
            arrays[path] = index + 1
            table = (*path, index)
            lines.setdefault(path, lineno)
            lines[table] = lineno
        elif stripped.startswith("["):
            end = _find_unquoted(stripped, "]")
            table = resolve(_split_key(stripped[1:end]), keep_last=False)
            lines.setdefault(table, lineno)
        else:
            eq = _find_unquoted(stripped, "=")
            if eq < 0:
                continue
            key = _split_key(stripped[:eq])
            if repeated is not None and (*table, *key) in lines:
                repeated.append(((*table, *key), lineno))
            for depth in range(1, len(key) + 1):
                lines.setdefault((*table, *key[:depth]), lineno)
            scanner.feed(stripped[eq + 1 :])
    return lines


def locate(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of `path`, or of its nearest enclosing key or table that has one, or else of the
    first key inside it (`[model.x]` defines `model` only through `model.x`)."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    inside = [n for p, n in lines.items() if path and p[: len(path)] == path]
    return min(inside) if inside else None
