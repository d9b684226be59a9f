"""The cascade's chain walk, whole and streamed, table-driven against an in-process fake provider.

No sockets: `Scripted` implements the Provider protocol and answers each model (its id is its
alias) from a script of steps: an answer, an error, a stream cut by an error, or a call that
never returns. The clock is a parameter: each upstream call takes exactly 0.25 s of it, so
latencies are exact.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

import pytest

from pirouter_py import cascade as cascade_module
from pirouter_py import record as rec
from pirouter_py.cascade import RETRY_MAX_WAIT_S, Cascade, Outcome, StreamOutcome
from pirouter_py.config import Config, ModelConfig, parse_config
from pirouter_py.errors import (
    RequestError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTransportError,
)
from pirouter_py.live.health import Health
from pirouter_py.providers.base import classify
from pirouter_py.record import Attempt
from pirouter_py.routing.decide import Decision, decide
from pirouter_py.types import (
    ChatRequest,
    ChatResponse,
    StreamEvent,
    ToolCall,
    ToolCallDelta,
    Usage,
    text_message,
)

CONFIG = """
[providers.p]
type = "openai"
base_url = "http://127.0.0.1:9"
api_key = "k"
[models.a]
provider = "p"
model_id = "a"
[models.b]
provider = "p"
model_id = "b"
[models.c]
provider = "p"
model_id = "c"
[cascade]
{cascade}
[[rules]]
name = "r"
when = {{ always = true }}
then = {{ primary = "a", cascade = ["b", "c"]{then} }}
"""
REQUEST = ChatRequest("auto", (text_message("user", "hi"),))
CALL_S = 0.25  # what each upstream call costs on the fake clock
CHUNKS = ("Hello", " there", " friend")
TEXT = "".join(CHUNKS)

SHORT = "on_short_response = true\nmin_output_tokens = 3"
MARKER = 'on_marker = "<escalate/>"'
MARKED = ("<escalate/>", " too hard")

OK = rec.OK
HTTP = rec.ESCALATED_HTTP_ERROR
FATAL = rec.FATAL_ERROR
SHORTED = rec.ESCALATED_SHORT
MARKED_OUT = rec.ESCALATED_MARKER
TRUNCATED = rec.ESCALATED_TRUNCATED
EMPTY = rec.ESCALATED_EMPTY


# --- the fake provider -------------------------------------------------------------------------


@dataclass(frozen=True)
class Say:
    """A scripted answer; streamed as one event per chunk, then finish reason and usage."""

    chunks: tuple[str, ...] = CHUNKS
    finish: str = "stop"
    out: int = 20  # output tokens the provider reports
    tools: bool = False

    @property
    def usage(self) -> Usage:
        return Usage(
            input_tokens=7, output_tokens=self.out, cache_read_tokens=2, cache_write_tokens=1
        )

    def response(self, model_id: str) -> ChatResponse:
        calls = (ToolCall("call_1", "search", "{}"),) if self.tools else ()
        return ChatResponse(model_id, "".join(self.chunks), calls, self.finish, self.usage)

    def events(self) -> list[StreamEvent]:
        events = [StreamEvent(text=chunk) for chunk in self.chunks]
        if self.tools:
            events.append(StreamEvent(tool_calls=(ToolCallDelta(0, "call_1", "search", "{}"),)))
        return [*events, StreamEvent(finish_reason=self.finish, usage=self.usage)]


@dataclass(frozen=True)
class Cut:
    """A stream that fails after `chunks`; as a whole answer, the error at once."""

    chunks: tuple[str, ...]
    error: UpstreamError
    finish: str | None = None  # a finish reason sent before the failure


HANG: Literal["hang"] = "hang"  # a call that never returns (until cancelled)
Step = Say | Cut | UpstreamError | RequestError | Literal["hang"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A Provider answering each model from its script, one step per call."""

    name = "p"
    kind = "openai"

    def __init__(self, script: Mapping[str, Sequence[Step]], clock: Clock) -> None:
        self.script = {alias: list(steps) for alias, steps in script.items()}
        self.clock = clock
        self.calls: list[str] = []
        self.closed: list[str] = []  # streams whose generator has finished or been closed
        self.hanging = asyncio.Event()

    def _next(self, model: ModelConfig) -> Step:
        self.calls.append(model.model_id)
        self.clock.now += CALL_S
        return self.script[model.model_id].pop(0)

    async def _hang(self) -> None:
        self.hanging.set()
        await asyncio.get_running_loop().create_future()

    async def complete(self, request: ChatRequest, model: ModelConfig) -> ChatResponse:
        step = self._next(model)
        if step == HANG:
            await self._hang()
        if isinstance(step, UpstreamError | RequestError):
            raise step
        if isinstance(step, Cut):
            raise step.error
        assert isinstance(step, Say)
        return step.response(model.model_id)

    def stream(self, request: ChatRequest, model: ModelConfig) -> AsyncGenerator[StreamEvent, None]:
        """As the real providers: a request the model's protocol cannot take is refused when the
        stream is asked for (they encode it then); the rest happens as the stream is read."""
        script = self.script[model.model_id]
        if script and isinstance(script[0], RequestError):
            self.closed.append(model.model_id)
            raise self._next(model)  # type: ignore[misc]
        return self._events(model)

    async def _events(self, model: ModelConfig) -> AsyncGenerator[StreamEvent, None]:
        try:
            step = self._next(model)
            if step == HANG:
                await self._hang()
            if isinstance(step, UpstreamError | RequestError):
                raise step
            if isinstance(step, Cut):
                for chunk in step.chunks:
                    yield StreamEvent(text=chunk)
                if step.finish is not None:
                    yield StreamEvent(finish_reason=step.finish)
                raise step.error
            assert isinstance(step, Say)
            for event in step.events():
                yield event
        finally:
            self.closed.append(model.model_id)


