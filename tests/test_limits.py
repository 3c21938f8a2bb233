"""Pacing, retry budget and breaker, on fake time (no test here waits for real)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest

from collector.limits import (
    AdaptiveRate,
    CircuitBreaker,
    Gate,
    RateSettings,
    RetryBudget,
    Slot,
    stated_limit,
)


class FakeTime:
    """Virtual time: sleepers wake in deadline order; the clock jumps, nothing waits for real.

    ``run(main)`` drives it: whenever every task is blocked, time advances to the earliest
    sleeper's deadline.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        event = anyio.Event()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), self._seq, event))
        await event.wait()

    def run(self, main: Callable[[], Awaitable[None]]) -> None:
        async def driver() -> None:
            done = anyio.Event()

            async def wrapped() -> None:
                await main()
                done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(wrapped)
                while not done.is_set():
                    for _ in range(20):  # let every runnable task reach its next sleep
                        await anyio.lowlevel.checkpoint()
                    if self._sleepers and not done.is_set():
                        deadline, _, event = heapq.heappop(self._sleepers)
                        self.now = max(self.now, deadline)
                        event.set()

        anyio.run(driver)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "The throttling threshold has been reached: policy user over ratelimit,"
            "limit:50,time:1 second",
            50.0,
        ),
        ("policy ip over ratelimit, limit:600, time:1 minute", 10.0),
        ("The throttling threshold has been reached", None),
        (None, None),
    ],
)
def test_stated_limit_is_read_from_apig_0308(message: str | None, expected: float | None) -> None:
    """The requests-per-second figure an APIG.0308 message states, in either time unit."""
    assert stated_limit(message) == expected


def test_acquire_spaces_requests_evenly_at_the_rate() -> None:
    """At 10/s, five back-to-back acquires leave at 0, 0.1, 0.2, 0.3, 0.4 s."""
    t = FakeTime()
    rate = AdaptiveRate(RateSettings(initial=10.0), clock=t.clock, sleep=t.sleep)
    start = t.now
    times = []

    async def go() -> None:
        for _ in range(5):
            await rate.acquire()
            times.append(round(t.now - start, 6))

    t.run(go)
    assert times == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_throttle_with_stated_limit_paces_just_under_it_and_never_probes_above() -> None:
    """A 429 stating 50/s sets the pace to 47.5/s; long success never probes past 47.5."""
    t = FakeTime()
    rate = AdaptiveRate(RateSettings(initial=100.0, headroom=0.95), clock=t.clock, sleep=t.sleep)
    rate.on_throttle(message="policy user over ratelimit,limit:50,time:1 second", retry_after=None)
    assert rate.rate == pytest.approx(47.5)
    for _ in range(100):
        t.now += 1.1
        for _ in range(60):
            rate.on_success()
    assert rate.rate == pytest.approx(47.5)


def test_unexplained_throttle_halves_once_per_second() -> None:
    """Many 429s arriving together slow the pace once, not once each."""
    t = FakeTime()
    rate = AdaptiveRate(RateSettings(initial=40.0), clock=t.clock, sleep=t.sleep)
    t.now += 2.0
    for _ in range(10):
        rate.on_throttle(message=None, retry_after=None)
    assert rate.rate == pytest.approx(20.0)
    t.now += 1.0
    rate.on_throttle(message=None, retry_after=None)
    assert rate.rate == pytest.approx(10.0)


def test_success_probes_upward_gradually() -> None:
    """After a second's worth of successes the pace rises by the increase factor, to the max."""
    t = FakeTime()
    rate = AdaptiveRate(
        RateSettings(initial=10.0, increase=1.25, maximum=15.0), clock=t.clock, sleep=t.sleep
    )
    t.now += 1.0
    for _ in range(10):
        rate.on_success()
    assert rate.rate == pytest.approx(12.5)
    t.now += 1.0
    for _ in range(13):
        rate.on_success()
    assert rate.rate == pytest.approx(15.0)  # 15.625 capped at the maximum


def test_retry_after_pauses_the_bucket() -> None:
    """After a 429 with Retry-After: 3, the next request waits the 3 seconds."""
    t = FakeTime()
    rate = AdaptiveRate(RateSettings(initial=10.0), clock=t.clock, sleep=t.sleep)
    rate.on_throttle(message=None, retry_after=3.0)
    start = t.now

    async def go() -> None:
        await rate.acquire()

    t.run(go)
    assert t.now - start == pytest.approx(3.0)


def test_waiters_queued_before_a_slowdown_are_respaced() -> None:
    """Slots handed out at the old pace are taken again at the new one after a 429."""
    t = FakeTime()
    rate = AdaptiveRate(RateSettings(initial=100.0), clock=t.clock, sleep=t.sleep)
    sent: list[float] = []

    async def one() -> None:
        await rate.acquire()
        sent.append(t.now)
        if len(sent) == 1:
            rate.on_throttle(message="limit:10,time:1 second", retry_after=None)

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)

    t.run(go)
    gaps = [round(b - a, 4) for a, b in itertools.pairwise(sent)]
    # After the first request the pace is 9.5/s: nobody leaves sooner than 1/9.5 s after another
    # (at the old pace they would have left 0.01 s apart).
    assert len(gaps) == 3
    assert all(gap >= round(1 / 9.5, 4) - 1e-4 for gap in gaps), gaps


