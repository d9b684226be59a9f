"""Who sees what: the operator sees every client's records, a client key only its own.

The authorization model (the README draws it as a table):
- the operator: a request on loopback when no keys are configured (the machine's owner), or one
  with an operator key (`[server] admin_keys_env`): every client's requests, prompts and answers,
  stats, live events and feedback;
- a client key: only the requests it made: the dashboard's panels, its newest requests and its
  live feed are filtered to them, its feedback is accepted on them alone (any other id is a 404,
  as one that does not exist), and its stored Responses are its own (server/responses.py);
- with keys configured, a request without one gets nothing but /healthz (server/middleware.py).
A scope is the name of the client whose records a request may read, or None for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aiohttp import web

from pirouter_py.config import ServerConfig
from pirouter_py.errors import PirouterError
from pirouter_py.server import access
from pirouter_py.server.state import STATE

Scope = str | None  # a client's name: its records only; None: everyone's (the operator)


def load(
    server: ServerConfig, environ: Mapping[str, str] | None = None
) -> tuple[access.Keys, access.Keys]:
    """Every key the daemon takes (client keys, then operator keys, which are client keys too),
    and the operator keys."""
    keys = access.load_keys(server, environ)
    if not server.admin_keys_env:
        return keys, ()
    env = os.environ if environ is None else environ
    missing = [name for name in server.admin_keys_env if not env.get(name, "").strip()]
    if missing:
        raise PirouterError(
            f"[server] admin_keys_env names {missing[0]}, which is not set; export it or "
            "remove it from the list"
        )
    operators = access.load_keys(
        server.model_copy(update={"api_keys_env": server.admin_keys_env, "api_keys_file": None}),
        environ,
    )
    # the ledger and the scopes know a client by its key's name: one name, one caller
    clash = {name for _, name in keys} & {name for _, name in operators}
    if clash:
        raise PirouterError(
            f"{sorted(clash)[0]} names a client key (api_keys_env / api_keys_file) and an "
            "operator key (admin_keys_env) at once; rename one of them"
        )
    return keys + operators, operators


def of(request: web.Request) -> Scope:
    """Whose records this request may read: None for the operator, else its client's name."""
    state = request.app[STATE]
    if not state.keys:
        return None  # no keys: only loopback is served, and that is the machine's owner
    # read again from the key (the middleware checked it already): the few endpoints that ask
    # are not on the request path, and the middleware needs nothing of this module. An operator
    # is known by its key, never by a name a keys-file line could also give
    if access.key_name(state.operator_keys, request.headers) is not None:
        return None
    return access.key_name(state.keys, request.headers) or ""


def sees(scope: Scope, client: str | None) -> bool:
    """May a caller of `scope` see a record made by `client`?"""
    return scope is None or scope == client
