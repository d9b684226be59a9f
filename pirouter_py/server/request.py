"""One request on its way through the daemon, and what it leaves behind.

A `Ctx` carries the request from decode to its ledger row, with the snapshot it arrived under.
`record` gives the finished request to the recorder (the ledger journals it) before the answer's
last bytes are sent; `observed` feeds the log line, metrics and live traffic after they are.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiohttp import web

from pirouter_py import record as rec
from pirouter_py.cascade import Outcome
from pirouter_py.ledger.labels import instruction_key
from pirouter_py.live.sessions import session_key
from pirouter_py.record import Attempt, RequestRecord
from pirouter_py.routing import learned
from pirouter_py.routing.decide import Decision, kept_headers
from pirouter_py.server import dashboard, shadow
from pirouter_py.server.middleware import CLIENT, error_response
from pirouter_py.server.state import STATE, Snapshot
from pirouter_py.types import ChatRequest
from pirouter_py.wire.codecs import Codec


@dataclass(slots=True)
class Ctx:
    """One request on its way through the daemon."""

    request: web.Request
    codec: Codec
    chat: ChatRequest
    snapshot: Snapshot  # the config and cascade it is served with, whatever reloads meanwhile
    started: float
    arrived: float
    rid: str
    decision: Decision | None = None
    attempts: tuple[Attempt, ...] = ()
    session: str | None = None  # the conversation, with [affinity] enabled
    tried: list[Attempt] = field(default_factory=list)  # the cascade's attempts as it goes
    recorded: bool = False
    # Requests routed without a Decision (text completions, embeddings): their rule and primary
    rule: str | None = None
    primary: str | None = None
    answer: str | None = None  # the answer's text, when kept (prompts stored, shadow judge)
    prompt: str | None = None  # the request's body as kept with store_prompts (made once)

    @property
    def route_rule(self) -> str | None:
        return self.decision.rule if self.decision is not None else self.rule


def routing_headers(ctx: Ctx, alias: str | None, overhead_ms: float) -> dict[str, str]:
    headers = {
        "x-pirouter-request-id": ctx.rid,
        "x-pirouter-attempts": str(len(ctx.attempts)),
        "x-pirouter-overhead-ms": f"{overhead_ms:.2f}",
    }
    if (rule := ctx.route_rule) is not None:
        headers["x-pirouter-rule"] = rule
    if alias is not None:
        headers["x-pirouter-model"] = alias
    return headers


def meta(ctx: Ctx) -> dict[str, Any]:
    """What pirouter adds to a whole answer's body (`pirouter` in OpenAI's, say)."""
    assert ctx.decision is not None
    return {
        "request_id": ctx.rid,
        "rule": ctx.decision.rule,
        "attempts": [a.to_json() for a in ctx.attempts],
    }


def upstream_ms(attempts: tuple[Attempt, ...]) -> float:
    return sum(a.latency_ms for a in attempts)


def overhead_ms(ctx: Ctx) -> float:
    """pirouter's own time so far: all of it less the attempts' time upstream."""
    return (time.perf_counter() - ctx.started) * 1000 - upstream_ms(ctx.attempts)


UNREPORTED = "input tokens estimated: the upstream reported none"


def _estimate_unreported(attempts: tuple[Attempt, ...], estimate: int) -> None:
    """An answer whose upstream reported no input tokens (some OpenAI-compatible servers do
    not count) is recorded with the router's estimate, and a note saying so."""
    for a in attempts:
        if a.outcome in rec.ANSWER_OUTCOMES and not a.input_tokens and estimate:
            a.input_tokens = estimate
            a.note = f"{a.note}; {UNREPORTED}" if a.note else UNREPORTED


