"""The collector's one exception tree.

Everything the collector raises on purpose derives from :class:`CollectorError`; ``cli`` is the
only place that turns these into words and exit codes. Third-party exceptions (aiohttp, yaml,
msgspec, OS errors) are mapped into this tree at the boundary where they occur, with
``raise ... from exc``.

::

    CollectorError
    ├── ConfigError                 bad config file, flag or environment (exit 2)
    ├── TransportError              the request never produced an HTTP response
    │   ├── ConnectError            connection refused / reset / DNS / TLS
    │   ├── RequestTimeout          connect or read timed out
    │   └── InvalidRequest          the URL or a header cannot be sent at all (not retried)
    ├── HttpStatusError             the server answered with a non-2xx status
    │                               (status, error_code, error_msg, request_id)
    ├── BadResponseError            a 2xx whose body is not what the API promises
    │                               (truncated, HTML, wrong shape)
    ├── CircuitOpenError            an endpoint failed too often; its work is not attempted
    ├── PaginationError             paging could not converge (page bound, unstable data)
    ├── NotCollected                a known unit the run did not reach (deadline, signal)
    └── SinkError                   an output file could not be written or published

Whether an error is worth retrying is a property of the error (:attr:`CollectorError.transient`),
so the retry policy never has to know the tree's shape.
"""

from __future__ import annotations


class CollectorError(Exception):
    """Root of every error the collector raises on purpose."""

    #: True when the same request may succeed if tried again.
    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        #: How many attempts were made before this error was final (set by the client).
        self.attempts = 1

    def __str__(self) -> str:
        return self.message


class ConfigError(CollectorError):
    """The configuration (file, flags, environment) is unusable."""


class TransportError(CollectorError):
    """No HTTP response was obtained."""

    transient = True


class ConnectError(TransportError):
    """The connection could not be made or was dropped."""


class RequestTimeout(TransportError):
    """Connecting or reading the response took longer than allowed."""


class InvalidRequest(TransportError):
    """The request cannot be sent as built (a malformed URL, a forbidden header character)."""

    transient = False


class HttpStatusError(CollectorError):
    """The server answered with a status outside 2xx."""

    #: Statuses that a later attempt may turn into a success.
    TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_code: str | None = None,
        error_msg: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id
        #: Seconds the server asked us to wait (``Retry-After``), already parsed.
        self.retry_after = retry_after
        self.transient = status in self.TRANSIENT_STATUSES

    @property
    def throttled(self) -> bool:
        return self.status == 429


class BadResponseError(CollectorError):
    """A 2xx response whose body is unusable (truncated, not JSON, wrong shape).

    Truncated and non-JSON bodies are typical of a proxy or a dropped connection and are worth
    retrying; a well-formed body of the wrong shape is not.
    """

    def __init__(self, message: str, *, transient: bool, request_id: str | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.request_id = request_id


class CircuitOpenError(CollectorError):
    """The endpoint's circuit breaker is open: it kept failing, so we stopped asking."""


class PaginationError(CollectorError):
    """Paging a cluster could not produce a complete, duplicate-free history."""


class NotCollected(CollectorError):
    """A unit the run knew of but did not reach before a deadline or a signal stopped it."""


class SinkError(CollectorError):
    """An output file could not be written or published."""
