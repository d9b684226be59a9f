"""Running a Decision: try each model of the chain until one gives a usable answer.

Reference §4 semantics: retryable upstream errors escalate when `[cascade] on_http_error` is on,
any other error stops the cascade; answers escalate when short (`min_output_tokens`, and now
`min_output_chars`), marked (`on_marker`), truncated (`on_truncated`) or empty (`on_empty`).
An answer is never thrown away: when the chain runs out after a model gave a complete answer that
was escalated only for its shape, the latest such answer is returned (v0.1 answered 502).

Streams are held back until the checks can decide: until enough output arrived to pass the
short/marker thresholds, or the stream ended. Until then an error or a marked answer still
escalates and the client sees nothing of it; after that the stream is committed and relayed as it
arrives. The last model of the chain is never held back: there is nowhere left to escalate.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from pirouter_py import record as rec
from pirouter_py.config import CascadeConfig, Config
from pirouter_py.errors import UpstreamError
from pirouter_py.health import Health
from pirouter_py.providers.base import Provider
from pirouter_py.record import Attempt
from pirouter_py.router import Decision
from pirouter_py.traffic import Limits
from pirouter_py.types import ChatRequest, ChatResponse, StreamEvent, Usage, frozen

RETRY_BASE_S = 0.25  # first retry of the same model after ~0.25 s (jittered), then doubling
RETRY_MAX_WAIT_S = 5.0  # a longer Retry-After moves on to the next model instead of waiting


def judge(
    cfg: CascadeConfig, text: str, tool_calls: bool, finish_reason: str | None, output_tokens: int
) -> str | None:
    """The escalation outcome a complete answer earns, or None if it is good to return."""
    # The most specific label wins: marked, then empty, truncated, short (v0.1: marker over short).
    if cfg.on_marker and cfg.on_marker in text:
        return rec.ESCALATED_MARKER
    if cfg.on_empty and not text and not tool_calls:
        return rec.ESCALATED_EMPTY
    if cfg.on_truncated and finish_reason == "length":
        return rec.ESCALATED_TRUNCATED
    if cfg.on_short_response and (
        output_tokens < cfg.min_output_tokens
        or (not tool_calls and len(text) < cfg.min_output_chars)
    ):
        return rec.ESCALATED_SHORT
    return None


@frozen
class Outcome:
    """A finished cascade: the answer and who gave it, or the error, and every attempt."""

    status: str
    attempts: tuple[Attempt, ...]
    response: ChatResponse | None = None
    alias: str | None = None
    error: UpstreamError | None = None


@dataclass(slots=True)
class StreamOutcome:
    """A committed stream: events held back so far, then the rest as it arrives."""

    alias: str
    attempt: Attempt
    held: list[StreamEvent]
    rest: AsyncIterator[StreamEvent]
    attempts: tuple[Attempt, ...]
    upstream_ms: float  # time spent waiting on upstreams up to the commit


@dataclass(slots=True)
class _Seen:
    """What a stream has delivered so far."""

    text: list[str] = field(default_factory=list)
    chars: int = 0
    deltas: int = 0
    tool_calls: bool = False
    finish_reason: str | None = None
    usage: Usage | None = None

    def add(self, event: StreamEvent) -> None:
        if event.text:
            self.text.append(event.text)
            self.chars += len(event.text)
            self.deltas += 1
        if event.tool_calls:
            self.tool_calls = True
            self.deltas += 1
        if event.finish_reason:
            self.finish_reason = event.finish_reason
        if event.usage is not None:
            self.usage = event.usage


def _take_usage(attempt: Attempt, usage: Usage) -> None:
    attempt.input_tokens = usage.input_tokens
    attempt.output_tokens = usage.output_tokens
    attempt.cache_read_tokens = usage.cache_read_tokens
    attempt.cache_write_tokens = usage.cache_write_tokens


async def _nothing() -> AsyncIterator[StreamEvent]:
    return
    yield  # pragma: no cover - makes this an async generator


class Cascade:
    """Runs decisions against the configured providers."""

    def __init__(
        self,
        config: Config,
        providers: Mapping[str, Provider],
        clock: Callable[[], float] = time.perf_counter,
        health: Health | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.config = config
        self.cfg = config.cascade
        self.providers = providers
        self.clock = clock
        self.health = health
        self.limits = limits

    def _start(self, alias: str, decision: Decision) -> tuple[Attempt, Provider]:
        model = self.config.models[alias]
        if self.limits is not None:
            self.limits.take(alias, decision.features.estimated_tokens)
        return Attempt(alias, model.provider, model.model_id), self.providers[model.provider]

    def _failed(self, cfg: CascadeConfig, attempt: Attempt, exc: UpstreamError) -> bool:
        """Record an error; True when the cascade may go on to the next model."""
        attempt.error = exc.message
        attempt.status = getattr(exc, "status", None)
        if exc.retryable and self.health is not None:
            self.health.failed(attempt.alias, getattr(exc, "retry_after", None), exc.message)
        if exc.retryable and cfg.on_http_error:
            attempt.outcome = rec.ESCALATED_HTTP_ERROR
            return True
        attempt.outcome = rec.FATAL_ERROR
        return False

    def _answered(self, alias: str) -> None:
        if self.health is not None:
            self.health.succeeded(alias)

    async def _again(self, cfg: CascadeConfig, exc: UpstreamError, tries: int) -> bool:
        """Retry the same model ([cascade] retries)? Waits a jittered backoff, or Retry-After
        when the upstream named a short one; a long Retry-After moves on to the next model."""
        if tries >= cfg.retries:
            return False
        wait = getattr(exc, "retry_after", None)
        if wait is None:
            wait = RETRY_BASE_S * 2**tries * random.uniform(0.5, 1.5)
        if wait > RETRY_MAX_WAIT_S:
            return False
        await asyncio.sleep(wait)
        return True

    async def _on_error(
        self, cfg: CascadeConfig, attempt: Attempt, exc: UpstreamError, index: int, tries: int
    ) -> tuple[int, int] | None:
        """Where a chain walk goes after a failed attempt: the (index, tries) of the next try,
        the same model again or the next one, or None when the cascade stops here."""
        if not self._failed(cfg, attempt, exc):
            return None
        if await self._again(cfg, exc, tries):
            return index, tries + 1
        return index + 1, 0

    def _exhausted(self, attempts: list[Attempt], last: UpstreamError | None) -> Outcome:
        reasons = "; ".join(f"{a.alias}: {a.error or a.outcome}" for a in attempts)
        error = UpstreamError(f"cascade exhausted, every model failed ({reasons})", retryable=False)
        if last is not None and len(attempts) == 1:
            error = last
        return Outcome(rec.STATUS_EXHAUSTED, tuple(attempts), error=error)

    async def run(
        self, decision: Decision, request: ChatRequest, attempts: list[Attempt] | None = None
    ) -> Outcome:
        """The whole cascade for a non-streaming request. `attempts`, when given, is filled as
        the cascade goes, so a caller that is cancelled still knows what was tried."""
        attempts = [] if attempts is None else attempts
        cfg = decision.escalation or self.cfg
        kept: tuple[str, ChatResponse, Attempt] | None = None
        last_error: UpstreamError | None = None
        chain = decision.chain
        index = tries = 0
        while index < len(chain):
            alias = chain[index]
            attempt, provider = self._start(alias, decision)
            attempts.append(attempt)
            started = self.clock()
            try:
                response = await provider.complete(request, self.config.models[alias])
            except UpstreamError as exc:
                attempt.latency_ms = (self.clock() - started) * 1000
                last_error = exc
                step = await self._on_error(cfg, attempt, exc, index, tries)
                if step is None:
                    return Outcome(rec.STATUS_UPSTREAM_ERROR, tuple(attempts), error=exc)
                index, tries = step
                continue
            except asyncio.CancelledError:
                attempt.latency_ms = (self.clock() - started) * 1000
                attempt.outcome = rec.CLIENT_CANCELLED
                raise
            attempt.latency_ms = (self.clock() - started) * 1000
            self._answered(alias)
            _take_usage(attempt, response.usage)
            verdict = judge(
                cfg,
                response.text,
                bool(response.tool_calls),
                response.finish_reason,
                response.usage.output_tokens,
            )
            if verdict is None:
                attempt.outcome = rec.OK
                attempt.returned = True
                return Outcome(rec.STATUS_OK, tuple(attempts), response, alias)
            attempt.outcome = verdict
            kept = (alias, response, attempt)
            index, tries = index + 1, 0
        if kept is not None:
            alias, response, attempt = kept
            attempt.returned = True
            return Outcome(rec.STATUS_OK, tuple(attempts), response, alias)
        return self._exhausted(attempts, last_error)

    @staticmethod
    def _decided(cfg: CascadeConfig, seen: _Seen) -> bool:
        """Has a stream delivered enough to judge it before its end?"""
        if not seen.chars and not seen.tool_calls:
            return False
        if cfg.on_short_response and seen.deltas < cfg.min_output_tokens:
            return False
        need_chars = len(cfg.on_marker or "")
        if cfg.on_short_response:
            need_chars = max(need_chars, cfg.min_output_chars)
        return seen.tool_calls or seen.chars >= need_chars

    async def stream(
        self, decision: Decision, request: ChatRequest, attempts: list[Attempt] | None = None
    ) -> StreamOutcome | Outcome:
        """Run until a stream is committed; an Outcome (with the error) when none could be."""
        attempts = [] if attempts is None else attempts
        cfg = decision.escalation or self.cfg
        kept: tuple[str, list[StreamEvent], Attempt] | None = None
        last_error: UpstreamError | None = None
        upstream_ms = 0.0
        chain = decision.chain
        index = tries = 0
        while index < len(chain):
            alias = chain[index]
            final = index == len(chain) - 1 and tries >= cfg.retries
            attempt, provider = self._start(alias, decision)
            attempts.append(attempt)
            started = self.clock()
            seen = _Seen()
            held: list[StreamEvent] = []
            ended = False
            events: AsyncIterator[StreamEvent] | None = None
            try:
                events = provider.stream(request, self.config.models[alias])
                async for event in events:
                    if attempt.ttft_ms is None and (event.text or event.tool_calls):
                        attempt.ttft_ms = (self.clock() - started) * 1000
                    seen.add(event)
                    held.append(event)
                    # The last model commits at its first content; others once the checks can
                    # decide. Before that, an error still falls back to a kept answer.
                    if (final and (seen.chars or seen.tool_calls)) or self._decided(cfg, seen):
                        break
                else:
                    ended = True
            except UpstreamError as exc:
                attempt.latency_ms = (self.clock() - started) * 1000
                upstream_ms += attempt.latency_ms
                last_error = exc
                if events is not None:
                    await events.aclose()  # type: ignore[attr-defined]
                step = await self._on_error(cfg, attempt, exc, index, tries)
                if step is None:
                    return Outcome(rec.STATUS_UPSTREAM_ERROR, tuple(attempts), error=exc)
                index, tries = step
                continue
            except asyncio.CancelledError:
                attempt.outcome = rec.CLIENT_CANCELLED
                attempt.latency_ms = (self.clock() - started) * 1000
                raise
            elapsed = (self.clock() - started) * 1000
            self._answered(alias)
            if seen.usage is not None:
                _take_usage(attempt, seen.usage)
            if ended:
                attempt.latency_ms = elapsed
                upstream_ms += elapsed
                tokens = seen.usage.output_tokens if seen.usage else seen.deltas
                verdict = judge(
                    cfg, "".join(seen.text), seen.tool_calls, seen.finish_reason, tokens
                )
                if verdict is not None and not final:
                    attempt.outcome = verdict
                    kept = (alias, held, attempt)
                    index, tries = index + 1, 0
                    continue
                attempt.outcome = verdict or rec.OK
                attempt.returned = True
                return StreamOutcome(alias, attempt, held, _nothing(), tuple(attempts), upstream_ms)
            assert events is not None
            marker = cfg.on_marker
            if not final and marker and marker in "".join(seen.text):
                await events.aclose()  # type: ignore[attr-defined]
                attempt.latency_ms = elapsed
                upstream_ms += elapsed
                attempt.outcome = rec.ESCALATED_MARKER
                index, tries = index + 1, 0
                continue
            attempt.returned = True
            return StreamOutcome(
                alias,
                attempt,
                held,
                self._relay(events, attempt, started),
                tuple(attempts),
                upstream_ms + elapsed,
            )
        if kept is not None:
            alias, held, attempt = kept
            attempt.returned = True
            return StreamOutcome(alias, attempt, held, _nothing(), tuple(attempts), upstream_ms)
        return self._exhausted(attempts, last_error)

    async def _relay(
        self, events: AsyncIterator[StreamEvent], attempt: Attempt, started: float
    ) -> AsyncIterator[StreamEvent]:
        """The rest of a committed stream, completing its attempt record as it goes."""
        try:
            async for event in events:
                if event.usage is not None:
                    _take_usage(attempt, event.usage)
                yield event
            attempt.outcome = rec.OK
        except UpstreamError as exc:
            attempt.outcome = rec.STREAM_ERROR
            attempt.error = exc.message
            raise
        except (asyncio.CancelledError, GeneratorExit):
            attempt.outcome = rec.CLIENT_CANCELLED
            raise
        finally:
            attempt.latency_ms = (self.clock() - started) * 1000
            await events.aclose()  # type: ignore[attr-defined]
