"""Session affinity: the model that last served each conversation, and when.

Sessions are kept in the ledger's request rows, so they survive a restart (the daemon seeds the
table from them). The table outlives a reload; the windows come from the config in force.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping

from pirouter_py.config.schema import AffinityConfig
from pirouter_py.types import ChatRequest, Pin, TextPart, is_billing_line

SESSION_HEADER = "x-pirouter-session"
# Headers that name the conversation, first found wins: Claude Code's, Codex's, pirouter's own.
SESSION_HEADERS = ("x-claude-code-session-id", "session-id", "session_id", SESSION_HEADER)
MAX_SESSIONS = 50_000  # past this, sessions older than the soft window are dropped


def session_key(request: ChatRequest, headers: Mapping[str, str]) -> str:
    """The conversation a request belongs to: the session the client names (SESSION_HEADERS, or
    a Responses request's `prompt_cache_key`), else a hash of its user agent, system prompt and
    first user message (what every later turn repeats; Claude Code's billing line left out)."""
    digest = hashlib.blake2b(digest_size=12)
    given = next((v for h in SESSION_HEADERS if (v := headers.get(h))), None)
    if not given and request.protocol == "responses" and request.raw is not None:
        key = request.raw.get("prompt_cache_key")  # a Responses client's name for its thread
        given = key if isinstance(key, str) else None
    if given:
        parts: tuple[str, ...] = ("header", given)
    else:
        system = "\n".join(
            "".join(p.text for p in m.content if isinstance(p, TextPart) and not is_billing_line(p))
            for m in request.messages
            if m.role == "system"
        )
        first = next((m.text for m in request.messages if m.role == "user"), "")
        parts = (headers.get("user-agent", ""), system, first)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


class Sessions:
    """Session -> (model, last served), pruned past the soft window. `last` may be shared with
    the Sessions of an earlier config (a reload): it is only ever changed in place."""

    def __init__(
        self,
        cfg: AffinityConfig,
        clock: Callable[[], float] = time.time,
        last: dict[str, tuple[str, float]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.last: dict[str, tuple[str, float]] = {} if last is None else last

    def pin(self, session: str) -> Pin | None:
        entry = self.last.get(session)
        if entry is None:
            return None
        age = self.clock() - entry[1]
        if age > self.cfg.soft_secs:
            self.last.pop(session, None)
            return None
        return Pin(entry[0], age, age <= self.cfg.hard_secs)

    def served(self, session: str, alias: str, at: float | None = None) -> None:
        self.last[session] = (alias, self.clock() if at is None else at)
        if len(self.last) > MAX_SESSIONS:  # bound memory: drop whatever is past the soft window
            cutoff = self.clock() - self.cfg.soft_secs
            for key in [k for k, v in self.last.items() if v[1] < cutoff]:
                del self.last[key]
