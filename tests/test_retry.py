"""Retry policy: Retry-After parsing, exponential backoff with full jitter, and when to give up."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from collector.errors import BadResponseError, ConnectError, HttpStatusError, RequestTimeout
from collector.retry import RetryPolicy, parse_retry_after

#: A fixed "now" for HTTP-date arithmetic: Monday, 1 January 2024, noon UTC.
NOW = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)


def policy(*, rand: float = 1.0, **kw: float) -> RetryPolicy:
    """Base 0.5 s, cap 30 s, 5 attempts, Retry-After up to 120 s; jitter pinned to ``rand``."""
    opts: dict[str, float] = {
        "max_attempts": 5,
        "backoff_base": 0.5,
        "backoff_cap": 30.0,
        "retry_after_max": 120.0,
    } | kw
    return RetryPolicy(
        max_attempts=int(opts["max_attempts"]),
        backoff_base=opts["backoff_base"],
        backoff_cap=opts["backoff_cap"],
        retry_after_max=opts["retry_after_max"],
        rand=lambda: rand,
    )


def status_error(status: int, *, retry_after: float | None = None) -> HttpStatusError:
    return HttpStatusError(f"HTTP {status}", status=status, retry_after=retry_after)


# -- parse_retry_after ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("5", 5.0, id="seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(" 120 ", 120.0, id="padded"),
        pytest.param("Mon, 01 Jan 2024 12:00:30 GMT", 30.0, id="date-30s-ahead"),
        pytest.param("Mon, 01 Jan 2024 13:00:00 GMT", 3600.0, id="date-1h-ahead"),
        pytest.param("Mon, 01 Jan 2024 11:59:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param("Sun, 31 Dec 2023 12:00:00 GMT", 0.0, id="date-a-day-ago"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Delta-seconds and HTTP-dates become seconds from now (never negative); junk is None."""
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_date_without_now_uses_the_clock() -> None:
    """An HTTP-date far in the past is 0 against the real clock too."""
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0


# -- backoff -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (1, 0.5),  # 0.5 * 2**0
        (2, 1.0),  # 0.5 * 2**1
        (3, 2.0),
        (4, 4.0),
        (6, 16.0),  # 0.5 * 2**5
        (7, 30.0),  # 32 capped at 30
        (20, 30.0),
    ],
)
def test_backoff_ceiling_doubles_up_to_the_cap(attempt: int, expected: float) -> None:
    """With the jitter at its top, the delay is min(cap, base * 2**(attempt - 1))."""
    assert policy(rand=1.0).backoff(attempt) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [1, 2, 5, 20])
def test_backoff_with_zero_jitter_is_zero(attempt: int) -> None:
    """Full jitter: the draw scales the whole ceiling, so a zero draw means no wait."""
    assert policy(rand=0.0).backoff(attempt) == 0.0


def test_backoff_is_the_ceiling_scaled_by_the_draw() -> None:
    """A draw of 0.25 at attempt 3 (ceiling 2 s) waits 0.5 s."""
    assert policy(rand=0.25).backoff(3) == pytest.approx(0.5)


# -- delay_after ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_status_is_retried_after_the_backoff(status: int) -> None:
    """429 and 5xx without Retry-After wait the computed backoff (attempt 2: 1 s)."""
    assert policy(rand=1.0).delay_after(status_error(status), 2) == pytest.approx(1.0)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_error_status_is_never_retried(status: int) -> None:
    """400, 401, 403 and 404 give up at once."""
    assert policy().delay_after(status_error(status), 1) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_error_is_not_retried_even_with_retry_after(status: int) -> None:
    """A Retry-After on a permanent error does not make it worth retrying."""
    assert policy().delay_after(status_error(status, retry_after=1.0), 1) is None


def test_transport_and_truncation_errors_are_retried() -> None:
    """Connect errors, timeouts and truncated bodies get a delay; a wrong-shape body does not."""
    retry = policy(rand=1.0)
    assert retry.delay_after(ConnectError("refused"), 1) == pytest.approx(0.5)
    assert retry.delay_after(RequestTimeout("slow"), 1) == pytest.approx(0.5)
    truncated = BadResponseError("cut", transient=True)
    assert retry.delay_after(truncated, 1) == pytest.approx(0.5)
    assert retry.delay_after(BadResponseError("shape", transient=False), 1) is None


def test_last_attempt_gives_up() -> None:
    """At attempt == max_attempts (5) even a transient error gets no further attempt."""
    retry = policy(rand=1.0)
    assert retry.delay_after(status_error(503), 4) == pytest.approx(4.0)
    assert retry.delay_after(status_error(503), 5) is None
    assert retry.delay_after(status_error(429, retry_after=1.0), 5) is None
    assert retry.delay_after(ConnectError("refused"), 6) is None


def test_single_attempt_policy_never_retries() -> None:
    """max_attempts 1 means the first failure is final."""
    assert policy(max_attempts=1).delay_after(status_error(503), 1) is None


def test_retry_after_wins_over_the_backoff() -> None:
    """A Retry-After (429 or 503) replaces the backoff, whether longer or shorter than it."""
    retry = policy(rand=1.0)
    assert retry.delay_after(status_error(429, retry_after=7.0), 1) == 7.0  # backoff: 0.5
    assert retry.delay_after(status_error(429, retry_after=0.0), 4) == 0.0  # backoff: 4
    assert retry.delay_after(status_error(503, retry_after=9.0), 1) == 9.0  # backoff: 0.5


def test_retry_after_is_clamped_to_retry_after_max() -> None:
    """A hostile Retry-After (an hour) is cut to retry_after_max (120 s)."""
    retry = policy(rand=1.0)
    assert retry.delay_after(status_error(429, retry_after=3600.0), 1) == 120.0
    tight = policy(rand=1.0, retry_after_max=0.01)
    assert tight.delay_after(status_error(429, retry_after=5.0), 1) == 0.01


@pytest.mark.parametrize("value", ["inf", "nan", "-5", "1_000", "1e400", "5 s", "0x10"])
def test_retry_after_that_is_not_delta_seconds_is_ignored(value: str) -> None:
    """Only digits (with an optional fraction) or an HTTP-date count as Retry-After."""
    assert parse_retry_after(value) is None