def refused(alias: str, status: int, body: str) -> UpstreamHTTPError:
    """A refusal of the request, classified as the provider adapters classify one."""
    retryable, about_request = classify(status, body)
    return UpstreamHTTPError(
        f"{alias} answered {status}: {body}",
        status=status,
        retryable=retryable,
        about_request=about_request,
    )


def down(alias: str, status: int = 503, retry_after: float | None = None) -> UpstreamHTTPError:
    """The error a provider raises for an HTTP status (429 and 5xx may escalate)."""
    return UpstreamHTTPError(
        f"{alias} answered {status}",
        status=status,
        retryable=status == 429 or status >= 500,
        retry_after=retry_after,
    )


# --- building and running ----------------------------------------------------------------------


@functools.cache
def configured(cascade: str, then: str = "") -> Config:
    config, warnings = parse_config(CONFIG.format(cascade=cascade, then=then), "<test>")
    assert warnings == ()  # a misspelt [cascade] key would silently test the defaults
    return config


def decision(config: Config, chain: tuple[str, ...]) -> Decision:
    decided = decide(config, REQUEST, {})
    assert decided.chain == ("a", "b", "c")
    return dataclasses.replace(decided, primary=chain[0], cascade=chain[1:])


@dataclass(frozen=True)
class Result:
    """What the client got, and the attempts as the ledger would record them."""

    status: str
    alias: str | None
    text: str | None
    attempts: tuple[tuple[str, str, bool], ...]  # (alias, outcome, returned)
    error: str | None = None


def summary(attempts: Sequence[Attempt]) -> tuple[tuple[str, str, bool], ...]:
    return tuple((a.alias, a.outcome, a.returned) for a in attempts)


def failure(outcome: Outcome, attempts: list[Attempt]) -> Result:
    assert outcome.attempts == tuple(attempts)
    text = None if outcome.response is None else outcome.response.text
    error = None if outcome.error is None else outcome.error.message
    return Result(outcome.status, outcome.alias, text, summary(attempts), error)


async def whole(cascade: Cascade, chosen: Decision, attempts: list[Attempt]) -> Result:
    return failure(await cascade.run(chosen, REQUEST, attempts), attempts)


async def drain(outcome: StreamOutcome) -> tuple[list[str], str | None]:
    """The texts the client sees (held, then the rest), and the error the rest ended with."""
    texts = [event.text for event in outcome.held]
    try:
        async for event in outcome.rest:
            texts.append(event.text)
    except UpstreamError as exc:
        return texts, exc.message
    return texts, None


async def streamed(cascade: Cascade, chosen: Decision, attempts: list[Attempt]) -> Result:
    outcome = await cascade.stream(chosen, REQUEST, attempts)
    if isinstance(outcome, Outcome):
        return failure(outcome, attempts)
    assert outcome.attempts == tuple(attempts)
    texts, error = await drain(outcome)
    # As the server records it: an error after the commit makes the request an upstream error.
    status = rec.STATUS_OK if error is None else rec.STATUS_UPSTREAM_ERROR
    return Result(status, outcome.alias, "".join(texts), summary(attempts), error)


Mode = Callable[[Cascade, Decision, list[Attempt]], Coroutine[Any, Any, Result]]
MODES: dict[str, Mode] = {"whole": whole, "stream": streamed}


