"""Running a Decision: try each model of the chain until one gives a usable answer.

Reference §4 semantics (the answer checks are in checks.py): retryable upstream errors escalate
when `[cascade] on_http_error` is on,
any other error stops the cascade; a request a model's protocol cannot take (a RequestError from
its encoder) moves on to the next model, and is the client's 400 when no model could take it;
answers escalate when short (`min_output_tokens`, and now
`min_output_chars`), marked (`on_marker`), truncated (`on_truncated`) or empty (`on_empty`).
An answer is never thrown away: when the chain runs out after a model gave a complete answer that
was escalated only for its shape, the latest such answer is returned (v0.1 answered 502).

The chain walk (`_walk`) is written once; a whole answer and a stream differ only in how one
attempt runs (`_complete_once`, `_stream_once`) and what is returned.

Streams are held back until the checks can decide: until enough output arrived to pass the
short/marker thresholds, or the stream ended. Until then an error or a marked answer still
escalates and the client sees nothing of it; after that the stream is committed and relayed as it
arrives. The last try of the chain is never held back: there is nowhere left to escalate.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from pirouter_py import record as rec
from pirouter_py.checks import judge, structured
from pirouter_py.config import CascadeConfig, Config, ModelConfig
from pirouter_py.errors import RequestError, UpstreamError
from pirouter_py.live.health import Health
from pirouter_py.live.limits import Limits
from pirouter_py.providers.base import Provider
from pirouter_py.record import Attempt
from pirouter_py.routing.decide import Decision
from pirouter_py.types import (
    ChatRequest,
    ChatResponse,
    Message,
    StreamEvent,
    ToolCall,
    Usage,
    anthropic_only,
    frozen,
    text_message,
)

RETRY_BASE_S = 0.25  # first retry of the same model after ~0.25 s (jittered), then doubling
RETRY_MAX_WAIT_S = 5.0  # a longer Retry-After moves on to the next model instead of waiting

T = TypeVar("T")  # what a provider call without answer checks returns
P = TypeVar("P")  # what one attempt hands back: a whole response, or a stream's events
R = TypeVar("R")  # what the cascade returns for a request: an Outcome or a StreamOutcome


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
    rest: Relay
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
    pieces: dict[int, list[Any]] = field(default_factory=dict)  # index: [id, name, [arguments]]

    def calls(self) -> tuple[ToolCall, ...]:
        """The tool calls streamed so far, whole."""
        return tuple(ToolCall(i, n, "".join(a)) for i, n, a in self.pieces.values())

    def add(self, event: StreamEvent) -> None:
        if event.text:
            self.text.append(event.text)
            self.chars += len(event.text)
            self.deltas += 1
        if event.tool_calls:
            self.tool_calls = True
            self.deltas += 1
            for piece in event.tool_calls:
                call = self.pieces.setdefault(piece.index, ["", "", []])
                call[0] = piece.id or call[0]
                call[1] = piece.name or call[1]
                call[2].append(piece.arguments)
        if event.finish_reason:
            self.finish_reason = event.finish_reason
        if event.usage is not None:
            self.usage = event.usage


def _take_usage(attempt: Attempt, usage: Usage) -> None:
    attempt.input_tokens = usage.input_tokens
    attempt.output_tokens = usage.output_tokens
    attempt.cache_read_tokens = usage.cache_read_tokens
    attempt.cache_write_tokens = usage.cache_write_tokens


def _verdict(cfg: CascadeConfig, response: ChatResponse, request: ChatRequest) -> str | None:
    """The answer checks' verdict on a whole answer (None: good to return)."""
    return judge(
        cfg,
        response.text,
        bool(response.tool_calls),
        response.finish_reason,
        response.usage.output_tokens,
        calls=response.tool_calls,
        tools=request.tools,
        response_format=request.params.get("response_format"),
    )


