"""Who works on what, when: discovery streaming into per-endpoint workers, in passes.

Shape of one pass (all inside one anyio task group)::

    accounts ──► projects (IAM) ──► clusters (DWS list) ──► queue per endpoint ──► its workers
                                                                                  (page, write)

* Every endpoint (a DWS region, or IAM) has its own bounded queue and its own workers, so a slow,
  throttled or dead region only ever blocks its own work; requests in flight are bounded
  globally and per endpoint by the client's governor.
* Discovery of later projects proceeds while earlier clusters are paged; a project's task blocks
  only on its own endpoint's queue.
* A unit (account, project, cluster) that fails transiently — attempts or retry budget spent,
  circuit open — is set aside and tried again in a later pass; only what still fails after the
  last pass is written to ``errors.jsonl``. Failures that will not change (403, 401, bad data)
  are written at once.
* Every unit known but not finished is tracked, so a deadline or a signal can report exactly
  what was left undone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from collector.auth import Signer
from collector.client import ApiClient
from collector.config import AccountConfig, Config
from collector.discovery import Project, discover_projects, list_clusters
from collector.errors import CircuitOpenError, CollectorError, HttpStatusError, NotCollected
from collector.limits import Route
from collector.normalize import RecordContext, format_time, normalize
from collector.pagination import ServerProfile, read_history
from collector.sinks import Sink
from collector.stats import RunStats

log = structlog.get_logger("collector.scheduler")

IAM = "iam"


@dataclass(frozen=True, slots=True)
class ClusterUnit:
    project: Project
    signer: Signer
    cluster: dict[str, Any]

    @property
    def cluster_id(self) -> str:
        cluster_id: str = self.cluster["id"]
        return cluster_id


@dataclass(slots=True)
class Deferred:
    """Units set aside for a later pass, with the error that put them there."""

    accounts: list[tuple[AccountConfig, CollectorError]] = field(default_factory=list)
    projects: list[tuple[Project, Signer, CollectorError]] = field(default_factory=list)
    clusters: list[tuple[ClusterUnit, CollectorError]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.accounts or self.projects or self.clusters)


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
        "at": format_time(datetime.now(UTC)),
    }


def _retry_later(err: CollectorError) -> bool:
    return err.transient or isinstance(err, CircuitOpenError)


class Collection:
    """One run's units and their fate; :meth:`execute` drives the passes."""

    def __init__(self, config: Config, *, client: ApiClient, sink: Sink, stats: RunStats) -> None:
        self.config = config
        self.client = client
        self.sink = sink
        self.stats = stats
        self.profiles: dict[str, ServerProfile] = {}
        #: Set by a signal or the deadline: start nothing new.
        self.stopping = False
        self._final_pass = False
        self._deferred = Deferred()
        self._queues: dict[str, MemoryObjectSendStream[ClusterUnit]] = {}
        self._tg: TaskGroup | None = None
        # Everything known and not finished, for an exact report when a run is cut short.
        self.pending_accounts: dict[str, AccountConfig] = {a.name: a for a in config.accounts}
        self.pending_projects: dict[str, Project] = {}
        self.pending_clusters: dict[str, ClusterUnit] = {}

    @property
    def per_endpoint(self) -> int:
        limits = self.config.limits
        return min(limits.per_endpoint or limits.concurrency, limits.concurrency)

    def profile(self, endpoint: str) -> ServerProfile:
        found = self.profiles.get(endpoint)
        if found is None:
            found = self.profiles[endpoint] = ServerProfile(mode=self.config.paging.offset_mode)
        return found

    # -- passes ------------------------------------------------------------------------------

    async def execute(self) -> None:
        retry = self.config.retry
        self._final_pass = retry.passes == 0
        await self._pass(Deferred(accounts=[(a, _NO_ERROR) for a in self.config.accounts]))
        for number in range(1, retry.passes + 1):
            if not self._deferred or self.stopping:
                break
            deferred, self._deferred = self._deferred, Deferred()
            self._final_pass = number == retry.passes
            log.info(
                "pass.start",
                number=number + 1,
                accounts=len(deferred.accounts),
                projects=len(deferred.projects),
                clusters=len(deferred.clusters),
            )
            await anyio.sleep(retry.pass_delay)
            await self._pass(deferred)

    async def _pass(self, work: Deferred) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                async with anyio.create_task_group() as discovery:
                    for account, _ in work.accounts:
                        discovery.start_soon(self._discover_account, account)
                    for project, signer, _ in work.projects:
                        discovery.start_soon(self._discover_project, project, signer)
                    for unit, _ in work.clusters:
                        discovery.start_soon(self._enqueue, unit)
                # Discovery is over: close the queues so the workers end once they drain them.
                self._close_queues()
        finally:
            self._close_queues()  # cancelled (deadline, signal): close them all the same
            self._tg = None

    def _close_queues(self) -> None:
        queues, self._queues = self._queues, {}
        for send in queues.values():
            send.close()

    # -- discovery ---------------------------------------------------------------------------

    async def _discover_account(self, account: AccountConfig) -> None:
        if self.stopping:
            return
        signer = Signer(account.credentials)
        try:
            found = await discover_projects(
                self.client, account, signer, route=Route(account.name, IAM)
            )
        except CollectorError as err:
            self._unit_failed(err, unit="account", account=account.name, retry=(account,))
            return
        del self.pending_accounts[account.name]
        for skipped in found.skipped:
            self.stats.projects_skipped += 1
            log.info(
                "project.skipped",
                account=account.name,
                project_id=skipped.id,
                project_name=skipped.name,
                reason=skipped.reason,
            )
        for project in found.projects:
            self.pending_projects[project.id] = project
        self.stats.projects += len(found.projects)
        async with anyio.create_task_group() as tg:
            for project in found.projects:
                tg.start_soon(self._discover_project, project, signer)

    async def _discover_project(self, project: Project, signer: Signer) -> None:
        if self.stopping:
            return
        try:
            clusters = await list_clusters(
                self.client, project, signer, route=Route(project.account, project.region)
            )
        except CollectorError as err:
            self._unit_failed(
                err,
                unit="project",
                account=project.account,
                region=project.region,
                project_id=project.id,
                retry=(project, signer),
            )
            return
        del self.pending_projects[project.id]
        log.info(
            "project.discovered",
            account=project.account,
            region=project.region,
            project_id=project.id,
            clusters=len(clusters),
        )
        self.stats.clusters += len(clusters)
        units = [ClusterUnit(project=project, signer=signer, cluster=c) for c in clusters]
        for unit in units:
            self.pending_clusters[unit.cluster_id] = unit
        for unit in units:
            if self.stopping:
                return
            await self._enqueue(unit)

    async def _enqueue(self, unit: ClusterUnit) -> None:
        endpoint = unit.project.region
        send = self._queues.get(endpoint)
        if send is None:
            send, receive = anyio.create_memory_object_stream[ClusterUnit](
                max_buffer_size=self.per_endpoint
            )
            self._queues[endpoint] = send
            assert self._tg is not None
            async with receive:
                for _ in range(self.per_endpoint):
                    self._tg.start_soon(self._worker, receive.clone())
        await send.send(unit)

    # -- paging ------------------------------------------------------------------------------

    async def _worker(self, receive: MemoryObjectReceiveStream[ClusterUnit]) -> None:
        async with receive:
            async for unit in receive:
                if self.stopping:
                    return  # what is still queued stays pending and is reported as such
                await self._collect_cluster(unit)

    async def _collect_cluster(self, unit: ClusterUnit) -> None:
        project, cluster, cluster_id = unit.project, unit.cluster, unit.cluster_id
        where = {"region": project.region, "project_id": project.id, "cluster_id": cluster_id}
        context = {"account": project.account, **where}
        route = Route(project.account, project.region)
        path = f"/v1/{project.id}/clusters/{cluster_id}/upgrade-management/records"

        async def fetch(offset: int, limit: int) -> dict[str, Any]:
            return await self.client.get_json(
                signer=unit.signer,
                route=route,
                base_url=project.endpoint,
                path=path,
                query=(("offset", str(offset)), ("limit", str(limit))),
                project_id=project.id,
                context=context,
            )

        paging = self.config.paging
        try:
            history = await read_history(
                fetch,
                profile=self.profile(project.endpoint),
                page_size=paging.page_size,
                max_pages=paging.max_pages,
                max_rereads=paging.max_rereads,
            )
        except HttpStatusError as err:
            if err.status != 404:
                self._unit_failed(
                    err, unit="cluster", account=project.account, retry=(unit,), **where
                )
                return
            # Deleted between listing and paging: gone, not lost.
            self.stats.clusters_gone += 1
            log.info("cluster.gone", request_id=err.request_id, **context)
            self._finish_cluster(unit, state="gone", records=0)
            return
        except CollectorError as err:
            self._unit_failed(err, unit="cluster", account=project.account, retry=(unit,), **where)
            return
        if history.passes > 1:
            self.stats.clusters_reread += 1
            log.info("cluster.reread", passes=history.passes, **context)
        collected_at = format_time(datetime.now(UTC))
        assert collected_at is not None
        name = cluster.get("name")
        ctx = RecordContext(
            account=project.account,
            region=project.region,
            project_id=project.id,
            cluster_id=cluster_id,
            cluster_name=name if isinstance(name, str) else None,
            collected_at=collected_at,
        )
        lines = [normalize(raw, ctx) for raw in history.records]
        self.sink.add_records(lines)
        self.stats.records += len(lines)
        self.stats.clusters_ok += 1
        self._finish_cluster(unit, state="ok", records=len(lines))

    def _finish_cluster(self, unit: ClusterUnit, *, state: str, records: int) -> None:
        self.pending_clusters.pop(unit.cluster_id, None)
        project = unit.project
        self.sink.add_cluster(
            {
                "account": project.account,
                "region": project.region,
                "project_id": project.id,
                "project_name": project.name,
                "cluster_id": unit.cluster_id,
                "cluster_name": unit.cluster.get("name"),
                "collection": state,
                "records": records,
                "cluster": unit.cluster,
            }
        )

    # -- failures ----------------------------------------------------------------------------

    def _unit_failed(
        self,
        err: CollectorError,
        *,
        unit: str,
        account: str,
        retry: tuple[Any, ...],
        **where: str | None,
    ) -> None:
        if _retry_later(err) and not self._final_pass and not self.stopping:
            if unit == "account":
                self._deferred.accounts.append((retry[0], err))
            elif unit == "project":
                self._deferred.projects.append((retry[0], retry[1], err))
            else:
                self._deferred.clusters.append((retry[0], err))
            log.info("unit.deferred", unit=unit, account=account, error=err.message, **where)
            return
        if unit == "account":
            self.stats.accounts_failed += 1
            self.pending_accounts.pop(account, None)
        elif unit == "project":
            self.stats.projects_failed += 1
            self.pending_projects.pop(str(where.get("project_id")), None)
        else:
            self.stats.clusters_failed += 1
            cluster_unit: ClusterUnit = retry[0]
            self._finish_cluster(cluster_unit, state="failed", records=0)
        self.stats.failed_by_endpoint[where.get("region") or IAM] += 1
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

    def report_unfinished(self, why: str) -> int:
        """Write an errors.jsonl line for every unit known but not finished; how many."""
        lines = 0
        for name in self.pending_accounts:
            self.sink.add_error(error_line(_not_collected(why), unit="account", account=name))
            lines += 1
        for project in self.pending_projects.values():
            self.sink.add_error(
                error_line(
                    _not_collected(why),
                    unit="project",
                    account=project.account,
                    region=project.region,
                    project_id=project.id,
                )
            )
            lines += 1
        for unit in self.pending_clusters.values():
            project = unit.project
            self.sink.add_error(
                error_line(
                    _not_collected(why),
                    unit="cluster",
                    account=project.account,
                    region=project.region,
                    project_id=project.id,
                    cluster_id=unit.cluster_id,
                )
            )
            lines += 1
        return lines


def _not_collected(why: str) -> NotCollected:
    err = NotCollected(f"not collected: {why}")
    err.attempts = 0
    return err


_NO_ERROR = NotCollected("first pass")
