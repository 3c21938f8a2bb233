"""When to try a request again, and how long to wait first.

Exponential backoff with full jitter, bounded by attempts; a server's ``Retry-After`` (seconds or
an HTTP-date) wins over the computed delay, clamped so a hostile value cannot stall the run.
Randomness and the clock are injectable so tests never wait for real.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from collector.errors import CollectorError, HttpStatusError

#: HTTP's delta-seconds is whole digits; a fraction is tolerated. Nothing else (no "inf", "nan",
#: "-5" or "1_000") is read as a number.
_DELTA_SECONDS = re.compile(r"\d{1,9}(?:\.\d+)?")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent
    or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_max: float = 120.0
    rand: Callable[[], float] = field(default=random.random, repr=False)

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1)))."""
        ceiling = min(self.backoff_cap, math.ldexp(self.backoff_base, attempt - 1))
        return ceiling * self.rand()

    def delay_after(self, error: CollectorError, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when we should give up."""
        if not error.transient or attempt >= self.max_attempts:
            return None
        if isinstance(error, HttpStatusError) and error.retry_after is not None:
            return min(error.retry_after, self.retry_after_max)
        return self.backoff(attempt)