def record(
    ctx: Ctx,
    status: str,
    http: int,
    final: str | None,
    overhead: float,
    answer: str | None,
    stored: tuple[str, str, str] | None = None,
) -> RequestRecord:
    """The record of a finished request, given to the recorder (the ledger journals it) before
    the answer's last bytes are sent; `observed` follows."""
    ctx.recorded = True
    ctx.answer = answer  # as kept: at most [ledger] max_stored_chars (chat.py, relay.py)
    if ctx.decision is not None:
        _estimate_unreported(ctx.attempts, ctx.decision.features.estimated_tokens)
    state = ctx.request.app[STATE]
    state.served += 1
    decision = ctx.decision
    config = ctx.snapshot.config
    features = route_headers = key = None
    if state.recorder is not None:  # what only the ledger keeps, made only for it
        if decision is not None and config.keeps_features:
            ids = decision.ids or learned.request_ids(ctx.chat, decision.features)
            features = learned.encode_ids(ids)
        route_headers = orjson.dumps(kept_headers(config, ctx.request.headers)).decode()
        key = _instruction_key(ctx)
    made = RequestRecord(
        request_id=ctx.rid,
        ts=ctx.arrived,
        protocol=ctx.chat.protocol,
        requested_model=ctx.chat.model,
        rule=ctx.route_rule,
        difficulty=decision.difficulty if decision else None,
        primary=decision.primary if decision else ctx.primary,
        final=final,
        status=status,
        http_status=http,
        streamed=ctx.chat.stream,
        latency_ms=(time.perf_counter() - ctx.started) * 1000,
        overhead_ms=overhead,
        ttft_ms=next((a.ttft_ms for a in ctx.attempts if a.returned), None),
        user_agent=ctx.request.headers.get("user-agent", ""),
        attempts=ctx.attempts,
        session=ctx.session,
        pin=decision.pin if decision else None,
        estimated_tokens=decision.features.estimated_tokens if decision else 0,
        stored_response=stored,
        features=features,
        client=ctx.request.get(CLIENT),
        route_headers=route_headers,
        instruction_key=key,
    )
    if state.recorder is not None:
        if config.ledger.store_prompts and ctx.chat.raw is not None:
            prompt = kept_prompt(ctx)
            state.recorder.record(replace(made, prompt=prompt, answer=answer), config.models)
        else:
            state.recorder.record(made, config.models)
    return made


def _instruction_key(ctx: Ctx) -> str | None:
    """What a regenerate of this request would repeat (ledger/labels.py), for a person's turn
    only: an agent sending its tool results again, or a side call, is no one asking again."""
    if ctx.decision is None or ctx.decision.features.turn != "user":
        return None
    return instruction_key(ctx.chat, ctx.session or session_key(ctx.chat, ctx.request.headers))


def kept_prompt(ctx: Ctx) -> str:
    """The request's body as store_prompts keeps it (at most [ledger] max_stored_chars), encoded
    once for the ledger and the live feed."""
    if ctx.prompt is None:
        raw = orjson.dumps(ctx.chat.raw).decode()
        ctx.prompt = rec.capped(raw, ctx.snapshot.config.ledger.max_stored_chars)
    return ctx.prompt


# requests whose client key is kept in memory for feedback: their rows are in the ledger long
# before this many newer requests have finished
OWNERS_KEPT = 10_000


def observed(ctx: Ctx, made: RequestRecord) -> None:
    """What the daemon learns from a finished request (log line, metrics, live traffic); for an
    answer, after it is sent: the client need not wait (the log line alone is ~20-40 µs)."""
    state = ctx.request.app[STATE]
    config = ctx.snapshot.config
    owners = state.owners  # whose request this was, for its feedback (server/feedback.py)
    owners[made.request_id] = made.client
    if len(owners) > OWNERS_KEPT:
        del owners[next(iter(owners))]
    if state.request_lines is not None:
        state.request_lines.finished(made, config.server.log_requests_per_sec)
    if state.metrics is not None:
        state.metrics.observe(made, config.models)
    if state.watchers:  # a dashboard is watching the live feed
        prompt = None
        if config.ledger.store_prompts and ctx.chat.raw is not None:
            prompt = kept_prompt(ctx)
        answer = ctx.answer if config.ledger.store_prompts else None
        dashboard.publish(state, made, config.models, prompt, answer)
    if config.learning.shadow_rate > 0:
        shadow.maybe(state, ctx.snapshot, ctx.decision, ctx.chat, ctx.answer, made)
    ctx.snapshot.traffic.finished(made)


def failed(ctx: Ctx, outcome: Outcome) -> web.Response:
    """The cascade found no answer: 502 in the client's protocol, recorded."""
    ctx.attempts = outcome.attempts
    overhead = overhead_ms(ctx)
    assert outcome.error is not None
    observed(ctx, record(ctx, outcome.status, 502, None, overhead, None))
    return error_response(
        ctx.codec,
        502,
        outcome.error.message,
        "upstream_error",
        headers=routing_headers(ctx, None, overhead),
    )


def cancelled(ctx: Ctx, shutdown: bool = False) -> None:
    """The client went away before an answer was committed (or, `shutdown`, the drain ran out
    and the client gets a 503): record what had been tried."""
    ctx.attempts = tuple(ctx.tried)
    status, code = (rec.STATUS_SHUTDOWN, 503) if shutdown else (rec.STATUS_CLIENT_CANCELLED, 499)
    observed(ctx, record(ctx, status, code, None, overhead_ms(ctx), None))


async def send_whole(ctx: Ctx, response: web.Response, made: RequestRecord) -> web.Response:
    """Send a whole answer here rather than by aiohttp after the handler returns, so that the
    bookkeeping (`observed`) follows it and the client need not wait for it."""
    try:
        with contextlib.suppress(ConnectionResetError):
            await response.prepare(ctx.request)
            await response.write_eof()
    finally:
        observed(ctx, made)
    return response
