"""One collection run's life: set up, drive the scheduler, stop on time, publish, summarize.

Stopping: a deadline cancels the work when it expires. A first SIGINT/SIGTERM stops new work,
lets clusters in flight finish for a short grace, then cancels what is left; a second signal
exits at once (published files are whole — they only ever appear by rename). Either way the
clusters that completed are published, and every unit left undone is listed in
``errors.jsonl`` and counted in ``summary.json``.
"""

from __future__ import annotations

import os
import secrets
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import structlog

from collector import __version__
from collector.client import ApiClient
from collector.config import Config
from collector.limits import Governor, GovernorSettings, PassBarrier, RateSettings
from collector.retry import RetryPolicy
from collector.scheduler import Collection
from collector.sinks import DirectorySink
from collector.stats import RunStats
from collector.transport import AiohttpTransport, Transport

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

#: Seconds in-flight clusters get to finish after the first signal.
DEFAULT_GRACE = 5.0

log = structlog.get_logger("collector.run")


def now_utc() -> datetime:
    return datetime.now(UTC)


def format_utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(started: datetime) -> str:
    return f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class RunResult:
    summary: dict[str, Any]
    exit_code: int
    output_dir: Path


def governor_settings(config: Config) -> GovernorSettings:
    limits, retry = config.limits, config.retry
    return GovernorSettings(
        concurrency=limits.concurrency,
        per_endpoint=min(limits.per_endpoint or limits.concurrency, limits.concurrency),
        rate=RateSettings(initial=limits.rate, maximum=limits.max_rate),
        adaptive=limits.adaptive,
        budget_ratio=retry.budget_ratio,
        budget_minimum=retry.budget_minimum,
        breaker_threshold=retry.breaker_threshold,
        breaker_cooldown=retry.breaker_cooldown,
    )


@dataclass(slots=True)
class _Stop:
    """Why the run stopped early, if it did."""

    signal: int | None = None
    deadline: bool = False

    @property
    def why(self) -> str | None:
        if self.signal is not None:
            return f"stopped by {signal.Signals(self.signal).name}"
        if self.deadline:
            return "deadline reached"
        return None


def _verdict(stats: RunStats, stop: _Stop, open_circuits: list[str]) -> tuple[str, int, str]:
    failed = stats.clusters_failed + stats.projects_failed + stats.accounts_failed
    parts = []
    for count, noun in (
        (stats.accounts_failed, "account"),
        (stats.projects_failed, "project"),
        (stats.clusters_failed, "cluster"),
    ):
        if count:
            parts.append(f"{count} {noun}(s) failed")
    if stats.units_not_collected:
        parts.append(f"{stats.units_not_collected} unit(s) not collected")
    if open_circuits:
        parts.append(f"endpoints failing (circuit open): {', '.join(open_circuits)}")
    detail = "; ".join(parts)
    if stop.signal is not None:
        code = EXIT_SIGINT if stop.signal == signal.SIGINT else EXIT_SIGTERM
        return "interrupted", code, f"{stop.why}; {detail or 'nothing left undone'}"
    if stop.deadline:
        return "partial", EXIT_PARTIAL, f"deadline reached; {detail or 'nothing left undone'}"
    if failed or open_circuits:
        where = ", ".join(f"{name}: {n}" for name, n in sorted(stats.failed_by_endpoint.items()))
        return "partial", EXIT_PARTIAL, f"{detail} (by endpoint: {where}); see errors.jsonl"
    return "ok", EXIT_OK, "every unit collected"


async def collect(
    config: Config,
    *,
    output_dir: Path,
    transport: Transport | None = None,
    deadline: float | None = None,
    handle_signals: bool = False,
    grace: float = DEFAULT_GRACE,
) -> RunResult:
    """Run a whole collection into ``output_dir`` and publish its files."""
    started = now_utc()
    run_id = new_run_id(started)
    retry = config.retry
    policy = RetryPolicy(
        max_attempts=retry.max_attempts,
        backoff_base=retry.backoff_base,
        backoff_cap=retry.backoff_cap,
        retry_after_max=retry.retry_after_max,
    )
    stats = RunStats()
    governor = Governor(governor_settings(config))
    sink = DirectorySink(output_dir, run_id=run_id)
    stop = _Stop()
    try:
        async with _TransportScope(config, transport) as http:
            barrier = PassBarrier(passes=retry.passes, delay=retry.pass_delay)
            client = ApiClient(
                transport=http, policy=policy, governor=governor, stats=stats, barrier=barrier
            )
            collection = Collection(config, client=client, sink=sink, stats=stats, barrier=barrier)
            log.info("run.start", run_id=run_id, output=str(output_dir), version=__version__)
            async with anyio.create_task_group() as outer:
                work = anyio.CancelScope()
                if handle_signals:
                    outer.start_soon(_watch_signals, collection, work, stop, sink, grace)
                with work:
                    limit = deadline if deadline is not None else float("inf")
                    with anyio.move_on_after(limit) as timer:
                        await collection.execute()
                    if timer.cancelled_caught:
                        stop.deadline = True
                        collection.stop()
                outer.cancel_scope.cancel()
            if stop.why is not None:
                stats.units_not_collected = collection.report_unfinished(stop.why)
    except BaseException:
        sink.discard()
        raise

    ended = now_utc()
    status, code, reason = _verdict(stats, stop, governor.open_circuits())
    summary = {
        "run_id": run_id,
        "collector_version": __version__,
        "started_at": format_utc(started),
        "ended_at": format_utc(ended),
        "duration_s": round((ended - started).total_seconds(), 3),
        "status": status,
        "exit_code": code,
        "reason": reason,
        "counts": stats.as_dict(),
        "files": {
            "records": DirectorySink.RECORDS,
            "clusters": DirectorySink.CLUSTERS,
            "errors": DirectorySink.ERRORS,
        },
    }
    sink.publish(summary)
    log.info("run.done", run_id=run_id, status=status, exit_code=code, **stats.as_dict())
    return RunResult(summary=summary, exit_code=code, output_dir=output_dir)


class _TransportScope:
    """Own an aiohttp transport unless the caller brought one."""

    def __init__(self, config: Config, given: Transport | None) -> None:
        self._given = given
        self._owned: AiohttpTransport | None = None
        if given is None:
            self._owned = AiohttpTransport(
                connect_timeout=config.http.connect_timeout,
                read_timeout=config.http.read_timeout,
                max_connections=config.limits.concurrency,
            )

    async def __aenter__(self) -> Transport:
        if self._owned is not None:
            return await self._owned.__aenter__()
        assert self._given is not None
        return self._given

    async def __aexit__(self, *exc: object) -> None:
        if self._owned is not None:
            await self._owned.__aexit__(None, None, None)


async def _watch_signals(
    collection: Collection,
    work: anyio.CancelScope,
    stop: _Stop,
    sink: DirectorySink,
    grace: float,
) -> None:
    async def cancel_after_grace() -> None:
        await anyio.sleep(grace)
        work.cancel()

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            async for signum in signals:
                if stop.signal is not None:
                    # Second signal: leave now. Published files are whole (they appear only by
                    # rename); remove our temporaries and go.
                    sink.discard()
                    log.warning("run.abort", signal=signal.Signals(signum).name)
                    os._exit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
                stop.signal = int(signum)
                collection.stop()
                log.warning("run.stopping", signal=signal.Signals(signum).name, grace_s=grace)
                tg.start_soon(cancel_after_grace)
