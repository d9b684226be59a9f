"""Who may use the daemon: client keys, checked in constant time, and the Host names it answers.

Keys come from `[server] api_keys_env` (names of environment variables) and `api_keys_file` (one
key a line, `#` comments; `name: key` names it), read once at start. Every key has a name, the
client's: its variable's name, the name its line gives, or `<file>:<line>`. The name of the key
a request came with is recorded in the ledger (`requests.client`) and breaks stats, the dashboard
and budgets down by client. A client sends one as `Authorization: Bearer <key>`
or `x-api-key: <key>`.

The Host check (loopback listeners only; beyond loopback, keys protect) answers a request only
when its Host header is exactly one of the allowed names with the port the daemon listens on, so
a web page cannot reach the daemon through a DNS name it rebinds to 127.0.0.1, nor through a
page of another local port. A Host without a port means http's 80; `name@host`, paths, an
empty Host and none at all (HTTP/1.0) are refused. The port is known once the listener has
bound (`--port 0`): until then every Host is refused. `host_check` is the middleware.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from pirouter_py.config import ServerConfig
from pirouter_py.errors import ForbiddenHost, PirouterError

LOCAL_HOSTS = frozenset(("localhost", "127.0.0.1", "::1"))
HTTP_PORT = 80  # what a Host header without a port means (the daemon speaks http only)
# `name[:port]` or `[v6]:port`, nothing else: no userinfo, path, spaces or empty port
_AUTHORITY = re.compile(r"^(?:\[([0-9a-f:.]+)\]|([a-z0-9._-]+))(?::([0-9]{1,5}))?$")


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


def authority(host_header: str) -> tuple[str, int] | None:
    """`[::1]:11435` -> `("::1", 11435)`; `localhost` -> `("localhost", 80)`; None for anything
    that is not a plain `name[:port]` (`a:1@b`, `a/x`, an empty value, port 0)."""
    found = _AUTHORITY.match(host_header.strip().lower())
    if found is None:
        return None
    v6, name, port = found.groups()
    if v6 is not None:
        try:
            ipaddress.IPv6Address(v6)
        except ValueError:
            return None
    number = HTTP_PORT if port is None else int(port)
    if not 0 < number < 65536:
        return None
    return (v6 or name), number


def host_name(host_header: str) -> str:
    """`[::1]:11435` -> `::1`; `localhost:80` -> `localhost`; "" when it is no plain Host."""
    found = authority(host_header)
    return "" if found is None else found[0]


def allowed_hosts(bind_host: str, extra: list[str]) -> frozenset[str]:
    """The names answered: localhost's, the bind address, `[server] allowed_hosts` (ports
    aside; `allowed_authorities` holds them)."""
    names = {bind_host.strip("[]").lower()} | {host_name(h) or h.lower() for h in extra}
    return LOCAL_HOSTS | names


def allowed_authorities(bind_host: str, extra: list[str], port: int) -> frozenset[tuple[str, int]]:
    """The (name, port) pairs answered: every allowed name with the daemon's `port`, except an
    `[server] allowed_hosts` entry that names its own (`proxy.lan:80` for a proxy that sends
    `Host: proxy.lan`)."""
    pairs = {(name, port) for name in LOCAL_HOSTS | {bind_host.strip("[]").lower()}}
    for entry in extra:
        found = authority(entry)
        if found is None:
            pairs.add((entry.strip("[]").lower(), port))
        elif ":" in entry.rsplit("]", 1)[-1]:  # a port given
            pairs.add(found)
        else:
            pairs.add((found[0], port))
    return frozenset(pairs)


@dataclass(slots=True)
class Listener:
    """The pairs the loopback listener answers, set once it has bound its port; empty until
    then (every request refused); None beyond loopback (no Host check: keys protect)."""

    allowed: frozenset[tuple[str, int]] | None = frozenset()


def host_check(listener: Listener) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The middleware refusing a Host header that is not exactly an allowed name and port.
    Installed after the errors middleware, which answers its ForbiddenHost in the client's
    protocol."""

    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        allowed = listener.allowed
        # the header itself: without one, aiohttp's `request.host` is the socket's address
        if allowed is not None and authority(request.headers.get("Host", "")) not in allowed:
            raise ForbiddenHost(
                f"pirouter does not answer for host {request.headers.get('Host', '')!r}; "
                "send the address and port it listens on, or add the name to [server] "
                'allowed_hosts if it is yours, with its port when it is another ("name:8080", '
                "for a tunnel or a forwarded port)"
            )
        return await handler(request)

    return check


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
