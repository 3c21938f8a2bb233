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
from collector.delta import changes, check_earlier_run
from collector.exportdir import Claimed, claim
from collector.limits import Governor, GovernorSettings, PassBarrier, RateSettings
from collector.manifest import StartMode
from collector.retry import RetryPolicy
from collector.scheduler import Collection
from collector.shards import Shard
from collector.sinks import ExportSink, output_name
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
    output_dir: Path | None = None,
    transport: Transport | None = None,
    deadline: float | None = None,
    handle_signals: bool = False,
    grace: float = DEFAULT_GRACE,
    resume: bool = False,
    overwrite: bool = False,
    break_lock: bool = False,
    shard: Shard | None = None,
    since_run: Path | None = None,
    stats: RunStats | None = None,
) -> RunResult:
    """Run a whole collection and publish its files.

    ``output_dir`` overrides the config's ``output.dir`` template. ``resume`` finishes an
    interrupted run in that directory; ``overwrite`` replaces a finished one.
    """
    since = since_run or (Path(config.output.since_run) if config.output.since_run else None)
    if since is not None:
        check_earlier_run(since)
    started = now_utc()
    claimed = claim(
        config,
        output_dir=output_dir,
        started=started,
        run_id=new_run_id(started),
        resume=resume,
        overwrite=overwrite,
        break_lock=break_lock,
        shard=shard,
    )
    # Every log line of this run carries its id (structlog's context variables).
    structlog.contextvars.bind_contextvars(run_id=claimed.run_id)
    try:
        return await _collect(
            config,
            stats=stats if stats is not None else RunStats(),
            claimed=claimed,
            transport=transport,
            deadline=deadline,
            handle_signals=handle_signals,
            grace=grace,
            shard=shard,
            since=since,
        )
    finally:
        structlog.contextvars.unbind_contextvars("run_id")
        claimed.lock.release()


async def _collect(
    config: Config,
    *,
    stats: RunStats,
    claimed: Claimed,
    transport: Transport | None,
    deadline: float | None,
    handle_signals: bool,
    grace: float,
    shard: Shard | None,
    since: Path | None,
) -> RunResult:
    run_id, started, directory = claimed.run_id, claimed.started, claimed.directory
    retry = config.retry
    policy = RetryPolicy(
        max_attempts=retry.max_attempts,
        backoff_base=retry.backoff_base,
        backoff_cap=retry.backoff_cap,
        retry_after_max=retry.retry_after_max,
    )
    governor = Governor(governor_settings(config))
    sink = ExportSink(
        directory,
        run_id=run_id,
        compression=config.output.compression,
        level=config.output.compression_level,
        resume=claimed.mode is StartMode.RESUME,
    )
    restored = sink.restored
    stats.clusters_ok, stats.clusters_failed = restored.clusters_ok, restored.clusters_failed
    stats.clusters_gone, stats.records = restored.clusters_gone, restored.records
    stop = _Stop()
    try:
        async with _TransportScope(config, transport) as http:
            barrier = PassBarrier(passes=retry.passes, delay=retry.pass_delay)
            client = ApiClient(
                transport=http, policy=policy, governor=governor, stats=stats, barrier=barrier
            )
            collection = Collection(
                config, client=client, sink=sink, stats=stats, barrier=barrier, shard=shard
            )
            log.info(
                "run.start",
                run_id=run_id,
                output=str(directory),
                version=__version__,
                resumed_clusters=restored.entries,
                shard=None if shard is None else str(shard),
            )
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
        sink.close()  # the staging files and journal stay: --resume can finish this run
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
        "resumed": claimed.mode is StartMode.RESUME,
        "resumed_clusters": restored.entries,
        "shard": None if shard is None else shard.as_dict(),
        "compression": config.output.compression.value,
        "since_run": None if since is None else str(since),
        "counts": stats.as_dict(),
    }
    extra = []
    if since is not None:
        lines = changes(
            since,
            records=sink.staged_path("records"),
            clusters=sink.staged_path("clusters"),
            listed_projects=collection.listed_projects,
        )
        extra.append((output_name("changes", config.output.compression), lines))
    # An interrupted run keeps its journal, so that --resume can finish it.
    summary["files"] = sink.publish(summary, keep_staging=status == "interrupted", extra=extra)
    log.info("run.done", run_id=run_id, status=status, exit_code=code, **stats.as_dict())
    return RunResult(summary=summary, exit_code=code, output_dir=directory)


class _TransportScope:
    """Own an aiohttp transport unless the caller brought one."""

    def __init__(self, config: Config, given: Transport | None) -> None:
        self._given = given
        self._owned: AiohttpTransport | None = None
        if given is None:
            self._owned = AiohttpTransport(
                connect_timeout=config.http.connect_timeout,
                read_timeout=config.http.read_timeout,
                request_timeout=config.http.request_timeout,
                max_body_bytes=config.http.max_body_bytes,
                ca_bundle=config.http.ca_bundle,
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
    sink: ExportSink,
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
                    sink.close()  # staging and journal stay behind for --resume
                    log.warning("run.abort", signal=signal.Signals(signum).name)
                    os._exit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
                stop.signal = int(signum)
                collection.stop()
                log.warning("run.stopping", signal=signal.Signals(signum).name, grace_s=grace)
                tg.start_soon(cancel_after_grace)
