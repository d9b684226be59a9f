"""The daemon's log lines: JSON through orjson, and nothing a log call passes loses its line."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from pirouter_py.observe import log
from pirouter_py.record import Attempt, RequestRecord


@pytest.fixture(autouse=True)
def _restore_structlog() -> object:
    yield
    structlog.reset_defaults()


def _lines(raw: bytes | str) -> list[dict[str, object]]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_are_written_as_bytes_and_keep_every_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    binary = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(binary, write_through=True))
    log.setup("info", json=True)
    logger = log.get_logger("pirouter.test")
    logger.info("request", path=Path("/tmp/x"), counts={200: 3}, error=ValueError("no"), text="é")
    logger.debug("hidden")  # below the level: no line
    [line] = _lines(binary.getvalue())
    assert line["event"] == "request" and line["level"] == "info"
    assert line["counts"] == {"200": 3} and line["text"] == "é"
    assert line["path"] == "PosixPath('/tmp/x')" and line["error"] == "ValueError('no')"
    assert str(line["timestamp"]).endswith("Z")


def test_json_timestamps_are_utc_iso_like_structlogs_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The orjson path stamps a datetime and lets orjson write it; the text must be what the
    standard path's TimeStamper writes (UTC, microseconds, `Z`)."""
    fast, plain = io.BytesIO(), io.StringIO()
    for stream in (io.TextIOWrapper(fast, write_through=True), plain):
        monkeypatch.setattr(sys, "stderr", stream)
        log.setup("info", json=True)
        log.get_logger("pirouter.test").info("tick")
    stamps = [str(_lines(raw)[0]["timestamp"]) for raw in (fast.getvalue(), plain.getvalue())]
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"
    assert all(re.fullmatch(pattern, stamp) for stamp in stamps), stamps
    moments = [datetime.fromisoformat(stamp.replace("Z", "+00:00")) for stamp in stamps]
    assert abs((moments[1] - moments[0]).total_seconds()) < 60  # both UTC: no hours apart


def test_a_stream_without_a_byte_buffer_still_gets_json(monkeypatch: pytest.MonkeyPatch) -> None:
    text = io.StringIO()
    monkeypatch.setattr(sys, "stderr", text)
    log.setup("info", json=True)
    log.get_logger("pirouter.test").warning("slow", ms=12)
    [line] = _lines(text.getvalue())
    assert line["event"] == "slow" and line["ms"] == 12 and line["level"] == "warning"


def test_an_exception_logged_as_json_carries_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    binary = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(binary, write_through=True))
    log.setup("info", json=True)
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.get_logger("pirouter.test").exception("internal_error", request_id="r1")
    [line] = _lines(binary.getvalue())
    assert line["level"] == "error" and line["request_id"] == "r1"
    assert "exc_info" not in line
    assert str(line["exception"]).startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in str(line["exception"])


def _record(n: int, status: str = "ok", attempts: int = 1) -> RequestRecord:
    tried = tuple(
        Attempt(alias=f"m{i}", provider="p", model_id="x", outcome="ok", latency_ms=1.0)
        for i in range(attempts)
    )
    return RequestRecord(
        request_id=f"r{n}", ts=0.0, protocol="openai", requested_model="auto", rule="policy",
        difficulty="easy", primary="m0", final="m0", status=status, http_status=200,
        streamed=False, latency_ms=2.0, overhead_ms=0.3, ttft_ms=None, user_agent="",
        attempts=tried,
    )  # fmt: skip


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _request_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[log.RequestLines, _Clock, io.BytesIO]:
    binary = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(binary, write_through=True))
    log.setup("info", json=True)
    clock = _Clock()
    return log.RequestLines(log.bound_logger("pirouter"), clock), clock, binary


def test_routine_request_lines_past_the_limit_are_counted_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines, clock, out = _request_lines(monkeypatch)

    async def main() -> None:
        for n in range(3):
            lines.finished(_record(n), per_sec=3)
        clock.now += 0.99  # the window ends in 10 ms: the first skip sets its timer for then
        for n in range(3, 10):
            lines.finished(_record(n), per_sec=3)
        lines.finished(_record(10, status="upstream_error"), per_sec=3)  # failures: always
        lines.finished(_record(11, attempts=2), per_sec=3)  # escalations: always
        await asyncio.sleep(0.3)

    asyncio.run(asyncio.wait_for(main(), 10))
    written = _lines(out.getvalue())
    requests = [x["request_id"] for x in written if x["event"] == "request"]
    assert requests == ["r0", "r1", "r2", "r10", "r11"]
    [skipped] = [x for x in written if x["event"] == "request_lines_skipped"]
    assert skipped["skipped"] == 7 and skipped["level"] == "info"
    assert written[-1] is skipped  # the timer wrote it, after the lines that were written


def test_a_request_after_the_window_reports_it_and_its_timer_adds_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines, clock, out = _request_lines(monkeypatch)

    async def main() -> None:
        for n in range(4):
            lines.finished(_record(n), per_sec=2)  # r2, r3 skipped; a timer set for 1 s on
        clock.now += 1.5  # the next request comes after the window: it reports the count
        lines.finished(_record(4), per_sec=2)
        lines.finished(_record(5), per_sec=2)
        lines.finished(_record(6), per_sec=2)  # skipped in the new window
        await asyncio.sleep(1.1)  # the first window's timer runs: the new window is not its own
        lines.report()  # shutting down: the current window's count

    asyncio.run(asyncio.wait_for(main(), 10))
    written = [(x["event"], x.get("request_id") or x["skipped"]) for x in _lines(out.getvalue())]
    assert written == [
        ("request", "r0"),
        ("request", "r1"),
        ("request_lines_skipped", 2),
        ("request", "r4"),
        ("request", "r5"),
        ("request_lines_skipped", 1),
    ]


def test_a_limit_of_zero_writes_every_request_line(monkeypatch: pytest.MonkeyPatch) -> None:
    lines, _, out = _request_lines(monkeypatch)
    for n in range(300):  # no running loop needed: nothing is ever skipped
        lines.finished(_record(n), per_sec=0)
    written = _lines(out.getvalue())
    assert [x["request_id"] for x in written] == [f"r{n}" for n in range(300)]
    line = written[0]
    assert line["chain"] == ["m0:ok"] and line["latency_ms"] == 2.0 and line["tokens_in"] == 0