def test_retry_budget_allows_ten_percent_plus_floor_then_refuses() -> None:
    """100 requests in the window allow 10% + 10 = 20 retries; the 21st is refused."""
    t = FakeTime()
    budget = RetryBudget(ratio=0.1, minimum=10, window=60.0, clock=t.clock)
    for _ in range(100):
        budget.on_request()
    granted = sum(budget.try_spend() for _ in range(30))
    assert granted == 20
    t.now += 61.0  # the window slides past every request and retry
    assert budget.try_spend()


def test_retry_budget_without_floor_needs_ten_requests_per_retry() -> None:
    """No floor: the first retry needs 10 requests in the window, the second 20."""
    t = FakeTime()
    budget = RetryBudget(ratio=0.1, minimum=0, window=60.0, clock=t.clock)
    for _ in range(9):
        budget.on_request()
    assert not budget.try_spend()
    budget.on_request()
    assert budget.try_spend()
    assert not budget.try_spend()
    for _ in range(10):
        budget.on_request()
    assert budget.try_spend()


def test_breaker_opens_after_threshold_and_probes_once_after_cooldown() -> None:
    """Closed → open after N failures → one probe after the cool-down → closed on success."""
    t = FakeTime()
    breaker = CircuitBreaker(threshold=3, cooldown=30.0, clock=t.clock)
    for _ in range(3):
        assert breaker.allow()
        breaker.on_failure()
    assert breaker.is_open
    assert not breaker.allow()
    t.now += 30.0
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one
    breaker.on_failure()  # probe failed: open again, cool-down restarts
    assert not breaker.allow()
    t.now += 30.0
    assert breaker.allow()
    breaker.on_success()
    assert not breaker.is_open
    assert breaker.allow()


def test_new_pass_forgets_spent_retries_but_not_requests() -> None:
    """A later pass gets 10% of the last window's requests again; a dead endpoint gets none."""
    t = FakeTime()
    busy = RetryBudget(ratio=0.1, minimum=0, window=60.0, clock=t.clock)
    for _ in range(100):
        busy.on_request()
    assert sum(busy.try_spend() for _ in range(20)) == 10
    busy.new_pass()
    assert sum(busy.try_spend() for _ in range(20)) == 10
    dead = RetryBudget(ratio=0.1, minimum=0, window=60.0, clock=t.clock)
    dead.on_request()
    dead.new_pass()
    assert not dead.try_spend()


def test_gate_takes_a_free_token_without_yielding_and_queues_the_rest_in_order() -> None:
    order: list[int] = []

    async def main() -> None:
        gate = Gate(2)
        await gate.acquire()
        await gate.acquire()
        assert gate.in_use == 2

        async def waiter(n: int) -> None:
            await gate.acquire()
            order.append(n)

        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(waiter, n)
                await anyio.lowlevel.checkpoint()  # let it queue, so the order is known
            for _ in range(3):
                gate.release()
                await anyio.lowlevel.checkpoint()
        assert order == [0, 1, 2]
        assert gate.in_use == 2  # three handed on, two of the original five still held

    anyio.run(main)


def test_gate_cancelled_waiter_leaves_the_queue_and_never_keeps_a_token() -> None:
    async def main() -> None:
        gate = Gate(1)
        await gate.acquire()
        got: list[str] = []
        impatient_scope = anyio.CancelScope()

        async def impatient() -> None:
            with impatient_scope:
                await gate.acquire()
                got.append("impatient")  # pragma: no cover - cancelled first

        async def patient() -> None:
            await gate.acquire()
            got.append("patient")
            gate.release()

        async with anyio.create_task_group() as tg:
            tg.start_soon(impatient)
            await anyio.lowlevel.checkpoint()
            tg.start_soon(patient)
            await anyio.lowlevel.checkpoint()
            impatient_scope.cancel()  # queued first, gone before the token is free
            await anyio.lowlevel.checkpoint()
            gate.release()
        assert got == ["patient"]
        assert gate.in_use == 0
        with pytest.raises(RuntimeError, match="released more often"):
            gate.release()

    anyio.run(main)


def test_gate_token_handed_to_a_waiter_being_cancelled_is_never_lost() -> None:
    async def main() -> None:
        gate = Gate(1)
        await gate.acquire()
        got: list[str] = []
        first_scope = anyio.CancelScope()

        async def first() -> None:
            with first_scope:
                async with gate:
                    # anyio may let the wake-up win over the cancellation; either way the
                    # token must reach `second`.
                    got.append("first")

        async def second() -> None:
            await gate.acquire()
            got.append("second")
            gate.release()

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.lowlevel.checkpoint()
            tg.start_soon(second)
            await anyio.lowlevel.checkpoint()
            gate.release()  # hands the token to `first`...
            first_scope.cancel()  # ...which is cancelled before it runs again
        assert got[-1:] == ["second"]
        assert gate.in_use == 0

    anyio.run(main)


def test_slot_released_twice_gives_back_one_token() -> None:
    async def main() -> None:
        gate = Gate(1)
        slot = Slot(gate)
        await slot.acquire()
        slot.release()
        slot.release()  # a unit cancelled while parked releases again on its way out
        assert gate.in_use == 0

    anyio.run(main)