@dataclass
class Run:
    """One cascade run against a script: what came back and what the fakes saw."""

    result: Result
    attempts: list[Attempt]
    provider: Scripted
    clock: Clock


def go(
    mode: str,
    cascade_toml: str,
    chain: tuple[str, ...],
    script: Mapping[str, Sequence[Step]],
    health: Health | None = None,
    clock: Clock | None = None,
    then: str = "",
) -> Run:
    clock = clock or Clock()
    provider = Scripted(script, clock)
    config = configured(cascade_toml, then)
    cascade = Cascade(config, {"p": provider}, clock=clock, health=health)
    attempts: list[Attempt] = []
    result = asyncio.run(MODES[mode](cascade, decision(config, chain), attempts))
    assert provider.calls == [a.alias for a in attempts]  # one attempt per upstream call
    return Run(result, attempts, provider, clock)


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Retry waits are recorded, not slept; the jitter is its midpoint (x1.0)."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    monkeypatch.setattr(cascade_module, "random", SimpleNamespace(uniform=lambda lo, hi: 1.0))
    yield slept


# --- the chain walk: every attempt outcome, whole and streamed -----------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    cascade: str
    chain: tuple[str, ...]
    script: dict[str, tuple[Step, ...]]
    whole: Result
    stream: Result | None = None  # None: as whole
    then: str = ""  # added to the rule's `then` table


