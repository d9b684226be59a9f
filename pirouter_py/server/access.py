"""Who may use the daemon: client keys, checked in constant time, and the Host names it answers.

Keys come from `[server] api_keys_env` (names of environment variables) and `api_keys_file` (one
key a line, `#` comments; `name: key` names it), read once at start. Every key has a name, the
client's: its variable's name, the name its line gives, or `<file>:<line>`. The name of the key
a request came with is recorded in the ledger (`requests.client`) and breaks stats, the dashboard
and budgets down by client. A client sends one as `Authorization: Bearer <key>`
or `x-api-key: <key>`. The Host check refuses requests whose Host header names another host: a web
page cannot reach the loopback daemon through a DNS name it rebinds to 127.0.0.1.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from pathlib import Path

from pirouter_py.config import ServerConfig
from pirouter_py.errors import PirouterError

LOCAL_HOSTS = frozenset(("localhost", "127.0.0.1", "::1"))


Keys = tuple[tuple[bytes, str], ...]  # (key, the client's name)
_NAMED = re.compile(r"^([A-Za-z0-9_.@-]{1,64})\s*:\s*(\S+)$")


def load_keys(server: ServerConfig, environ: Mapping[str, str] | None = None) -> Keys:
    """The client keys configured, each with its client's name; an error names a variable or
    file that yields none."""
    env = os.environ if environ is None else environ
    keys: list[tuple[bytes, str]] = []
    for name in server.api_keys_env:
        value = env.get(name, "").strip()
        if not value:
            raise PirouterError(
                f"[server] api_keys_env names {name}, which is not set; export "
                "it or remove it from the list"
            )
        keys.append((value.encode(), name))
    if server.api_keys_file:
        path = Path(server.api_keys_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise PirouterError(
                f"[server] api_keys_file {path} cannot be read: {exc.strerror or exc}"
            ) from None
        found = []
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            named = _NAMED.match(text)
            if named is not None:
                found.append((named[2].encode(), named[1]))
            else:
                found.append((text.encode(), f"{path.name}:{number}"))
        if not found:
            raise PirouterError(f"[server] api_keys_file {path} holds no key (one a line)")
        keys += found
    return tuple(keys)


def presented_key(headers: Mapping[str, str]) -> bytes:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip().encode()
    return headers.get("x-api-key", "").strip().encode()


def key_name(keys: Keys, headers: Mapping[str, str]) -> str | None:
    """The name of the client whose key the request carries, or None. Constant time in the
    key's content: every configured key is compared."""
    given = presented_key(headers)
    found = None
    for key, name in keys:
        if hmac.compare_digest(key, given):
            found = name
    return found if given else None


def key_ok(keys: Keys, headers: Mapping[str, str]) -> bool:
    return key_name(keys, headers) is not None


def allowed_hosts(bind_host: str, extra: list[str]) -> frozenset[str]:
    return LOCAL_HOSTS | {bind_host.strip("[]").lower()} | {h.lower() for h in extra}


def host_name(host_header: str) -> str:
    """`[::1]:11435` -> `::1`; `localhost:80` -> `localhost`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


# CORS: off unless [server] cors_origins lists the origins (or "*") whose pages may call us.
CORS_EXPOSE = (
    "x-pirouter-request-id, x-pirouter-rule, x-pirouter-model, x-pirouter-attempts, "
    "x-pirouter-overhead-ms"
)


def cors_origin(allowed: list[str], origin: str | None) -> str | None:
    """The Access-Control-Allow-Origin value for `origin`, or None when it is not allowed."""
    if not allowed or origin is None:
        return None
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


def cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": CORS_EXPOSE,
        "Vary": "Origin",
    }


def preflight_headers(requested: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": requested,
        "Access-Control-Max-Age": "600",
    }
