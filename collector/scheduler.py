"""Who works on what, when: discovery streaming into per-endpoint workers, in passes.

Shape of one pass (all inside one anyio task group)::

    accounts ──► projects (IAM) ──► clusters (DWS list) ──► queue per endpoint ──► a task per
                                                                      cluster, N per endpoint

* Every endpoint (a DWS region, or IAM) has its own bounded queue and its own workers, so a slow,
  throttled or dead region only ever blocks its own work; requests in flight are bounded
  globally and per endpoint by the client's governor.
* Discovery of later projects proceeds while earlier clusters are paged; a project's task blocks
  only on its own endpoint's queue.
* A request that fails transiently after its attempts — or whose retry budget is spent, or
  whose endpoint's circuit is open — is parked at the :class:`~collector.limits.PassBarrier`:
  it gives its endpoint slot back and is tried again in a later pass, once everything else is
  done, and its unit resumes where it stopped (a cluster keeps the pages it has). Only what
  still fails after the last pass is written to ``errors.jsonl``; failures that will not change
  (403, 401, bad data) are written at once.
* Every unit known but not finished is tracked, so a deadline or a signal can report exactly
  what was left undone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from collector.auth import Signer
from collector.client import ApiClient
from collector.config import AccountConfig, Config
from collector.discovery import Project, discover_projects, list_clusters
from collector.errors import BadResponseError, CollectorError, HttpStatusError, NotCollected
from collector.limits import CURRENT_SLOT, Gate, PassBarrier, Route, Slot
from collector.normalize import RecordContext, format_time, normalize
from collector.pagination import ServerProfile, read_history
from collector.shards import Shard
from collector.sinks import Sink
from collector.stats import RunStats

log = structlog.get_logger("collector.scheduler")

IAM = "iam"
#: Projects of one endpoint being queued at once.
LISTINGS_PER_ENDPOINT = 2
#: Project listings requested and parsed at once, across the run.
LISTINGS_IN_HAND = 3


@dataclass(frozen=True, slots=True)
class ClusterUnit:
    """One cluster to page: its id and name. Its ClusterInfo went to the sink's inventory when
    it was listed, so a cluster waiting its turn costs little memory."""

    project: Project
    signer: Signer
    cluster_id: str
    name: str | None


class Backlog:
    """One project's listed clusters not yet handed to its endpoint's queue.

    Packed as JSON lines of ``[id, name]``: about 60 bytes a cluster, where a ClusterUnit kept
    in a dict costs about 280. When every project of a large fleet is listed long before its
    clusters are paged (each project on its own endpoint), this is what the waiting costs.
    """

    __slots__ = ("_at", "_packed", "project", "signer")

    def __init__(
        self, project: Project, signer: Signer, clusters: Iterable[tuple[str, str | None]]
    ) -> None:
        self.project = project
        self.signer = signer
        nl = orjson.OPT_APPEND_NEWLINE
        self._packed = b"".join(orjson.dumps(pair, option=nl) for pair in clusters)
        self._at = 0

    def take(self) -> ClusterUnit | None:
        """The next waiting cluster, or None when none is left."""
        unit, self._at = self._unit_at(self._at)
        return unit

    def waiting(self) -> Iterator[ClusterUnit]:
        """The clusters not taken yet, leaving them in place."""
        at = self._at
        while True:
            unit, at = self._unit_at(at)
            if unit is None:
                return
            yield unit

    def _unit_at(self, at: int) -> tuple[ClusterUnit | None, int]:
        if at >= len(self._packed):
            return None, at
        end = self._packed.index(b"\n", at)
        cluster_id, name = orjson.loads(self._packed[at:end])
        return ClusterUnit(self.project, self.signer, cluster_id, name), end + 1


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


class Collection:
    """One run's units and their fate; :meth:`execute` drives the passes."""

    def __init__(
        self,
        config: Config,
        *,
        client: ApiClient,
        sink: Sink,
        stats: RunStats,
        barrier: PassBarrier,
        shard: Shard | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.sink = sink
        self.stats = stats
        self.barrier = barrier
        #: Only clusters this shard owns are collected.
        self.shard = shard
        self.profiles: dict[str, ServerProfile] = {}
        self._stopping = False
        self._queues: dict[str, MemoryObjectSendStream[ClusterUnit]] = {}
        self._listing: dict[str, Gate] = {}
        self._all_listings = Gate(LISTINGS_IN_HAND)
        self._tg: TaskGroup | None = None
        # Everything known and not finished, for an exact report when a run is cut short.
        self.pending_accounts: dict[str, AccountConfig] = {a.name: a for a in config.accounts}
        self.pending_projects: dict[str, Project] = {}
        #: Clusters listed and not yet queued, packed per project.
        self.backlogs: set[Backlog] = set()
        #: Clusters queued or being paged (at most the endpoints' queues and slots hold).
        self.pending_clusters: dict[str, ClusterUnit] = {}
        #: Projects whose clusters were listed in this run (the delta export needs them).
        self.listed_projects: set[str] = set()

    @property
    def stopping(self) -> bool:
        """Set by a signal or the deadline: start nothing new."""
        return self._stopping

    def stop(self) -> None:
        self._stopping = True
        self.barrier.halt()

    @property
    def per_endpoint(self) -> int:
        limits = self.config.limits
        return min(limits.per_endpoint or limits.concurrency, limits.concurrency)

    def profile(self, endpoint: str) -> ServerProfile:
        found = self.profiles.get(endpoint)
        if found is None:
            found = self.profiles[endpoint] = ServerProfile(mode=self.config.paging.offset_mode)
        return found

    async def execute(self) -> None:
        """Run every unit, in as many passes as parked requests need."""

        def on_pass(number: int, parked: int) -> None:
            self.stats.passes = number
            self.client.new_pass()
            log.info("pass.start", number=number, requests_set_aside=parked)

        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for account in self.config.accounts:
                    self.barrier.enter()
                    tg.start_soon(self._discover_account, account)
                await self.barrier.run(on_pass)
                # All done (or halted with only parked requests left): end the dispatchers
                # waiting on their queues, and anything parked.
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            for send in self._queues.values():
                send.close()
            self._queues.clear()

    # -- discovery ---------------------------------------------------------------------------

    async def _discover_account(self, account: AccountConfig) -> None:
        try:
            if not self.stopping:
                await self._discover_account_now(account)
        finally:
            self.barrier.leave()

    async def _discover_account_now(self, account: AccountConfig) -> None:
        signer = Signer(account.credentials)
        try:
            found = await discover_projects(
                self.client, account, signer, route=Route(account.name, IAM)
            )
        except CollectorError as err:
            self._unit_failed(err, unit="account", account=account.name)
            return
        del self.pending_accounts[account.name]
        for shown in found.rejected:
            bad = BadResponseError(
                f"IAM project list of account {account.name} has an entry whose id {shown} is"
                " not 32 hex characters: not requested",
                transient=False,
            )
            self._unit_failed(bad, unit="project", account=account.name)
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
        assert self._tg is not None
        for project in found.projects:
            self.barrier.enter()
            self._tg.start_soon(self._discover_project, project, signer)

    async def _discover_project(self, project: Project, signer: Signer) -> None:
        try:
            if self.stopping:
                return
            # Memory: a parsed listing is several times its JSON, so only a few are in hand
            # at once across the run. A listing request that is set aside gives its slot back
            # while it waits (the pass barrier releases CURRENT_SLOT).
            slot = Slot(self._all_listings)
            await slot.acquire()
            CURRENT_SLOT.set(slot)
            try:
                backlog = await self._discover_project_now(project, signer)
            finally:
                CURRENT_SLOT.set(None)
                slot.release()
            if backlog is None:
                return
            # Queueing waits for the endpoint's workers; an endpoint queues two projects at a
            # time, so it cannot list its whole inventory ahead of its paging.
            async with self._listing_slots(project.region):
                while not self.stopping and (unit := backlog.take()) is not None:
                    self.pending_clusters[unit.cluster_id] = unit
                    await self._enqueue(unit)
            if not self.stopping:
                self.backlogs.discard(backlog)
        finally:
            self.barrier.leave()

    def _listing_slots(self, endpoint: str) -> Gate:
        slots = self._listing.get(endpoint)
        if slots is None:
            slots = self._listing[endpoint] = Gate(LISTINGS_PER_ENDPOINT)
        return slots

    async def _discover_project_now(self, project: Project, signer: Signer) -> Backlog | None:
        try:
            listing = await list_clusters(
                self.client, project, signer, route=Route(project.account, project.region)
            )
        except CollectorError as err:
            self._unit_failed(
                err,
                unit="project",
                account=project.account,
                region=project.region,
                project_id=project.id,
            )
            return None
        del self.pending_projects[project.id]
        self.listed_projects.add(project.id)
        clusters = listing.clusters
        for shown in listing.rejected:
            bad = BadResponseError(
                f"cluster list of project {project.id} has an entry whose id {shown} is not a"
                " UUID: not requested",
                transient=False,
            )
            self._unit_failed(
                bad,
                unit="listing",
                account=project.account,
                region=project.region,
                project_id=project.id,
            )
        log.info(
            "project.discovered",
            account=project.account,
            region=project.region,
            project_id=project.id,
            clusters=len(clusters),
        )
        if self.shard is not None:
            clusters = [c for c in clusters if self.shard.owns(c["id"])]
        self.stats.clusters += len(clusters)
        # A resumed run skips what an earlier session of it finished (counted from the journal).
        done = self.sink.completed
        waiting: list[tuple[str, str | None]] = []
        for cluster in clusters:
            # Every listed cluster is in the inventory (a resumed run joins it with the
            # clusters an earlier session finished); only unfinished ones are paged.
            self.sink.add_inventory(cluster["id"], orjson.dumps(cluster))
            if cluster["id"] not in done:
                name = cluster.get("name")
                waiting.append((cluster["id"], name if isinstance(name, str) else None))
        backlog = Backlog(project, signer, waiting)
        self.backlogs.add(backlog)
        return backlog

    async def _enqueue(self, unit: ClusterUnit) -> None:
        endpoint = unit.project.region
        send = self._queues.get(endpoint)
        if send is None:
            send, receive = anyio.create_memory_object_stream[ClusterUnit](
                max_buffer_size=self.per_endpoint
            )
            self._queues[endpoint] = send
            assert self._tg is not None
            self._tg.start_soon(self._dispatch, receive, Gate(self.per_endpoint))
        self.barrier.enter()  # a queued cluster is work the next pass must wait for
        try:
            await send.send(unit)
        except BaseException:
            self.barrier.leave()
            raise

    # -- paging ------------------------------------------------------------------------------

    async def _dispatch(self, receive: MemoryObjectReceiveStream[ClusterUnit], slots: Gate) -> None:
        """Start each queued cluster of one endpoint as soon as one of its slots is free."""
        assert self._tg is not None
        async with receive:
            async for unit in receive:
                if self.stopping:
                    self.barrier.leave()  # left pending: reported as not collected
                    continue
                slot = Slot(slots)
                await slot.acquire()
                self._tg.start_soon(self._run_cluster, unit, slot)

    async def _run_cluster(self, unit: ClusterUnit, slot: Slot) -> None:
        CURRENT_SLOT.set(slot)  # a parked request gives it back while it waits
        try:
            await self._collect_cluster(unit)
        finally:
            slot.release()
            self.barrier.leave()

    async def _collect_cluster(self, unit: ClusterUnit) -> None:
        project, cluster_id = unit.project, unit.cluster_id
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
                self._unit_failed(err, unit="cluster", account=project.account, retry=unit, **where)
                return
            # Deleted between listing and paging: gone, not lost.
            self.stats.clusters_gone += 1
            log.info("cluster.gone", request_id=err.request_id, **context)
            self._finish_cluster(unit, state="gone")
            return
        except CollectorError as err:
            self._unit_failed(err, unit="cluster", account=project.account, retry=unit, **where)
            return
        if history.passes > 1:
            self.stats.clusters_reread += 1
            log.info("cluster.reread", passes=history.passes, **context)
        collected_at = format_time(datetime.now(UTC))
        assert collected_at is not None
        ctx = RecordContext(
            account=project.account,
            region=project.region,
            project_id=project.id,
            cluster_id=cluster_id,
            cluster_name=unit.name,
            collected_at=collected_at,
        )
        lines = [normalize(raw, ctx) for raw in history.records]
        self.stats.records += len(lines)
        self.stats.clusters_ok += 1
        self._finish_cluster(unit, state="ok", records=lines)

    def _finish_cluster(
        self,
        unit: ClusterUnit,
        *,
        state: str,
        records: list[dict[str, Any]] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        self.pending_clusters.pop(unit.cluster_id, None)
        project = unit.project
        self.sink.cluster_done(
            cluster_id=unit.cluster_id,
            state=state,
            cluster={
                "account": project.account,
                "region": project.region,
                "project_id": project.id,
                "project_name": project.name,
                "cluster_id": unit.cluster_id,
                "cluster_name": unit.name,
                "collection": state,
                "records": len(records or ()),
            },
            records=records or [],
            error=error,
        )

    # -- failures ----------------------------------------------------------------------------

    def _unit_failed(
        self,
        err: CollectorError,
        *,
        unit: str,
        account: str,
        retry: ClusterUnit | None = None,
        **where: str | None,
    ) -> None:
        """A final failure (later passes, if any, are behind us): count it and write it."""
        if unit == "account":
            self.stats.accounts_failed += 1
            self.pending_accounts.pop(account, None)
        elif unit == "project":
            self.stats.projects_failed += 1
            self.pending_projects.pop(str(where.get("project_id")), None)
        elif unit == "listing":
            self.stats.clusters_failed += 1  # a cluster we could not even name
        self.stats.failed_by_endpoint[where.get("region") or IAM] += 1
        # A listing entry we refused is a cluster we could not even name: cluster_id stays null.
        line = error_line(
            err, unit="cluster" if unit == "listing" else unit, account=account, **where
        )
        if unit == "cluster":
            assert retry is not None
            self.stats.clusters_failed += 1
            self._finish_cluster(retry, state="failed", error=line)
        else:
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
        waiting = (unit for backlog in self.backlogs for unit in backlog.waiting())
        for unit in itertools.chain(self.pending_clusters.values(), waiting):
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