CASES = [
    Case("ok", "", ("a", "b"), {"a": (Say(),)}, Result("ok", "a", TEXT, (("a", OK, True),))),
    Case(
        "retryable-http-error-escalates",
        "",
        ("a", "b"),
        {"a": (down("a"),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", HTTP, False), ("b", OK, True))),
    ),
    Case(
        "transport-error-escalates",
        "",
        ("a", "b"),
        {"a": (UpstreamTransportError("a timed out", retryable=True),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", HTTP, False), ("b", OK, True))),
    ),
    Case(
        "non-retryable-error-is-fatal",
        "",
        ("a", "b"),
        {"a": (down("a", 401),), "b": (Say(),)},
        Result("upstream_error", None, None, (("a", FATAL, False),), "a answered 401"),
    ),
    Case(
        "on-http-error-off-makes-retryable-fatal",
        "on_http_error = false",
        ("a", "b"),
        {"a": (down("a", 503),), "b": (Say(),)},
        Result("upstream_error", None, None, (("a", FATAL, False),), "a answered 503"),
    ),
    Case(
        "every-model-fails-exhausted",
        "",
        ("a", "b"),
        {"a": (down("a", 503),), "b": (down("b", 500),)},
        Result(
            "exhausted",
            None,
            None,
            (("a", HTTP, False), ("b", HTTP, False)),
            "cascade exhausted, every model failed (a: a answered 503; b: b answered 500)",
        ),
    ),
    Case(
        "one-model-exhausted-keeps-its-error",
        "",
        ("a",),
        {"a": (down("a", 429),)},
        Result("exhausted", None, None, (("a", HTTP, False),), "a answered 429"),
    ),
    Case(
        "short-by-tokens",
        SHORT,
        ("a", "b"),
        {"a": (Say(("Hi",), out=1),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", SHORTED, False), ("b", OK, True))),
    ),
    Case(
        "short-by-chars",
        "on_short_response = true\nmin_output_tokens = 0\nmin_output_chars = 12",
        ("a", "b"),
        {"a": (Say(("Hi there",)),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", SHORTED, False), ("b", OK, True))),
    ),
    Case(
        "marker",
        MARKER,
        ("a", "b"),
        {"a": (Say(MARKED),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", MARKED_OUT, False), ("b", OK, True))),
    ),
    Case(
        "truncated",  # few deltas: the stream ends before it is committed, so it is judged whole
        SHORT + "\non_truncated = true",
        ("a", "b"),
        {"a": (Say(("Once upon a time",), finish="length"),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", TRUNCATED, False), ("b", OK, True))),
    ),
    Case(
        "empty",
        "on_empty = true",
        ("a", "b"),
        {"a": (Say((), out=0),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", EMPTY, False), ("b", OK, True))),
    ),
    Case(
        "a-tool-call-is-not-empty",
        "on_empty = true",
        ("a", "b"),
        {"a": (Say((), tools=True),)},
        Result("ok", "a", "", (("a", OK, True),)),
    ),
    Case(
        "a-rules-escalation-overrides-cascade",  # [cascade] leaves on_empty off
        "",
        ("a", "b"),
        {"a": (Say((), out=0),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", EMPTY, False), ("b", OK, True))),
        then=", escalation = { on_empty = true }",
    ),
    Case(
        "error-before-commit-escalates-unseen",
        SHORT,  # "Hel" is one delta of the three needed: held back, never shown
        ("a", "b"),
        {"a": (Cut(("Hel",), down("a", 502)),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", HTTP, False), ("b", OK, True))),
    ),
    Case(  # streamed: the next model continues the answer in the same stream
        "error-after-commit-is-continued",
        "",
        ("a", "b"),
        {"a": (Cut(("Hello", " there"), down("a", 502)),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", HTTP, False), ("b", OK, True))),
        Result("ok", "a", "Hello there" + TEXT, (("a", rec.STREAM_ERROR, True), ("b", OK, True))),
    ),
    Case(  # ... unless the rule wants exactness, or no model is left to continue
        "error-after-commit-surfaces-without-continue_on_cut",
        "",
        ("a", "b"),
        {"a": (Cut(("Hello", " there"), down("a", 502)),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", HTTP, False), ("b", OK, True))),
        Result(
            "upstream_error", "a", "Hello there", (("a", rec.STREAM_ERROR, True),), "a answered 502"
        ),
        then=", continue_on_cut = false",
    ),
    Case(  # the answer had finished (only its end was lost): nothing to continue
        "error-after-the-finish-is-not-continued",
        "",
        ("a", "b"),
        {"a": (Cut(("Hello", " there"), down("a", 502), "stop"),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", HTTP, False), ("b", OK, True))),
        Result(
            "upstream_error", "a", "Hello there", (("a", rec.STREAM_ERROR, True),), "a answered 502"
        ),
    ),
    Case(  # a model that cannot take the continuation is passed over
        "a-continuation-goes-past-a-model-that-cannot-take-it",
        "",
        ("a", "b", "c"),
        {
            "a": (Cut(("Hello", " there"), down("a", 502)),),
            "b": (RequestError("n > 1 is not supported"),),
            "c": (Say(),),
        },
        Result("ok", "c", TEXT, (("a", HTTP, False), ("b", FATAL, False), ("c", OK, True))),
        Result(
            "ok",
            "a",
            "Hello there" + TEXT,
            (("a", rec.STREAM_ERROR, True), ("b", FATAL, False), ("c", OK, True)),
        ),
    ),
    Case(
        "error-after-commit-surfaces-when-no-model-can-continue",
        "",
        ("a", "b"),
        {"a": (Cut(("Hello", " there"), down("a", 502)),), "b": (down("b"),)},
        Result(
            "exhausted",
            None,
            None,
            (("a", HTTP, False), ("b", HTTP, False)),
            "cascade exhausted, every model failed (a: a answered 502; b: b answered 503)",
        ),
        Result(
            "upstream_error",
            "a",
            "Hello there",
            (("a", rec.STREAM_ERROR, True), ("b", rec.STREAM_ERROR, False)),
            "a answered 502",
        ),
    ),
    Case(
        "chain-runs-out-the-shape-escalated-answer-is-returned",
        SHORT,
        ("a", "b"),
        {"a": (Say(("Hi",), out=1),), "b": (down("b"),)},
        Result("ok", "a", "Hi", (("a", SHORTED, True), ("b", HTTP, False))),
    ),
    Case(
        "chain-runs-out-the-latest-such-answer-is-returned",
        SHORT,
        ("a", "b", "c"),
        {"a": (Say(("Hi",), out=1),), "b": (Say(("Yo",), out=2),), "c": (down("c"),)},
        Result("ok", "b", "Yo", (("a", SHORTED, False), ("b", SHORTED, True), ("c", HTTP, False))),
    ),
    Case(
        "the-last-model-answers-whatever-its-shape",
        SHORT,
        ("a", "b"),
        {"a": (Say(("Hi",), out=1),), "b": (Say(("Yo",), out=2),)},
        Result("ok", "b", "Yo", (("a", SHORTED, False), ("b", SHORTED, True))),
        # The last model's stream is committed at its first content and relayed unjudged.
        Result("ok", "b", "Yo", (("a", SHORTED, False), ("b", OK, True))),
    ),
    Case(
        "the-last-model-answers-even-empty",
        "on_empty = true",
        ("a",),
        {"a": (Say((), out=0),)},
        Result("ok", "a", "", (("a", EMPTY, True),)),
    ),
    Case(
        "a-marked-answer-is-kept-whole-but-not-cut-short",
        MARKER,
        ("a", "b"),
        {"a": (Say(MARKED),), "b": (down("b"),)},
        Result("ok", "a", "<escalate/> too hard", (("a", MARKED_OUT, True), ("b", HTTP, False))),
        # Streamed, the marker is seen before the end: the stream is dropped, nothing is kept.
        Result(
            "exhausted",
            None,
            None,
            (("a", MARKED_OUT, False), ("b", HTTP, False)),
            "cascade exhausted, every model failed (a: escalated_marker; b: b answered 503)",
        ),
    ),
    Case(
        "the-last-model-answers-even-marked",
        MARKER,
        ("a",),
        {"a": (Say(MARKED),)},
        Result("ok", "a", "<escalate/> too hard", (("a", MARKED_OUT, True),)),
        Result("ok", "a", "<escalate/> too hard", (("a", OK, True),)),
    ),
    Case(
        "truncation-is-only-known-at-the-end",
        "on_truncated = true",
        ("a", "b"),
        {"a": (Say(finish="length"),), "b": (Say(),)},
        Result("ok", "b", TEXT, (("a", TRUNCATED, False), ("b", OK, True))),
        # Nothing holds a stream back for truncation: committed at its first chunk.
        Result("ok", "a", TEXT, (("a", OK, True),)),
    ),
]


@pytest.mark.parametrize(
    ("mode", "case"),
    [pytest.param(mode, case, id=f"{mode}-{case.id}") for case in CASES for mode in MODES],
)
def test_chain_walk(mode: str, case: Case) -> None:
    expected = case.stream if mode == "stream" and case.stream is not None else case.whole
    assert go(mode, case.cascade, case.chain, case.script, then=case.then).result == expected


@pytest.mark.parametrize("mode", MODES)
def test_a_kept_answer_outlives_a_fatal_error(mode: str) -> None:
    """'An answer is never thrown away' (cascade.py): a shape-escalated answer in hand is
    returned when the next model then fails for good, rather than a 502."""
    run = go(mode, SHORT, ("a", "b"), {"a": (Say(("Hi",), out=1),), "b": (down("b", 401),)})
    assert run.result == Result("ok", "a", "Hi", (("a", SHORTED, True), ("b", FATAL, False)))


# --- retries of the same model -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("cascade", "chain", "script", "expected", "slept"),
    [
        pytest.param(
            "retries = 1",
            ("a", "b"),
            {"a": (down("a", 503, retry_after=0.0), Say())},
            Result("ok", "a", TEXT, (("a", HTTP, False), ("a", OK, True))),
            [0.0],
            id="retry-after-zero",
        ),
        pytest.param(
            "retries = 1",
            ("a", "b"),
            {"a": (down("a", 429, retry_after=RETRY_MAX_WAIT_S), Say())},
            Result("ok", "a", TEXT, (("a", HTTP, False), ("a", OK, True))),
            [RETRY_MAX_WAIT_S],
            id="retry-after-at-the-limit-is-waited",
        ),
        pytest.param(
            "retries = 1",
            ("a", "b"),
            {"a": (down("a", 429, retry_after=RETRY_MAX_WAIT_S + 1),), "b": (Say(),)},
            Result("ok", "b", TEXT, (("a", HTTP, False), ("b", OK, True))),
            [],
            id="retry-after-too-long-moves-on",
        ),
        pytest.param(
            "retries = 2",
            ("a", "b"),
            {"a": (down("a"), down("a"), Say())},
            Result("ok", "a", TEXT, (("a", HTTP, False), ("a", HTTP, False), ("a", OK, True))),
            [0.25, 0.5],
            id="jittered-backoff-doubles",
        ),
        pytest.param(
            "retries = 1",
            ("a", "b"),
            {"a": (down("a"), down("a")), "b": (Say(),)},
            Result("ok", "b", TEXT, (("a", HTTP, False), ("a", HTTP, False), ("b", OK, True))),
            [0.25],
            id="retries-spent-then-next-model",
        ),
        pytest.param(
            "retries = 1",
            ("a", "b"),
            {"a": (down("a", 401),)},
            Result("upstream_error", None, None, (("a", FATAL, False),), "a answered 401"),
            [],
            id="a-fatal-error-is-not-retried",
        ),
        pytest.param(
            "retries = 1",
            ("a",),
            {"a": (down("a"), down("a"))},
            Result(
                "exhausted",
                None,
                None,
                (("a", HTTP, False), ("a", HTTP, False)),
                "cascade exhausted, every model failed (a: a answered 503; a: a answered 503)",
            ),
            [0.25],
            id="last-model-retried-then-exhausted",
        ),
        pytest.param(
            "retries = 1\n" + SHORT,
            ("a", "b"),
            {"a": (Say(("Hi",), out=1),), "b": (Say(),)},
            Result("ok", "b", TEXT, (("a", SHORTED, False), ("b", OK, True))),
            [],
            id="a-short-answer-is-not-retried",
        ),
        pytest.param(
            "retries = 1\n" + SHORT,
            ("a",),
            {"a": (Cut(("Hel",), down("a")), Say())},
            Result("ok", "a", TEXT, (("a", HTTP, False), ("a", OK, True))),
            [0.25],
            id="last-model-retried-after-an-error-before-commit",
        ),
    ],
)
def test_retries(
    mode: str,
    cascade: str,
    chain: tuple[str, ...],
    script: dict[str, tuple[Step, ...]],
    expected: Result,
    slept: list[float],
    waits: list[float],
) -> None:
    assert go(mode, cascade, chain, script).result == expected
    assert waits == slept


@pytest.mark.parametrize("mode", MODES)
def test_retries_left_do_not_drop_the_last_models_marked_stream(mode: str) -> None:
    """With `retries`, the last model's first try is not `final`, yet a marked answer is not
    retried: it must reach the client as it does with retries = 0 (nowhere left to go)."""
    run = go(mode, "retries = 1\n" + MARKER, ("a",), {"a": (Say(MARKED),)})
    assert (run.result.status, run.result.alias, run.result.text) == (
        "ok",
        "a",
        "<escalate/> too hard",
    )
    assert [(a.alias, a.returned) for a in run.attempts] == [("a", True)]


# --- cooldowns ---------------------------------------------------------------------------------


def cooling(alias: str, left: float, error: str, failures: int = 1) -> dict[str, Any]:
    return {
        alias: {
            "cooling": True,
            "cooldown_left_s": left,
            "failures": failures,
            "last_error": error,
            "down": False,
        }
    }


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("cascade", "failed_before", "script", "snapshot"),
    [
        pytest.param(
            "",
            (),
            {"a": (down("a"),), "b": (Say(),)},
            # failed at 100.25 for 5 s, read at 100.5 after b answered
            cooling("a", 4.75, "a answered 503"),
            id="retryable-failure-cools",
        ),
        pytest.param(
            "",
            (),
            {"a": (down("a", 429, retry_after=120.0),), "b": (Say(),)},
            cooling("a", 119.75, "a answered 429"),
            id="never-shorter-than-retry-after",
        ),
        pytest.param(
            "",
            (),
            {"a": (down("a", 401),)},
            {},
            id="non-retryable-failure-does-not-cool",
        ),
        pytest.param(
            "on_http_error = false",
            (),
            {"a": (down("a"),)},
            # read at 100.25, right after the failure
            cooling("a", 5.0, "a answered 503"),
            id="retryable-cools-even-when-fatal",
        ),
        pytest.param(
            SHORT,
            (),
            {"a": (Cut(("Hel",), down("a", 502)),), "b": (Say(),)},
            cooling("a", 4.75, "a answered 502"),
            id="failure-before-commit-cools",
        ),
        pytest.param(
            "",
            ("a", "b"),
            {"a": (Say(),)},
            # a's success ends its cooldown; b, untried, still cools (5 s from 100.0)
            cooling("b", 4.75, "earlier"),
            id="success-clears",
        ),
        pytest.param(
            SHORT,
            ("a",),
            {"a": (Say(("Hi",), out=1),), "b": (Say(),)},
            {},
            id="a-short-answer-is-still-an-answer",
        ),
        pytest.param(
            "",
            (),
            {"a": (refused("a", 400, "prompt exceeds the available context size"),), "b": (Say(),)},
            {},  # the request was too long for a, which is not unwell: b answers, a does not cool
            id="a-refused-request-does-not-cool",
        ),
        pytest.param(
            "",
            (),
            {"a": (refused("a", 500, "image input is not supported"),), "b": (Say(),)},
            {},  # llama.cpp's refusal of an image it cannot read is a 500
            id="an-unsupported-input-does-not-cool",
        ),
        pytest.param(
            "",
            ("a",),
            {"a": (down("a"),), "b": (Say(),)},
            # the second failure in a row doubles the cooldown: 10 s from 100.25
            cooling("a", 9.75, "a answered 503", failures=2),
            id="failures-in-a-row-double",
        ),
    ],
)
def test_cooldowns(
    mode: str,
    cascade: str,
    failed_before: tuple[str, ...],
    script: dict[str, tuple[Step, ...]],
    snapshot: dict[str, Any],
) -> None:
    clock = Clock()
    health = Health(5.0, 60.0, clock)
    for alias in failed_before:
        health.failed(alias, error="earlier")
    go(mode, cascade, ("a", "b"), script, health=health, clock=clock)
    assert health.snapshot() == snapshot
    assert health.cooling("a") == ("a" in snapshot)


# --- streams: what is held back, what is relayed -----------------------------------------------


@pytest.mark.parametrize(
    ("cascade", "chain", "answer", "held", "rest"),
    [
        pytest.param(
            "", ("a", "b"), Say(), ["Hello"], [" there", " friend", ""], id="no-checks-first-chunk"
        ),
        pytest.param(
            SHORT, ("a", "b"), Say(), [*CHUNKS], [""], id="held-until-min-output-tokens-deltas"
        ),
        pytest.param(
            "on_short_response = true\nmin_output_tokens = 0\nmin_output_chars = 12",
            ("a", "b"),
            Say(),
            [*CHUNKS],
            [""],
            id="held-until-min-output-chars",
        ),
        pytest.param(
            MARKER,
            ("a", "b"),
            Say(),
            ["Hello", " there"],
            [" friend", ""],
            id="held-until-the-marker-could-be-seen",
        ),
        pytest.param(
            SHORT, ("a",), Say(), ["Hello"], [" there", " friend", ""], id="last-model-not-held"
        ),
        pytest.param(
            SHORT,
            ("a", "b"),
            Say(("Hi",), out=20),
            ["Hi", ""],
            [],
            id="ended-before-deciding-judged-whole",
        ),
        pytest.param("", ("a", "b"), Say((), tools=True), [""], [""], id="a-tool-call-commits"),
    ],
)
def test_stream_held_back_until_the_checks_decide(
    cascade: str, chain: tuple[str, ...], answer: Say, held: list[str], rest: list[str]
) -> None:
    clock = Clock()
    provider = Scripted({"a": (answer,)}, clock)
    config = configured(cascade)

    async def main() -> tuple[list[str], list[str], list[Attempt]]:
        attempts: list[Attempt] = []
        outcome = await Cascade(config, {"p": provider}, clock=clock).stream(
            decision(config, chain), REQUEST, attempts
        )
        assert isinstance(outcome, StreamOutcome)
        assert (outcome.alias, outcome.attempt) == ("a", attempts[0])
        return [e.text for e in outcome.held], [e.text async for e in outcome.rest], attempts

    got_held, got_rest, attempts = asyncio.run(main())
    assert (got_held, got_rest) == (held, rest)
    assert summary(attempts) == (("a", OK, True),)
    assert provider.closed == ["a"]


def test_stream_marker_before_the_end_closes_the_upstream() -> None:
    run = go("stream", MARKER, ("a", "b"), {"a": (Say(MARKED),), "b": (Say(),)})
    assert run.result.text == TEXT
    assert run.provider.closed == ["a", "b"]  # a was closed as soon as its marker was seen


# --- attempts: filled as the cascade goes ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_attempts_carry_usage_latency_and_errors(mode: str) -> None:
    run = go(
        mode,
        SHORT,
        ("a", "b", "c"),
        {"a": (down("a", 503),), "b": (Say(("Hi",), out=1),), "c": (Say(),)},
    )
    rows = [
        (
            a.alias,
            a.model_id,
            a.provider,
            a.status,
            a.error,
            a.input_tokens,
            a.output_tokens,
            a.cache_read_tokens,
            a.cache_write_tokens,
            a.latency_ms,
        )
        for a in run.attempts
    ]
    assert rows == [
        ("a", "a", "p", 503, "a answered 503", 0, 0, 0, 0, 250.0),
        ("b", "b", "p", None, None, 7, 1, 2, 1, 250.0),
        ("c", "c", "p", None, None, 7, 20, 2, 1, 250.0),
    ]
    ttft = [a.ttft_ms for a in run.attempts]
    assert ttft == ([None, None, None] if mode == "whole" else [None, 250.0, 250.0])


def test_a_committed_stream_completes_its_attempt_as_it_is_relayed() -> None:
    clock = Clock()
    provider = Scripted({"a": (down("a"),), "b": (Say(),)}, clock)
    config = configured("")

    async def main() -> None:
        attempts: list[Attempt] = []
        outcome = await Cascade(config, {"p": provider}, clock=clock).stream(
            decision(config, ("a", "b")), REQUEST, attempts
        )
        assert isinstance(outcome, StreamOutcome)
        b = outcome.attempt
        assert summary(attempts) == (("a", HTTP, False), ("b", "pending", True))
        assert (b.output_tokens, b.latency_ms, b.ttft_ms) == (0, 0.0, 250.0)
        assert outcome.upstream_ms == 500.0  # a's 250 ms and b's up to its first chunk
        clock.now += 1.0  # the rest arrives a second later
        assert [e.text async for e in outcome.rest] == [" there", " friend", ""]
        assert summary(attempts) == (("a", HTTP, False), ("b", OK, True))
        assert (b.input_tokens, b.output_tokens, b.latency_ms) == (7, 20, 1250.0)

    asyncio.run(main())


@pytest.mark.parametrize("mode", MODES)
def test_a_cancelled_request_leaves_its_attempts_behind(mode: str) -> None:
    clock = Clock()
    provider = Scripted({"a": (down("a"),), "b": (HANG,)}, clock)
    config = configured("")
    cascade = Cascade(config, {"p": provider}, clock=clock)
    attempts: list[Attempt] = []

    async def main() -> None:
        call = cascade.run if mode == "whole" else cascade.stream
        task = asyncio.ensure_future(call(decision(config, ("a", "b")), REQUEST, attempts))
        await provider.hanging.wait()
        assert summary(attempts) == (("a", HTTP, False), ("b", "pending", False))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert summary(attempts) == (("a", HTTP, False), ("b", rec.CLIENT_CANCELLED, False))
    assert attempts[1].latency_ms == 250.0


@pytest.mark.parametrize("read", [1, 0], ids=["after-one-event", "before-any"])
def test_closing_the_rest_early_marks_client_cancelled(read: int) -> None:
    """The server closes `rest` when the client goes, possibly before reading any of it
    (a disconnect while the held events are written): the attempt must still be settled and
    the upstream stream closed."""
    clock = Clock()
    provider = Scripted({"a": (Say(),)}, clock)
    config = configured("")

    async def main() -> Attempt:
        outcome = await Cascade(config, {"p": provider}, clock=clock).stream(
            decision(config, ("a", "b")), REQUEST
        )
        assert isinstance(outcome, StreamOutcome)
        assert [e.text for e in outcome.held] == ["Hello"]
        for _ in range(read):
            assert (await anext(outcome.rest)).text == " there"
        clock.now += 1.0
        await outcome.rest.aclose()
        return outcome.attempt

    attempt = asyncio.run(main())
    assert (attempt.outcome, attempt.returned, attempt.latency_ms) == (
        rec.CLIENT_CANCELLED,
        True,
        1250.0,
    )
    assert provider.closed == ["a"]


@pytest.mark.parametrize("mode", MODES)
def test_a_model_whose_protocol_cannot_take_the_request_is_passed_over(mode: str) -> None:
    """An encoder's RequestError (say n > 1 for an Anthropic model) fails that model only; with
    no model left that could take the request, it is the client's 400."""
    refused = RequestError("n > 1 is not supported", param="n")
    config = configured("")
    clock = Clock()
    provider = Scripted({"a": [refused], "b": [Say()]}, clock)
    cascade = Cascade(config, {"p": provider}, clock=clock)
    result = asyncio.run(MODES[mode](cascade, decision(config, ("a", "b")), []))
    assert (result.status, result.alias, result.text) == (OK, "b", TEXT)
    assert result.attempts == (("a", FATAL, False), ("b", OK, True))
    alone = Cascade(config, {"p": Scripted({"a": [refused]}, clock)}, clock=clock)
    attempts: list[Attempt] = []
    with pytest.raises(RequestError):
        asyncio.run(MODES[mode](alone, decision(config, ("a",)), attempts))
    assert summary(attempts) == (("a", FATAL, False),)


def test_a_client_leaving_during_a_continuation_closes_it() -> None:
    """The relay closed mid-continuation closes the continuing model's stream too, at once,
    and its attempt ends `client_cancelled` (never `pending`)."""
    clock = Clock()
    provider = Scripted({"a": (Cut(("Hello", " there"), down("a", 502)),), "b": (Say(),)}, clock)
    config = configured("")
    cascade = Cascade(config, {"p": provider}, clock=clock)
    attempts: list[Attempt] = []

    async def leave() -> None:
        outcome = await cascade.stream(decision(config, ("a", "b")), REQUEST, attempts)
        assert isinstance(outcome, StreamOutcome)
        got = 0
        async for _ in outcome.rest:
            got += 1
            if got == 3:  # " there", then two of b's chunks
                break
        await outcome.rest.aclose()

    asyncio.run(leave())
    assert [a.alias for a in attempts] == ["a", "b"]
    assert attempts[1].outcome == rec.CLIENT_CANCELLED
    assert len(provider.closed) == 2  # both upstream streams closed
