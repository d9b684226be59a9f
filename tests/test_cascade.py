"""The escalation judgement and the retryable-error classification, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from pirouter_py import record as rec
from pirouter_py.cascade import judge
from pirouter_py.config import CascadeConfig, ProviderConfig
from pirouter_py.providers.base import HTTPProvider, retry_after

ALL_ON = CascadeConfig(
    on_short_response=True,
    min_output_tokens=3,
    min_output_chars=5,
    on_marker="<escalate/>",
    on_truncated=True,
    on_empty=True,
)


@pytest.mark.parametrize(
    ("cfg", "answer", "expected"),
    [
        (CascadeConfig(), ("", False, "stop", 0), None),  # v0.1 defaults: nothing escalates
        (ALL_ON, ("a fine answer", False, "stop", 9), None),
        (ALL_ON, ("<escalate/> a fine answer", False, "stop", 9), rec.ESCALATED_MARKER),
        (ALL_ON, ("<escalate/>", False, "stop", 1), rec.ESCALATED_MARKER),  # marker wins
        (ALL_ON, ("", False, "stop", 0), rec.ESCALATED_EMPTY),
        (ALL_ON, ("", True, "tool_calls", 9), None),  # a tool call is not empty
        (ALL_ON, ("long enough", False, "length", 9), rec.ESCALATED_TRUNCATED),
        (ALL_ON, ("long enough", False, "stop", 2), rec.ESCALATED_SHORT),  # tokens
        (ALL_ON, ("abc", False, "stop", 9), rec.ESCALATED_SHORT),  # chars
        (ALL_ON, ("", True, "tool_calls", 2), rec.ESCALATED_SHORT),  # tokens apply to tool calls
        (CascadeConfig(on_short_response=True), ("I think", False, "stop", 7), rec.ESCALATED_SHORT),
        (CascadeConfig(on_short_response=True), ("I think", False, "stop", 8), None),  # strictly
        # complete by its shape: a multiple-choice letter, a number, yes or no, ending normally
        (CascadeConfig(on_short_response=True), ("B", False, "stop", 1), None),
        (CascadeConfig(on_short_response=True), ("(c)", False, "stop", 2), None),
        (CascadeConfig(on_short_response=True), ("42", False, "stop", 1), None),
        (CascadeConfig(on_short_response=True), ("Yes.", False, "stop", 2), None),
        (CascadeConfig(on_short_response=True), ("B", False, "length", 1), rec.ESCALATED_SHORT),
        (CascadeConfig(on_short_response=True), ("The", False, "stop", 1), rec.ESCALATED_SHORT),
        (CascadeConfig(on_truncated=True), ("x", False, "length", 1), rec.ESCALATED_TRUNCATED),
    ],
)
def test_judge(
    cfg: CascadeConfig, answer: tuple[str, bool, str, int], expected: str | None
) -> None:
    assert judge(cfg, *answer) == expected


PROVIDER = HTTPProvider(
    "p",
    ProviderConfig(type="openai", base_url="http://x", api_key="sk-abcdefghijklmnopqrstuvwxyz"),
    upstreams=None,
)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        (408, "", True),
        (413, "", True),
        (429, "", True),
        (500, "", True),
        (502, "", True),
        (503, "", True),
        (529, "", True),
        (400, "maximum context length exceeded", True),
        (422, "Too many tokens in the prompt", True),
        (400, "bad field", False),
        (401, "", False),
        (403, "", False),
        (404, "", False),
        (422, "invalid", False),
    ],
)
def test_retryable_statuses(status: int, body: str, retryable: bool) -> None:
    error = PROVIDER._http_error("m", status, body, {})
    assert error.retryable is retryable and error.status == status


def test_error_text_names_provider_model_status_and_masks_keys() -> None:
    error = PROVIDER._http_error("m", 401, "bad key sk-abcdefghijklmnopqrstuvwxyz here", {})
    assert error.message == "p (m): 401 Unauthorized: bad key *** here"
    other = PROVIDER._http_error("m", 599, "key sk-proj-1234567890abcdef", {})
    assert other.message == "p (m): 599 <unknown status code>: key sk-proj-1***"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_retry_after(value: Any, seconds: float | None) -> None:
    assert retry_after(value) == seconds
