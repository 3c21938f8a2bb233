"""One collection run: discovery streams into paging, results stream into the sink.

Shape of a run (all inside one anyio task group)::

    accounts ──► projects (IAM) ──► clusters (DWS list) ──► channel ──► N workers ──► sink
                                                                     (page, normalize)

Discovery of later projects proceeds while earlier clusters are paged; the channel is bounded,
so discovery never runs far ahead of paging. Requests in flight are bounded by one limiter in
the client. A failing unit (account, project, cluster) is written to ``errors.jsonl`` and never
stops the others. A cluster's records reach ``records.jsonl`` only once its history is complete.
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from collector import __version__
from collector.auth import Signer
from collector.client import ApiClient
from collector.config import AccountConfig, Config
from collector.discovery import Project, discover_projects, list_clusters
from collector.errors import CollectorError, HttpStatusError
from collector.normalize import RecordContext, format_time, normalize
from collector.pagination import ServerProfile, read_history
from collector.retry import RetryPolicy
from collector.sinks import DirectorySink
from collector.stats import RunStats
from collector.transport import AiohttpTransport, Transport

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

log = structlog.get_logger("collector.run")


def now_utc() -> datetime:
    return datetime.now(UTC)


def new_run_id(started: datetime) -> str:
    return f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class ClusterUnit:
    project: Project
    signer: Signer
    cluster: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunResult:
    summary: dict[str, Any]
    exit_code: int
    output_dir: Path


def error_line(
    err: CollectorError, *, unit: str, account: str, **where: str | None
) -> dict[str, Any]:
    return {
        "unit": unit,
        "account": account,
        "region": where.get("region"),
        "project_id": where.get("project_id"),
        "cluster_id": where.get("cluster_id"),
        "error": type(err).__name__,
        "message": err.message,
        "status": getattr(err, "status", None),
        "error_code": getattr(err, "error_code", None),
        "error_msg": getattr(err, "error_msg", None),
        "request_id": getattr(err, "request_id", None),
        "attempts": err.attempts,
        "at": format_time(now_utc()),
    }


class Collection:
    """State of one run; :meth:`execute` drives it."""

    def __init__(
        self,
        config: Config,
        *,
        output_dir: Path,
        transport: Transport,
        policy: RetryPolicy,
        run_id: str,
    ) -> None:
        self.config = config
        self.output_dir = output_dir
        self.run_id = run_id
        self.stats = RunStats()
        self.client = ApiClient(
            transport=transport,
            policy=policy,
            limiter=anyio.CapacityLimiter(config.limits.concurrency),
            stats=self.stats,
        )
        self.sink = DirectorySink(output_dir, run_id=run_id)
        self.profiles: dict[str, ServerProfile] = {}
        #: The signal that stopped the run, if one did.
        self.interrupted: int | None = None

    def profile(self, endpoint: str) -> ServerProfile:
        found = self.profiles.get(endpoint)
        if found is None:
            pinned = self.config.paging.offset_mode
            found = self.profiles[endpoint] = ServerProfile(mode=pinned)
        return found

    async def execute(self) -> None:
        concurrency = self.config.limits.concurrency
        send, receive = anyio.create_memory_object_stream[ClusterUnit](max_buffer_size=concurrency)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._discover_all, send)
            async with receive:
                for _ in range(concurrency):
                    tg.start_soon(self._worker, receive.clone())

    # -- discovery -------------------------------------------------------------------------

    async def _discover_all(self, send: MemoryObjectSendStream[ClusterUnit]) -> None:
        async with send, anyio.create_task_group() as tg:
            for account in self.config.accounts:
                tg.start_soon(self._discover_account, account, send.clone())

    async def _discover_account(
        self, account: AccountConfig, send: MemoryObjectSendStream[ClusterUnit]
    ) -> None:
        signer = Signer(account.credentials)
        async with send:
            try:
                found = await discover_projects(self.client, account, signer)
            except CollectorError as err:
                self.stats.accounts_failed += 1
                self._fail(err, unit="account", account=account.name)
                return
            for skipped in found.skipped:
                self.stats.projects_skipped += 1
                log.info(
                    "project.skipped",
                    account=account.name,
                    project_id=skipped.id,
                    project_name=skipped.name,
                    reason=skipped.reason,
                )
            async with anyio.create_task_group() as tg:
                for project in found.projects:
                    tg.start_soon(self._discover_project, project, signer, send.clone())

    async def _discover_project(
        self, project: Project, signer: Signer, send: MemoryObjectSendStream[ClusterUnit]
    ) -> None:
        async with send:
            self.stats.projects += 1
            try:
                clusters = await list_clusters(self.client, project, signer)
            except CollectorError as err:
                self.stats.projects_failed += 1
                self._fail(
                    err,
                    unit="project",
                    account=project.account,
                    region=project.region,
                    project_id=project.id,
                )
                return
            log.info(
                "project.discovered",
                account=project.account,
                region=project.region,
                project_id=project.id,
                clusters=len(clusters),
            )
            self.stats.clusters += len(clusters)
            for cluster in clusters:
                await send.send(ClusterUnit(project=project, signer=signer, cluster=cluster))

    # -- paging ----------------------------------------------------------------------------

    async def _worker(self, receive: MemoryObjectReceiveStream[ClusterUnit]) -> None:
        async with receive:
            async for unit in receive:
                await self._collect_cluster(unit)

    async def _collect_cluster(self, unit: ClusterUnit) -> None:
        project, cluster = unit.project, unit.cluster
        cluster_id: str = cluster["id"]
        context = {
            "account": project.account,
            "region": project.region,
            "project_id": project.id,
            "cluster_id": cluster_id,
        }
        path = f"/v1/{project.id}/clusters/{cluster_id}/upgrade-management/records"

        async def fetch(offset: int, limit: int) -> dict[str, Any]:
            return await self.client.get_json(
                signer=unit.signer,
                base_url=project.endpoint,
                path=path,
                query=(("offset", str(offset)), ("limit", str(limit))),
                project_id=project.id,
                context=context,
            )

        paging = self.config.paging
        state, count = "ok", 0
        try:
            history = await read_history(
                fetch,
                profile=self.profile(project.endpoint),
                page_size=paging.page_size,
                max_pages=paging.max_pages,
                max_rereads=paging.max_rereads,
            )
        except HttpStatusError as err:
            if err.status == 404:
                # Deleted between listing and paging: gone, not lost.
                state = "gone"
                self.stats.clusters_gone += 1
                log.info("cluster.gone", request_id=err.request_id, **context)
            else:
                state = "failed"
                self.stats.clusters_failed += 1
                self._fail(err, unit="cluster", **context)
        except CollectorError as err:
            state = "failed"
            self.stats.clusters_failed += 1
            self._fail(err, unit="cluster", **context)
        else:
            if history.passes > 1:
                self.stats.clusters_reread += 1
                log.info("cluster.reread", passes=history.passes, **context)
            collected_at = format_time(now_utc())
            assert collected_at is not None
            ctx = RecordContext(
                account=project.account,
                region=project.region,
                project_id=project.id,
                cluster_id=cluster_id,
                cluster_name=cluster.get("name") if isinstance(cluster.get("name"), str) else None,
                collected_at=collected_at,
            )
            lines = [normalize(raw, ctx) for raw in history.records]
            self.sink.add_records(lines)
            count = len(lines)
            self.stats.records += count
            self.stats.clusters_ok += 1
        self.sink.add_cluster(
            {
                "account": project.account,
                "region": project.region,
                "project_id": project.id,
                "project_name": project.name,
                "cluster_id": cluster_id,
                "cluster_name": cluster.get("name"),
                "collection": state,
                "records": count,
                "cluster": cluster,
            }
        )

    def _fail(self, err: CollectorError, *, unit: str, account: str, **where: str | None) -> None:
        line = error_line(err, unit=unit, account=account, **where)
        self.sink.add_error(line)
        log.warning(
            "unit.failed",
            unit=unit,
            account=account,
            **{k: v for k, v in where.items() if v is not None},
            error=err.message,
            status=line["status"],
            error_code=line["error_code"],
            request_id=line["request_id"],
            attempts=err.attempts,
        )


def _verdict(stats: RunStats, interrupted: int | None) -> tuple[str, int, str]:
    failed = stats.clusters_failed + stats.projects_failed + stats.accounts_failed
    if interrupted is not None:
        name = "SIGINT" if interrupted == signal.SIGINT else "SIGTERM"
        code = EXIT_SIGINT if interrupted == signal.SIGINT else EXIT_SIGTERM
        return "interrupted", code, f"stopped by {name}; units not reached are missing"
    if failed:
        parts = []
        if stats.accounts_failed:
            parts.append(f"{stats.accounts_failed} account(s)")
        if stats.projects_failed:
            parts.append(f"{stats.projects_failed} project(s)")
        if stats.clusters_failed:
            parts.append(f"{stats.clusters_failed} cluster(s)")
        return "partial", EXIT_PARTIAL, " and ".join(parts) + " failed; see errors.jsonl"
    return "ok", EXIT_OK, "every unit collected"


async def collect(
    config: Config,
    *,
    output_dir: Path,
    transport: Transport | None = None,
    policy: RetryPolicy | None = None,
    handle_signals: bool = False,
    on_signal: Callable[[int], None] | None = None,
) -> RunResult:
    """Run a whole collection into ``output_dir`` and publish its files."""
    started = now_utc()
    run_id = new_run_id(started)
    retry = config.retry
    policy = policy or RetryPolicy(
        max_attempts=retry.max_attempts,
        backoff_base=retry.backoff_base,
        backoff_cap=retry.backoff_cap,
        retry_after_max=retry.retry_after_max,
    )
    owned = transport is None
    http: Transport = transport or AiohttpTransport(
        connect_timeout=config.http.connect_timeout,
        read_timeout=config.http.read_timeout,
        max_connections=config.limits.concurrency,
    )
    interrupted: int | None = None
    collection: Collection | None = None
    try:
        if owned:
            assert isinstance(http, AiohttpTransport)
            await http.__aenter__()
        collection = Collection(
            config, output_dir=output_dir, transport=http, policy=policy, run_id=run_id
        )
        log.info("run.start", run_id=run_id, output=str(output_dir), version=__version__)
        async with anyio.create_task_group() as tg:
            if handle_signals:
                tg.start_soon(_watch_signals, tg, on_signal, collection)
            await collection.execute()
            tg.cancel_scope.cancel()
        interrupted = collection.interrupted
    except BaseException:
        if collection is not None:
            collection.sink.discard()
        raise
    finally:
        if owned:
            assert isinstance(http, AiohttpTransport)
            await http.__aexit__(None, None, None)

    ended = now_utc()
    stats = collection.stats
    status, code, reason = _verdict(stats, interrupted)
    summary = {
        "run_id": run_id,
        "collector_version": __version__,
        "started_at": format_time(started),
        "ended_at": format_time(ended),
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
    collection.sink.publish(summary)
    log.info("run.done", run_id=run_id, status=status, exit_code=code, **stats.as_dict())
    return RunResult(summary=summary, exit_code=code, output_dir=output_dir)


async def _watch_signals(
    tg: TaskGroup, on_signal: Callable[[int], None] | None, collection: Collection
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if collection.interrupted is not None:
                # Second signal: leave now. Published files are whole (rename-based);
                # temporaries are removed on the way out.
                raise SystemExit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
            collection.interrupted = int(signum)
            if on_signal is not None:
                on_signal(int(signum))
            tg.cancel_scope.cancel()
