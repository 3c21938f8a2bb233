"""Pacing and protection per endpoint: an adaptive token bucket, a retry budget, a breaker.

* :class:`AdaptiveRate` paces one (account, endpoint) ahead of the server's limit. It starts at
  a modest rate and probes upward while calls succeed; a 429 drops it — to just under the limit
  stated in an APIG.0308 message when there is one, otherwise by half — and ``Retry-After``
  pauses it. Pacing ahead of the limit beats retrying through it.
* :class:`RetryBudget` keeps retries to a fraction of recent requests per endpoint (Google SRE's
  per-client retry budget), so an endpoint that is down is not hammered.
* :class:`CircuitBreaker` opens after consecutive failures so the rest of a dead endpoint's work
  is marked incomplete quickly, and lets one probe through after a cool-down.

Every class takes a ``clock`` so tests run on fake time.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_STATED_LIMIT = re.compile(r"limit:\s*(\d+(?:\.\d+)?)\s*,\s*time:\s*(\d+)\s*(second|minute)", re.I)


def stated_limit(message: str | None) -> float | None:
    """Requests per second from an APIG.0308 message ("...,limit:50,time:1 second")."""
    if not message:
        return None
    match = _STATED_LIMIT.search(message)
    if match is None:
        return None
    count, span, unit = float(match[1]), int(match[2]), match[3].lower()
    seconds = span * (60 if unit == "minute" else 1)
    return count / seconds if seconds > 0 and count > 0 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateSettings:
    initial: float = 20.0
    minimum: float = 0.5
    maximum: float = 1000.0
    #: Fraction of a stated limit we pace at: close to it, never over it.
    headroom: float = 0.95
    #: Multiplicative step up per second of success, and down on an unexplained 429.
    increase: float = 1.25
    decrease: float = 0.5


class AdaptiveRate:
    """A token bucket whose rate follows the server's throttling."""

    def __init__(
        self,
        settings: RateSettings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self._s = settings
        self._clock = clock
        self._sleep = sleep
        self.rate = settings.initial
        #: Upper bound learned from the server's own words; None until a 429 states one.
        self.ceiling: float | None = None
        now = clock()
        self._next_slot = now
        self._paused_until = now
        self._last_change = now
        self._successes = 0
        self._epoch = 0

    async def acquire(self) -> None:
        """Wait for this caller's turn: slots are handed out evenly, 1/rate apart.

        A waiter whose slot was handed out before the rate dropped (or a pause began) takes a
        new slot when it wakes, so a 429 slows down the queue already waiting, not just
        newcomers.
        """
        while True:
            epoch = self._epoch
            now = self._clock()
            slot = max(self._next_slot, self._paused_until, now)
            self._next_slot = slot + 1.0 / self.rate
            if slot > now:
                await self._sleep(slot - now)
            if self._epoch == epoch:
                return

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        return None

    def on_success(self) -> None:
        """Probe upward, at most once a second, after a second's worth of successes."""
        self._successes += 1
        now = self._clock()
        if now - self._last_change < 1.0 or self._successes < self.rate:
            return
        top = self._s.maximum
        if self.ceiling is not None:
            top = min(top, self.ceiling)
        self._set(min(top, self.rate * self._s.increase), now)

    def on_throttle(self, *, message: str | None, retry_after: float | None) -> None:
        now = self._clock()
        if retry_after is not None and now + retry_after > self._paused_until:
            self._paused_until = now + retry_after
            self._requeue(now)
        limit = stated_limit(message)
        if limit is not None:
            self.ceiling = limit * self._s.headroom
            self._set(min(self.rate, self.ceiling), now)
        elif now - self._last_change >= 1.0:
            # Many requests in flight come back 429 together; slow down once per second.
            self._set(self.rate * self._s.decrease, now)

    def _set(self, rate: float, now: float) -> None:
        slower = rate < self.rate
        self.rate = max(self._s.minimum, rate)
        self._last_change = now
        self._successes = 0
        if slower:
            self._requeue(now)

    def _requeue(self, now: float) -> None:
        # Slots already handed out were spaced for the old rate: make their holders queue again.
        self._epoch += 1
        self._next_slot = max(now + 1.0 / self.rate, self._paused_until)


class RetryBudget:
    """Retries allowed while they stay under ``ratio`` of requests in the last ``window`` s."""

    def __init__(
        self,
        *,
        ratio: float = 0.1,
        minimum: int = 0,
        window: float = 60.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._ratio = ratio
        self._minimum = minimum
        self._window = window
        self._clock = clock
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        edge = now - self._window
        for q in (self._requests, self._retries):
            while q and q[0] < edge:
                q.popleft()

    def on_request(self) -> None:
        self._requests.append(self._clock())

    def new_pass(self) -> None:
        """A later pass may again retry up to the ratio of the last window's requests.

        Only the spent retries are forgotten. Keeping the requests means a healthy endpoint
        that was merely unlucky (a busy one) gets a real allowance for the pass that finishes
        its set-aside pages, while a dead endpoint (few requests, all failed) still gets none.
        """
        self._retries.clear()

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when the budget is spent."""
        now = self._clock()
        self._trim(now)
        # After this retry, retries must still be within the budget: with no floor, an endpoint
        # needs ten requests in the window before its first retry (at a ratio of 0.1).
        if len(self._retries) + 1 > self._minimum + self._ratio * len(self._requests):
            return False
        self._retries.append(now)
        return True


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; one probe after ``cooldown`` seconds."""

    def __init__(
        self, *, threshold: int = 20, cooldown: float = 30.0, clock: Clock = time.monotonic
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        """May a request go out now?"""
        if self._opened_at is None:
            return True
        if not self._probing and self._clock() - self._opened_at >= self._cooldown:
            self._probing = True  # half-open: exactly one request tests the water
            return True
        return False

    def on_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def on_failure(self) -> None:
        self._failures += 1
        if self._probing:
            self._probing = False
            self._opened_at = self._clock()
        elif self._failures >= self._threshold and self._opened_at is None:
            self._opened_at = self._clock()


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes, for pacing: the account, and the endpoint (a DWS region or IAM)."""

    account: str
    endpoint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GovernorSettings:
    concurrency: int = 32
    per_endpoint: int = 32
    rate: RateSettings = RateSettings()
    adaptive: bool = True
    budget_ratio: float = 0.1
    budget_minimum: int = 0
    breaker_threshold: int = 20
    breaker_cooldown: float = 30.0


class EndpointState:
    """In-flight limit, retry budget and breaker shared by every account on one endpoint."""

    __slots__ = ("breaker", "budget", "limiter", "name")

    def __init__(self, name: str, settings: GovernorSettings, clock: Clock) -> None:
        self.name = name
        self.limiter = Gate(settings.per_endpoint)
        self.budget = RetryBudget(
            ratio=settings.budget_ratio, minimum=settings.budget_minimum, clock=clock
        )
        self.breaker = CircuitBreaker(
            threshold=settings.breaker_threshold, cooldown=settings.breaker_cooldown, clock=clock
        )


class Governor:
    """Hands out the limits for a route, creating them the first time a route is seen."""

    def __init__(
        self,
        settings: GovernorSettings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.settings = settings
        self.limiter = Gate(settings.concurrency)
        self._clock = clock
        self._sleep = sleep
        self._endpoints: dict[str, EndpointState] = {}
        self._rates: dict[Route, AdaptiveRate] = {}

    def endpoint(self, name: str) -> EndpointState:
        state = self._endpoints.get(name)
        if state is None:
            state = self._endpoints[name] = EndpointState(name, self.settings, self._clock)
        return state

    def rate(self, route: Route) -> AdaptiveRate | None:
        if not self.settings.adaptive:
            return None
        rate = self._rates.get(route)
        if rate is None:
            rate = self._rates[route] = AdaptiveRate(
                self.settings.rate, clock=self._clock, sleep=self._sleep
            )
        return rate

    def new_pass(self) -> None:
        """A later pass begins: every endpoint's retry budget starts afresh."""
        for state in self._endpoints.values():
            state.budget.new_pass()

    def open_circuits(self) -> list[str]:
        return sorted(name for name, state in self._endpoints.items() if state.breaker.is_open)


class Gate:
    """A counting semaphore for the per-request path, FIFO among waiters.

    anyio's CapacityLimiter checkpoints twice on every acquisition, even with a token free (a
    yield, then a shielded yield): two of them per request were 5% of the collector's CPU at
    5,000 clusters. A Gate takes a free token without yielding (the request it guards yields
    soon enough) and only waits, on an anyio Event, when none is free; a released token goes
    straight to the first waiter, so nobody can overtake the queue.
    """

    __slots__ = ("_free", "_waiters", "total")

    def __init__(self, tokens: int) -> None:
        if tokens < 1:
            raise ValueError("a gate needs at least one token")
        self.total = tokens
        self._free = tokens
        self._waiters: deque[anyio.Event] = deque()

    @property
    def in_use(self) -> int:
        return self.total - self._free

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        handed = anyio.Event()
        self._waiters.append(handed)
        try:
            await handed.wait()
        except BaseException:
            if handed.is_set():
                self.release()  # a token was handed over as we were cancelled: pass it on
            else:
                self._waiters.remove(handed)
            raise

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # the token passes to the waiter as it is
        elif self._free < self.total:
            self._free += 1
        else:
            raise RuntimeError("gate released more often than acquired")

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Slot:
    """One unit's hold on an endpoint's capacity, taken by one task and released by another.

    Releasing twice is harmless: a unit cancelled while parked (its slot already given back)
    still releases it on the way out.
    """

    __slots__ = ("_gate", "_held")

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self._held = False

    async def acquire(self) -> None:
        await self._gate.acquire()
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate.release()


#: The endpoint slot held by the unit running in this task, given back while it is parked.
CURRENT_SLOT: contextvars.ContextVar[Slot | None] = contextvars.ContextVar(
    "collector_current_slot", default=None
)


class PassBarrier:
    """Where requests that ran out of attempts (or budget, or met an open circuit) wait.

    A parked request gives its endpoint slot back and sleeps until the rest of the run is idle
    (nothing busy but parked requests); then, after ``delay`` seconds, a new pass begins and
    every parked request is tried again with fresh attempts. After ``passes`` later passes,
    :meth:`park` answers False and the failure is final. The work a unit already did is kept:
    a cluster resumes at the page it stopped on.
    """

    def __init__(self, *, passes: int, delay: float, sleep: Sleep = anyio.sleep) -> None:
        self.passes = passes
        self.delay = delay
        self._sleep = sleep
        #: 1 for the first pass; each later pass adds one.
        self.number = 1
        self.busy = 0
        self.parked = 0
        self._release = anyio.Event()
        self._idle = anyio.Event()
        self._halted = False

    def halt(self) -> None:
        """Start no more passes (the run is stopping): :meth:`run` returns once all is idle."""
        self._halted = True
        self._idle.set()

    def enter(self) -> None:
        """A unit of work has started (or been queued)."""
        self.busy += 1

    def leave(self) -> None:
        self.busy -= 1
        if self.busy == 0:
            self._idle.set()

    async def park(self) -> bool:
        """Wait for the next pass; False (at once) when no later pass remains."""
        if self.number > self.passes:
            return False
        slot = CURRENT_SLOT.get()
        if slot is not None:
            slot.release()
        release = self._release
        self.parked += 1
        self.leave()
        try:
            await release.wait()
        finally:
            self.parked -= 1
            self.busy += 1
        if slot is not None:
            await slot.acquire()
        return True

    async def run(self, on_pass: Callable[[int, int], None] | None = None) -> None:
        """Start later passes while parked requests wait; return when nothing is busy and
        either nothing is parked or the barrier was halted."""
        while True:
            await self._idle.wait()
            self._idle = anyio.Event()
            if self.busy > 0:
                continue
            if self.parked == 0 or self._halted:
                return
            await self._sleep(self.delay)
            self.number += 1
            if on_pass is not None:
                on_pass(self.number, self.parked)
            release, self._release = self._release, anyio.Event()
            release.set()
