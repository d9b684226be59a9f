"""The exception tree. Each error knows how it reaches a user: HTTP status, OpenAI type, exit code.

    PirouterError                 exit 1, HTTP 500 server_error
    ├── ConfigError               exit 3: the config file cannot be used; carries located problems
    ├── RoutingError              exit 1, HTTP 400 invalid_request_error: no model can take it
    │   └── BudgetExceeded        HTTP 429 insufficient_quota: a [budget] is spent, action refuse
    ├── RequestError              HTTP 400 invalid_request_error: the client's body is malformed
    │   ├── Unauthorized          HTTP 401 authentication_error: a client key is missing or wrong
    │   ├── ForbiddenHost         HTTP 403 permission_error: a Host header naming another host
    │   ├── UnknownModel          HTTP 404 not_found_error: neither `auto` nor an alias
    │   ├── NoSuchRequest         HTTP 404 not_found_error: no request of the caller's by that id
    │   ├── RequestTimeout        HTTP 408: the body did not arrive in time
    │   └── UnsupportedMediaType  HTTP 415: the body is not declared as JSON
    └── UpstreamError             HTTP 502 upstream_error: a provider call failed
        ├── UpstreamHTTPError     the provider answered with a non-2xx status
        └── UpstreamTransportError  timeout, refused connection, reset, malformed body

Messages never contain API keys: providers put only names of environment variables in them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, documented in the README and `pirouter --help`."""

    OK = 0
    RUNTIME = 1  # a runtime or routing error
    USAGE = 2  # bad command-line usage
    CONFIG = 3  # the config file cannot be used


class PirouterError(Exception):
    """Base of every error pirouter raises on purpose."""

    exit_code: ExitCode = ExitCode.RUNTIME
    http_status: int = 500
    openai_type: str = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One located problem in a config file: where, which key, what is wrong and what to do."""

    source: str  # the file as the user named it, or "<built-in default>"
    line: int | None
    key: str  # dotted path such as "models.sonnet.quality"; "" for the whole file
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(PirouterError):
    """The config file cannot be used; `problems` lists every located reason."""

    exit_code = ExitCode.CONFIG

    def __init__(
        self, problems: list[ConfigProblem], warnings: tuple[ConfigProblem, ...] = ()
    ) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = tuple(problems)
        self.warnings = warnings  # found meanwhile; shown with the errors, in file order


class RoutingError(PirouterError):
    """No model can take the request (unknown alias, nothing satisfies the constraints)."""

    http_status = 400
    openai_type = "invalid_request_error"


class BudgetExceeded(RoutingError):
    """A budget is spent and `[budget] action = "refuse"` (or nothing unspent can take it)."""

    http_status = 429
    openai_type = "insufficient_quota"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestError(PirouterError):
    """The client's request is malformed or asks for something pirouter cannot do."""

    http_status = 400
    openai_type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class Unauthorized(RequestError):
    """A client key is required and was missing or wrong."""

    http_status = 401
    openai_type = "authentication_error"


class ForbiddenHost(RequestError):
    """The Host header names a host pirouter does not serve (DNS rebinding protection)."""

    http_status = 403
    openai_type = "permission_error"


class Unrecorded(PirouterError):
    """`[ledger] require = true` and a request's row could not be kept on disk now."""

    http_status = 503
    openai_type = "service_unavailable"


class CrossSite(RequestError):
    """A request from a web page of another origin (`Origin` not in `[server] cors_origins`,
    or `Sec-Fetch-Site: cross-site`): any page could otherwise spend the user's money."""

    http_status = 403
    openai_type = "permission_error"


class UnknownModel(RequestError):
    """A model name that is neither `auto` nor an alias, where one is required."""

    http_status = 404
    openai_type = "not_found_error"


class NoSuchRequest(RequestError):
    """A request id that names none of the caller's requests (feedback on another's, say)."""

    http_status = 404
    openai_type = "not_found_error"


class RequestTimeout(RequestError):
    """The client did not send its body in time."""

    http_status = 408


class UnsupportedMediaType(RequestError):
    """The body is not declared as JSON."""

    http_status = 415


class UpstreamError(PirouterError):
    """A provider call failed; `retryable` says whether the cascade may try the next model."""

    http_status = 502
    openai_type = "upstream_error"

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class UpstreamHTTPError(UpstreamError):
    """The provider answered with a non-2xx status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        retryable: bool,
        retry_after: float | None = None,
        about_request: bool = False,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.retry_after = retry_after
        # the provider refused this request (too long, an input it cannot read), which says
        # nothing of its health: the next model may take it, and this one does not cool
        self.about_request = about_request


class UpstreamTransportError(UpstreamError):
    """The provider could not be reached or sent something unreadable."""

    def __init__(self, message: str, *, retryable: bool, unreachable: bool = False) -> None:
        super().__init__(message, retryable=retryable)
        # no connection at all (refused, DNS, TLS): the provider is down until it answers
        self.unreachable = unreachable


def install_hint(extra: str) -> str:
    """How to install an optional extra (`learn`, `team`) into the environment this pirouter
    runs from: from its checkout when it was installed from one (the README's set-up), else by
    the package's name."""
    import sys
    from pathlib import Path

    checkout = Path(__file__).resolve().parent.parent
    pip = Path(sys.executable).with_name("pip")
    if (checkout / "pyproject.toml").is_file():
        return f"{pip} install -e '{checkout}[{extra}]'"
    return f"{pip} install 'pirouter-py[{extra}]'"