class Relay:
    """The rest of a committed stream, to iterate once and close. Closing it before iteration
    began still settles its attempt and closes the upstream stream."""

    def __init__(
        self,
        events: AsyncGenerator[StreamEvent, None],
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.events = events
        self.settle = settle
        self.started = False

    def __aiter__(self) -> AsyncGenerator[StreamEvent, None]:
        self.started = True
        return self.events  # iterated directly: no extra call per event

    def __anext__(self) -> Awaitable[StreamEvent]:
        self.started = True
        return self.events.__anext__()

    async def aclose(self) -> None:
        if not self.started and self.settle is not None:
            self.started = True
            await self.settle()
        await self.events.aclose()


async def _nothing() -> AsyncGenerator[StreamEvent, None]:
    return
    yield  # pragma: no cover - makes this an async generator


@dataclass(slots=True)
class _Cut:
    """What continuing a committed stream after a cut needs: the request, what was relayed so
    far, the models after the one streaming, the attempts list the ledger reads."""

    request: ChatRequest
    seen: _Seen
    chain: tuple[str, ...]
    attempts: list[Attempt]
    tokens: int


CONTINUE = (
    "Your previous answer was cut off. Continue it exactly where it stopped: no preface, no "
    "repetition of what is already written."
)


def _continuation(request: ChatRequest, partial: str, kind: str) -> ChatRequest:
    """The request that asks another model to go on with `partial`: an assistant prefill for
    Anthropic (which continues the last assistant turn), else the partial answer and an
    instruction to continue it."""
    if kind == "anthropic":  # a prefill may not end in white space
        tail: tuple[Message, ...] = (text_message("assistant", partial.rstrip()),)
    else:
        tail = (text_message("assistant", partial), text_message("user", CONTINUE))
    return replace(request, messages=(*request.messages, *tail), raw=None)


@dataclass(slots=True)
class _Turn:
    """One attempt about to run: the model's provider, the attempt's record, the checks."""

    provider: Provider
    model: ModelConfig
    attempt: Attempt
    cfg: CascadeConfig
    final: bool  # the chain's last try: whatever it answers is returned
    last: bool  # the chain's last model (it may have retries left): nowhere to escalate to
    started: float


@dataclass(slots=True)
class _Answer(Generic[P]):
    """What one attempt produced, for the chain walk to judge."""

    verdict: str | None  # the escalation outcome it earned; None: good to return
    payload: P | None  # what is returned if this answer is (None: nothing usable)
    complete: bool = True  # the whole answer is in (False: a stream committed or cut short)


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

    def _start(self, alias: str, tokens: int) -> tuple[Attempt, Provider]:
        model = self.config.models[alias]
        if self.limits is not None:
            self.limits.take(alias, tokens)
        return Attempt(alias, model.provider, model.model_id), self.providers[model.provider]

    @staticmethod
    def _translated(request: ChatRequest, turn: _Turn) -> None:
        """Note on the attempt what its provider cannot be sent (wire.foreign leaves it out)."""
        if (
            request.protocol == "anthropic"
            and turn.provider.kind != "anthropic"
            and any(anthropic_only(p) for m in request.messages for p in m.content)
        ):
            turn.attempt.note = "left out what only Anthropic reads (thinking, server tool blocks)"

    def _failed(self, cfg: CascadeConfig, attempt: Attempt, exc: UpstreamError) -> bool:
        """Record an error; True when the cascade may go on to the next model."""
        attempt.error = exc.message
        attempt.status = getattr(exc, "status", None)
        # a refusal of this request (too long for the model's context, an input it cannot
        # read) says nothing of the model's health: the next model is tried, this one not cooled
        refused = getattr(exc, "about_request", False)
        if exc.retryable and self.health is not None and not refused:
            down = getattr(exc, "unreachable", False)  # down until it answers (server/probes.py)
            retry = getattr(exc, "retry_after", None)
            self.health.failed(attempt.alias, retry, exc.message, down=down)
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

    def _exhausted(self, attempts: list[Attempt], last: UpstreamError | None) -> Outcome:
        reasons = "; ".join(f"{a.alias}: {a.error or a.outcome}" for a in attempts)
        error = UpstreamError(f"cascade exhausted, every model failed ({reasons})", retryable=False)
        if last is not None and len(attempts) == 1:
            error = last
        return Outcome(rec.STATUS_EXHAUSTED, tuple(attempts), error=error)

    async def _walk(
        self,
        chain: tuple[str, ...],
        cfg: CascadeConfig,
        tokens: int,
        attempts: list[Attempt],
        once: Callable[[_Turn], Awaitable[_Answer[P]]],
        done: Callable[[str, Attempt, P], R],
    ) -> R | Outcome:
        """Try each model of the chain until one gives a usable answer.

        A retryable error retries the same model ([cascade] retries) or moves on (on_http_error);
        any other error stops here. An answer the checks escalate moves on, and is kept when it
        is complete: if the chain runs out, the latest kept answer is returned. The last try of
        the last model is `final`: whatever it answers is returned."""
        kept: tuple[str, Attempt, P] | None = None
        last_error: UpstreamError | None = None
        refused: RequestError | None = None  # what no model of the chain could be sent
        index = tries = 0
        while index < len(chain):
            alias = chain[index]
            final = index == len(chain) - 1 and tries >= cfg.retries
            attempt, provider = self._start(alias, tokens)
            attempts.append(attempt)
            started = self.clock()
            try:
                model = self.config.models[alias]
                last = index == len(chain) - 1
                answer = await once(_Turn(provider, model, attempt, cfg, final, last, started))
            except UpstreamError as exc:
                attempt.latency_ms = (self.clock() - started) * 1000
                last_error = exc
                if not self._failed(cfg, attempt, exc):
                    if kept is not None:  # an answer escalated for its shape beats an error
                        break
                    return Outcome(rec.STATUS_UPSTREAM_ERROR, tuple(attempts), error=exc)
                if await self._again(cfg, exc, tries):
                    tries += 1
                else:
                    index, tries = index + 1, 0
                continue
            except RequestError as exc:  # this model's protocol cannot take the request
                attempt.latency_ms = (self.clock() - started) * 1000
                attempt.outcome, attempt.error = rec.FATAL_ERROR, exc.message
                refused = refused or exc
                index, tries = index + 1, 0
                continue
            except asyncio.CancelledError:
                attempt.latency_ms = (self.clock() - started) * 1000
                attempt.outcome = rec.CLIENT_CANCELLED
                raise
            self._answered(alias)
            live = answer.verdict is None and not answer.complete  # a stream relayed from here
            if not live:
                attempt.latency_ms = (self.clock() - started) * 1000
            if answer.payload is not None and (answer.verdict is None or final):
                if answer.complete:
                    attempt.outcome = answer.verdict or rec.OK
                attempt.returned = True
                return done(alias, attempt, answer.payload)
            attempt.outcome = answer.verdict or rec.OK
            if answer.complete and answer.payload is not None:
                kept = (alias, attempt, answer.payload)
            index, tries = index + 1, 0
        if kept is not None:
            alias, attempt, payload = kept
            attempt.returned = True
            return done(alias, attempt, payload)
        if refused is not None and last_error is None:
            raise refused  # a 400: the request, not an upstream, is at fault
        return self._exhausted(attempts, last_error)

    def _route(self, decision: Decision) -> tuple[tuple[str, ...], CascadeConfig, int]:
        """What a chain walk needs of a decision: its chain, its checks, its estimated tokens."""
        return decision.chain, decision.escalation or self.cfg, decision.features.estimated_tokens

    async def call(
        self,
        chain: tuple[str, ...],
        attempt_once: Callable[[Provider, ModelConfig], Awaitable[T]],
        attempts: list[Attempt],
        usage: Callable[[T], Usage | None],
    ) -> tuple[str, T] | Outcome:
        """A request with no answer checks (a text completion, embeddings): the first model of
        `chain` that answers, moving on after retryable errors as chat requests do."""

        async def once(turn: _Turn) -> _Answer[T]:
            answer = await attempt_once(turn.provider, turn.model)
            if (counted := usage(answer)) is not None:
                _take_usage(turn.attempt, counted)
            return _Answer(None, answer)

        def done(alias: str, attempt: Attempt, answer: T) -> tuple[str, T]:
            return alias, answer

        return await self._walk(chain, self.cfg, 0, attempts, once, done)

    async def run(
        self, decision: Decision, request: ChatRequest, attempts: list[Attempt] | None = None
    ) -> Outcome:
        """The whole cascade for a non-streaming request. `attempts`, when given, is filled as
        the cascade goes, so a caller that is cancelled still knows what was tried."""
        attempts = [] if attempts is None else attempts

        async def once(turn: _Turn) -> _Answer[ChatResponse]:
            self._translated(request, turn)
            response = await turn.provider.complete(request, turn.model)
            _take_usage(turn.attempt, response.usage)
            return _Answer(_verdict(turn.cfg, response, request), response)

        def done(alias: str, attempt: Attempt, response: ChatResponse) -> Outcome:
            return Outcome(rec.STATUS_OK, tuple(attempts), response, alias)

        return await self._walk(*self._route(decision), attempts, once, done)

    @staticmethod
    def _decided(cfg: CascadeConfig, seen: _Seen, json_asked: bool = False) -> bool:
        """Has a stream delivered enough to judge it before its end? (A JSON answer is judged
        whole: it parses only once it is.)"""
        if not seen.chars and not seen.tool_calls:
            return False
        if json_asked and not seen.tool_calls:
            return False
        if seen.tool_calls and cfg.tool_calls_valid:
            return False  # held until complete: an invalid call escalates unseen
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
        Events = tuple[list[StreamEvent], Relay | None, float]

        async def once(turn: _Turn) -> _Answer[Events]:
            attempt, cfg, final, started = turn.attempt, turn.cfg, turn.final, turn.started
            self._translated(request, turn)
            seen = _Seen()
            held: list[StreamEvent] = []
            ended = False
            json_asked = cfg.json_check or structured(request.params.get("response_format"))
            events = turn.provider.stream(request, turn.model)
            try:
                async for event in events:
                    if attempt.ttft_ms is None and (event.text or event.tool_calls):
                        attempt.ttft_ms = (self.clock() - started) * 1000
                    seen.add(event)
                    held.append(event)
                    # The last model commits at its first content; others once the checks can
                    # decide. Before that, an error still falls back to a kept answer.
                    if (final and (seen.chars or seen.tool_calls)) or self._decided(
                        cfg, seen, json_asked
                    ):
                        break
                else:
                    ended = True
            except UpstreamError:
                await events.aclose()
                raise
            if seen.usage is not None:
                _take_usage(attempt, seen.usage)
            if ended:
                tokens = seen.usage.output_tokens if seen.usage else seen.deltas
                text = "".join(seen.text)
                verdict = judge(
                    cfg,
                    text,
                    seen.tool_calls,
                    seen.finish_reason,
                    tokens,
                    calls=seen.calls(),
                    tools=request.tools,
                    response_format=request.params.get("response_format"),
                )
                return _Answer(verdict, (held, None, 0.0))
            if not turn.last and cfg.on_marker and cfg.on_marker in "".join(seen.text):
                await events.aclose()  # marked before its end: nothing of it is kept
                return _Answer(rec.ESCALATED_MARKER, None, complete=False)
            elapsed = (self.clock() - started) * 1000
            cut = None
            if decision.continue_on_cut:
                chain = decision.chain
                after = chain[chain.index(attempt.alias) + 1 :] if attempt.alias in chain else ()
                if after:  # a model left to go on with it
                    tokens = decision.features.estimated_tokens
                    cut = _Cut(request, seen, after, attempts, tokens)
            relay = Relay(
                self._relay(events, attempt, started, cut), self._settle(events, attempt, started)
            )
            return _Answer(None, (held, relay, elapsed), False)

        def done(alias: str, attempt: Attempt, events: Events) -> StreamOutcome:
            held, relay, elapsed = events
            upstream_ms = sum(a.latency_ms for a in attempts) + elapsed
            rest = Relay(_nothing()) if relay is None else relay
            return StreamOutcome(alias, attempt, held, rest, tuple(attempts), upstream_ms)

        return await self._walk(*self._route(decision), attempts, once, done)

    async def _relay(
        self,
        events: AsyncGenerator[StreamEvent, None],
        attempt: Attempt,
        started: float,
        cut: _Cut | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The rest of a committed stream, completing its attempt record as it goes. With `cut`,
        a failure mid-way is continued by the chain's next models (`_continued`)."""
        broken: UpstreamError | None = None
        try:
            async for event in events:
                if event.usage is not None:
                    _take_usage(attempt, event.usage)
                if cut is not None:
                    cut.seen.add(event)
                yield event
            attempt.outcome = rec.OK
        except UpstreamError as exc:
            attempt.outcome = rec.STREAM_ERROR
            attempt.error = exc.message
            # never inside tool calls (they are held whole before the commit, and a call
            # half-sent cannot be finished by another model) nor for a rule that wants exactness
            # nor for an answer that had finished (its finish reason came; only its end did not)
            seen = cut.seen if cut is not None else None
            if seen is None or seen.tool_calls or not seen.chars or seen.finish_reason:
                raise
            broken = exc
        # the client went away: cancelled, closed, or a write of the relay's failed (the relay
        # writes what a read brought before the next read, server/relay.py)
        except (asyncio.CancelledError, GeneratorExit, ConnectionResetError):
            attempt.outcome = rec.CLIENT_CANCELLED
            raise
        finally:
            attempt.latency_ms = (self.clock() - started) * 1000
            await events.aclose()
        if broken is not None and cut is not None:
            async with contextlib.aclosing(self._continued(cut, attempt, broken)) as going_on:
                async for event in going_on:
                    yield event

    async def _continued(
        self, cut: _Cut, broken_attempt: Attempt, error: UpstreamError
    ) -> AsyncGenerator[StreamEvent, None]:
        """Continue a stream cut after its commit: the chain's next models, in turn, are asked
        to go on from the text relayed so far, and their text joins the same client stream.
        Each is an attempt of its own; its note says where it took over (the splice point).
        When none can, the first error is raised (the stream ends with an error event)."""
        for alias in cut.chain:
            if self.health is not None and self.health.cooling(alias):
                continue
            partial = "".join(cut.seen.text)
            attempt, provider = self._start(alias, cut.tokens)
            attempt.note = (
                f"continued the answer of {broken_attempt.alias} from character {len(partial)}"
            )
            cut.attempts.append(attempt)
            started = self.clock()
            request = _continuation(cut.request, partial, provider.kind)
            events: AsyncGenerator[StreamEvent, None] | None = None
            try:
                # inside the try: a provider encodes the request when asked for its stream, and
                # one whose protocol cannot take it (RequestError) is passed over
                events = provider.stream(request, self.config.models[alias])
                async for event in events:
                    if event.usage is not None:
                        _take_usage(attempt, event.usage)
                    if event.tool_calls:
                        continue  # a continuation is text; a call now would not fit the answer
                    if attempt.ttft_ms is None and event.text:
                        attempt.ttft_ms = (self.clock() - started) * 1000
                    spliced = StreamEvent(event.text, (), event.finish_reason, event.usage)
                    cut.seen.add(spliced)
                    yield spliced  # no raw: the client's encoder goes on from the first model's
                attempt.outcome = rec.OK
                attempt.returned = True
                return
            except UpstreamError as exc:
                attempt.outcome = rec.STREAM_ERROR
                attempt.error = exc.message
                continue
            except RequestError as exc:  # this model's protocol cannot take the request
                attempt.outcome, attempt.error = rec.FATAL_ERROR, exc.message
                continue
            except (asyncio.CancelledError, GeneratorExit, ConnectionResetError):
                attempt.outcome = rec.CLIENT_CANCELLED
                raise
            finally:
                attempt.latency_ms = (self.clock() - started) * 1000
                if events is not None:
                    await events.aclose()
        raise error

    def _settle(
        self, events: AsyncGenerator[StreamEvent, None], attempt: Attempt, started: float
    ) -> Callable[[], Awaitable[None]]:
        """What closing a relay that never started does: the attempt ends cancelled, and the
        upstream stream is closed (a generator closed before its first step runs no cleanup)."""

        async def settle() -> None:
            attempt.outcome = rec.CLIENT_CANCELLED
            attempt.latency_ms = (self.clock() - started) * 1000
            await events.aclose()

        return settle


JUDGE_CHARS = 4_000  # of the question and of each answer, shown to a shadow check's judge
JUDGE_PROMPT = """Two assistants answered the same request. Do their answers agree: the same \
result or conclusion, the candidate as correct and complete as the reference? Reply with one \
word, YES or NO.

<request>
{question}
</request>

<reference>
{reference}
</reference>

<candidate>
{candidate}
</candidate>"""


@frozen
class ShadowVerdict:
    """A shadow check: the cheaper model's attempt and the label it earned (None: no label,
    the model or the judge failed)."""

    attempt: Attempt
    score: float | None
    outcome: str  # ok, the answer check that failed, "disagrees", or the error kind


class Shadow:
    """Shadow checks ([learning] shadow_rate): ask a cheaper model what another answered, off the
    request path, and judge its answer; nothing here reaches the client or the request's row."""

    def __init__(self, cascade: Cascade) -> None:
        self.cascade = cascade

    async def _ask(self, alias: str, request: ChatRequest) -> ChatResponse:
        model = self.cascade.config.models[alias]
        provider = self.cascade.providers[model.provider]
        return await provider.complete(request, model)

    async def check(
        self,
        alias: str,
        request: ChatRequest,
        cfg: CascadeConfig,
        reference: str | None,
        judge_alias: str | None,
    ) -> ShadowVerdict:
        model = self.cascade.config.models[alias]
        attempt = Attempt(alias, model.provider, model.model_id)
        started = self.cascade.clock()
        try:
            response = await self._ask(alias, replace(request, stream=False))
        except (UpstreamError, RequestError) as exc:
            attempt.outcome, attempt.error = rec.FATAL_ERROR, exc.message
            return ShadowVerdict(attempt, None, "error")
        finally:
            attempt.latency_ms = (self.cascade.clock() - started) * 1000
        _take_usage(attempt, response.usage)
        verdict = _verdict(cfg, response, request)
        attempt.outcome = verdict or rec.OK
        if verdict is not None:
            return ShadowVerdict(attempt, 0.0, verdict)
        if judge_alias is None or reference is None or response.tool_calls:
            return ShadowVerdict(attempt, 1.0, rec.OK)
        question = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        prompt = JUDGE_PROMPT.format(
            question=question[-JUDGE_CHARS:],
            reference=reference[:JUDGE_CHARS],
            candidate=response.text[:JUDGE_CHARS],
        )
        ask = ChatRequest(judge_alias, (text_message("user", prompt),), max_tokens=8)
        try:
            said = (await self._ask(judge_alias, ask)).text.strip().upper()
        except (UpstreamError, RequestError):
            return ShadowVerdict(attempt, None, "judge_error")
        if said.startswith("YES"):
            return ShadowVerdict(attempt, 1.0, rec.OK)
        if said.startswith("NO"):
            return ShadowVerdict(attempt, 0.0, "disagrees")
        return ShadowVerdict(attempt, None, "judge_unclear")
