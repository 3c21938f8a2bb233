"""Deterministic ground truth for the simulator: accounts, projects, clusters, upgrade records.

Everything derives from one seed, so a test can ask the fleet what the server *should* answer and
compare it with what a client collected. Records are generated on demand from each
cluster's own seed (the same seed always yields the same history), and only recently read
histories are cached, so a fleet of 100,000 clusters costs a few hundred bytes per cluster. A
history that a mutation (:meth:`Fleet.insert_record`, :meth:`Fleet.remove_record`) edits is pinned
in memory from then on, so the server and the test always see the same truth.
"""

from __future__ import annotations

import calendar
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from collector.auth import Credentials, Secret
from collector.endpoints import SDK_REGIONS

#: Regions the official SDK (3.1.219) knows, in the SDK's order (NOTES §4): the same table
#: the collector resolves endpoints from, so the fake fleet lives where the real one can.
REGIONS: Final = SDK_REGIONS

_REGION_SET: Final = frozenset(REGIONS)

#: IAM lists this project for every account; it is not a region and has no DWS endpoint.
MOS_PROJECT: Final = "MOS"

_SUB_PROJECT_SUFFIXES: Final = ("analytics", "prod", "dev", "staging", "bi", "etl", "finance")
_CLUSTER_WORDS: Final = ("sales", "finance", "ops", "risk", "marketing", "logistics", "iot", "crm")
_CLUSTER_KINDS: Final = ("dw", "dws", "mart", "lake", "report")
_NODE_TYPES: Final = ("dwsx2.xlarge", "dwsx2.4xlarge", "dws2.m6.4xlarge.8", "dws2.m7.8xlarge.8")
_UPPER_ALNUM: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_ALNUM: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_TOKEN_ALPHABET: Final = _ALNUM + "-_"

#: Every history ends before this instant: a fixed "now" keeps the fleet independent of the clock.
_REFERENCE_EPOCH: Final = 1_748_736_000  # 2025-06-01T00:00:00Z
_DAY: Final = 86_400
#: Untouched histories kept after generation: pages of one cluster arrive close together.
_RECENT_HISTORIES: Final = 4_096
_RECORD_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S"
# Version 4, RFC 4122 variant: clear the version and variant bits, then set them.
_UUID_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET: Final = (0x4000 << 64) | (0x8000 << 48)
_CLUSTER_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


def _version_ladder() -> tuple[str, ...]:
    # Kernel releases, each followed by its patch builds: the ladder only ever goes up, so a
    # history walked newest-to-oldest steps down it and from_version < to_version always holds.
    kernels = (
        "8.0.0", "8.0.3", "8.1.0", "8.1.1", "8.1.3", "8.2.0", "8.2.1", "8.3.0",
        "9.0.0", "9.0.2", "9.0.3", "9.1.0", "9.1.1", "9.1.2",
    )  # fmt: skip
    builds = ("", ".100", ".101", ".200", ".201", ".210", ".300")
    return tuple(kernel + build for kernel in kernels for build in builds)


VERSIONS: Final = _version_ladder()


@dataclass(frozen=True, slots=True)
class SimCluster:
    """One DWS cluster. ``info`` and the history are derived from ``seed``, not stored."""

    id: str
    name: str
    region: str
    seed: int
    created_at: int
    #: Index into :data:`VERSIONS` of the version the cluster runs now.
    version_index: int
    #: Size of the generated history (mutations may change the live count later).
    record_count: int
    #: The newest record is an upgrade still in progress.
    upgrading: bool

    @property
    def version(self) -> str:
        return VERSIONS[self.version_index]

    @property
    def info(self) -> dict[str, Any]:
        """The ClusterInfo object list-clusters returns (a fresh dict on every call)."""
        return _cluster_info(self)


@dataclass(frozen=True, slots=True)
class SimProject:
    """An IAM project: a region (``cn-north-4``), a sub-project (``cn-north-4_analytics``), or
    ``MOS``, which IAM lists but which is no region (its ``region`` is ``"MOS"``, no DWS there).
    """

    id: str
    name: str
    #: The name's part before "_", whether or not that is a real region.
    region: str
    domain_id: str
    parent_id: str
    clusters: tuple[SimCluster, ...] = field(repr=False)

    @property
    def is_region(self) -> bool:
        """True when DWS exists there, i.e. the name starts with a real region."""
        return self.region in _REGION_SET


@dataclass(frozen=True, slots=True)
class SimAccount:
    """An account (IAM domain) with its own AK/SK; odd-numbered accounts use temporary keys.

    ``projects`` are the region projects, where DWS lives; IAM also lists ``mos``, which is no
    region (see :attr:`iam_projects`).
    """

    name: str
    ak: str
    sk: str = field(repr=False)
    domain_id: str
    security_token: str | None = field(repr=False)
    projects: tuple[SimProject, ...] = field(repr=False)
    mos: SimProject = field(repr=False)

    @property
    def iam_projects(self) -> tuple[SimProject, ...]:
        """Every project IAM lists for the account, in IAM's order: the regions, then MOS."""
        return (*self.projects, self.mos)

    def credentials(self) -> Credentials:
        """The account's keys as the collector's own :class:`~collector.auth.Credentials`."""
        token = Secret(self.security_token) if self.security_token else None
        return Credentials(ak=self.ak, sk=Secret(self.sk), security_token=token)


class Fleet:
    """Every account of a simulated Huawei Cloud, with lookups and the mutations faults apply.

    Build one with :meth:`generate`; the constructor takes already-built accounts.
    """

    __slots__ = (
        "_accounts",
        "_by_ak",
        "_clusters",
        "_gone",
        "_histories",
        "_lock",
        "_mutation_rng",
        "_owners",
        "_projects",
        "_recent",
        "_total_records",
        "seed",
    )

    def __init__(self, *, seed: int, accounts: tuple[SimAccount, ...]) -> None:
        self.seed = seed
        self._accounts = accounts
        self._by_ak = {account.ak: account for account in accounts}
        self._projects: dict[str, SimProject] = {}
        self._owners: dict[str, SimAccount] = {}
        self._clusters: dict[tuple[str, str], SimCluster] = {}
        total = 0
        for account in accounts:
            for project in account.iam_projects:
                self._projects[project.id] = project
                self._owners[project.id] = account
                for cluster in project.clusters:
                    self._clusters[project.id, cluster.id] = cluster
                    total += cluster.record_count
        self._total_records = total
        # Edited histories live here for good; untouched ones are regenerated from their seed
        # and only the recently paged ones kept, so a full pass over a 100,000-cluster fleet
        # does not hold every record in memory.
        self._histories: dict[str, list[dict[str, Any]]] = {}
        self._recent: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self._gone: set[tuple[str, str]] = set()
        # Mutations draw from their own stream so the generated fleet never depends on them.
        self._mutation_rng = random.Random(seed ^ 0x5EED_F1EE7)

    @classmethod
    def generate(
        cls,
        *,
        seed: int,
        accounts: int,
        projects: int,
        clusters: int,
        records: int,
        fixed_records: bool = False,
    ) -> Fleet:
        """Build a fleet: ``projects`` region projects per account, ``clusters`` per project.

        Each cluster has exactly ``records`` records when ``fixed_records``, else a count drawn
        from [0, 2 * records]; about a tenth of the clusters sit at each end of that range, and
        the first cluster always has none and the second always has 2 * records, so even a tiny
        fleet exercises empty and multi-page histories (multi-page needs records >= 6).
        """
        for label, value in (
            ("accounts", accounts),
            ("projects", projects),
            ("clusters", clusters),
            ("records", records),
        ):
            if value < 0:
                raise ValueError(f"{label} must be >= 0, got {value}")
        rng = random.Random(seed)
        built: list[SimAccount] = []
        serial = 0
        for index in range(accounts):
            domain_id = _hex32(rng)
            names = _project_names(rng, projects)
            project_ids = [_hex32(rng) for _ in names]
            by_name = dict(zip(names, project_ids, strict=True))
            account_projects: list[SimProject] = []
            for name, project_id in zip(names, project_ids, strict=True):
                region = name.partition("_")[0]
                sims: list[SimCluster] = []
                for _ in range(clusters):
                    count = _record_count(rng, serial, records, fixed=fixed_records)
                    sims.append(_cluster(rng, region=region, serial=serial, count=count))
                    serial += 1
                account_projects.append(
                    SimProject(
                        id=project_id,
                        name=name,
                        region=region,
                        domain_id=domain_id,
                        # A sub-project hangs under its region's project, as in IAM.
                        parent_id=by_name.get(region, domain_id) if "_" in name else domain_id,
                        clusters=tuple(sims),
                    )
                )
            mos = SimProject(
                id=_hex32(rng),
                name=MOS_PROJECT,
                region=MOS_PROJECT,
                domain_id=domain_id,
                parent_id=domain_id,
                clusters=(),
            )
            built.append(
                SimAccount(
                    name=f"acct-{index}",
                    ak="".join(rng.choices(_UPPER_ALNUM, k=20)),
                    sk="".join(rng.choices(_ALNUM, k=40)),
                    domain_id=domain_id,
                    # Odd accounts hold temporary credentials, which carry a security token.
                    security_token=(
                        "".join(rng.choices(_TOKEN_ALPHABET, k=512)) if index % 2 else None
                    ),
                    projects=tuple(account_projects),
                    mos=mos,
                )
            )
        return cls(seed=seed, accounts=tuple(built))

    # -- ground truth ---------------------------------------------------------------------------

    @property
    def accounts(self) -> tuple[SimAccount, ...]:
        return self._accounts

    @property
    def total_clusters(self) -> int:
        return len(self._clusters)

    @property
    def total_records(self) -> int:
        """Records across every cluster now, gone clusters included, mutations applied."""
        return self._total_records

    def account_by_ak(self, ak: str) -> SimAccount | None:
        return self._by_ak.get(ak)

    def project(self, project_id: str) -> SimProject | None:
        return self._projects.get(project_id)

    def owner(self, project_id: str) -> SimAccount | None:
        """The account a project belongs to."""
        return self._owners.get(project_id)

    def cluster(self, project_id: str, cluster_id: str) -> SimCluster | None:
        return self._clusters.get((project_id, cluster_id))

    def iter_clusters(self) -> Iterator[tuple[SimAccount, SimProject, SimCluster]]:
        for account in self._accounts:
            for project in account.projects:
                for cluster in project.clusters:
                    yield account, project, cluster

    def records(self, project_id: str, cluster_id: str) -> list[dict[str, Any]]:
        """The cluster's history now, newest first (copies: editing them changes nothing)."""
        return [dict(record) for record in self.history(project_id, cluster_id)]

    def history(self, project_id: str, cluster_id: str) -> list[dict[str, Any]]:
        """The live history list the server pages through; treat it as read-only."""
        pinned = self._histories.get(cluster_id)
        if pinned is not None:
            return pinned
        cluster = self._require(project_id, cluster_id)
        with self._lock:
            recent = self._recent.get(cluster_id)
            if recent is not None:
                self._recent.move_to_end(cluster_id)
                return recent
        generated = _history(cluster)
        with self._lock:
            # Another thread may have generated it meanwhile: keep one list, theirs.
            recent = self._recent.setdefault(cluster_id, generated)
            if len(self._recent) > _RECENT_HISTORIES:
                self._recent.popitem(last=False)
        return recent

    def record_count(self, project_id: str, cluster_id: str) -> int:
        """The live history length, without materialising an untouched history."""
        cached = self._histories.get(cluster_id)
        if cached is not None:
            return len(cached)
        return self._require(project_id, cluster_id).record_count

    def is_gone(self, project_id: str, cluster_id: str) -> bool:
        return (project_id, cluster_id) in self._gone

    # -- mutations ------------------------------------------------------------------------------

    def insert_record(self, project_id: str, cluster_id: str) -> dict[str, Any]:
        """Add a new newest record (a finished upgrade after the current head); return it."""
        cluster = self._require(project_id, cluster_id)
        history = self._pin(project_id, cluster_id)
        rng = self._mutation_rng
        if history:
            head = history[0]
            base = head["to_version"] if head["status"] == _SUCCESS else head["from_version"]
            last = _parse_time(head["end_time"] or head["start_time"])
        else:
            base, last = cluster.version, cluster.created_at
        position = VERSIONS.index(base) if base in VERSIONS else len(VERSIONS) - 1
        start = last + rng.randrange(3_600, 3 * _DAY)
        record = _record(
            rng,
            status=_SUCCESS,
            record_type=rng.choice(_RECORD_TYPES),
            from_version=base,
            to_version=VERSIONS[min(position + 1, len(VERSIONS) - 1)],
            start=start,
            end=start + rng.randrange(300, 3_000),
        )
        history.insert(0, record)
        self._total_records += 1
        return dict(record)

    def remove_record(self, project_id: str, cluster_id: str, index: int) -> dict[str, Any]:
        """Delete the record at ``index`` (0 = newest) and return it."""
        history = self._pin(project_id, cluster_id)
        record = history.pop(index)
        self._total_records -= 1
        return record

    def mark_gone(self, project_id: str, cluster_id: str) -> None:
        """The cluster stays listed, but its records answer 404: deleted after listing."""
        self._require(project_id, cluster_id)
        self._gone.add((project_id, cluster_id))

    def _pin(self, project_id: str, cluster_id: str) -> list[dict[str, Any]]:
        """Move a history out of the regenerable cache: once edited, it is the only truth."""
        cluster = self._require(project_id, cluster_id)
        with self._lock:
            pinned = self._histories.get(cluster_id)
            if pinned is None:
                pinned = self._recent.pop(cluster_id, None)
                if pinned is None:
                    pinned = _history(cluster)
                self._histories[cluster_id] = pinned
        return pinned

    def _require(self, project_id: str, cluster_id: str) -> SimCluster:
        cluster = self._clusters.get((project_id, cluster_id))
        if cluster is None:
            raise KeyError(f"no cluster {cluster_id} in project {project_id}")
        return cluster


# -- generation helpers -------------------------------------------------------------------------

_SUCCESS: Final = "UpdateCompleted_Success"
_FAILED: Final = "UpdateFailed"
_ROLLBACK: Final = "Rollback_Success"
_UPDATING: Final = "Updating"
_RECORD_TYPES: Final = ("update-kernel", "update-patch", "hot-patch")
_FAILURE_REASONS: Final = (
    "DWS.8011: Pre-upgrade check failed: disk usage of dn_6001 exceeds 80%.",
    "DWS.8014: Node 192.168.0.12 is unreachable during the rolling upgrade.",
    "DWS.8020: Upgrade package verification failed.",
    "DWS.8032: Timed out waiting for the cluster to become balanced.",
)


def _hex32(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _uuid4(rng: random.Random) -> str:
    # Same bits uuid.UUID(int=..., version=4) would set, at a fraction of its cost: histories of
    # a 100,000-cluster fleet mint hundreds of thousands of these.
    bits = (rng.getrandbits(128) & _UUID_CLEAR) | _UUID_SET
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _below(rng: random.Random, low: int, high: int) -> int:
    """A draw in [low, high): cheaper than randrange, which dominates generation time."""
    return low + int(rng.random() * (high - low))


def _project_names(rng: random.Random, count: int) -> list[str]:
    regions = list(REGIONS)
    rng.shuffle(regions)
    names: list[str] = []
    taken: set[str] = set()
    for index in range(count):
        region = regions[index % len(regions)]
        name = region
        # The first project is always a plain region so region look-ups by name always have a
        # target; later ones are sometimes sub-projects, and must be once regions run out.
        if index >= len(regions) or (index and rng.random() < 0.2):
            suffix = rng.choice(_SUB_PROJECT_SUFFIXES)
            name = f"{region}_{suffix}"
            serial = 2
            while name in taken:
                name = f"{region}_{suffix}{serial}"
                serial += 1
        taken.add(name)
        names.append(name)
    return names


def _record_count(rng: random.Random, serial: int, records: int, *, fixed: bool) -> int:
    if fixed:
        return records
    if serial == 0:
        return 0
    if serial == 1:
        return 2 * records
    draw = rng.random()
    if draw < 0.1:
        return 0
    if draw < 0.2:
        return 2 * records
    return _below(rng, 0, 2 * records + 1)


def _cluster(rng: random.Random, *, region: str, serial: int, count: int) -> SimCluster:
    # Leave room below the current version for every step of the history and above it for
    # inserted records; a history longer than the ladder simply repeats its lowest version.
    low = min(count, len(VERSIONS) - 8)
    version_index = _below(rng, max(low, len(VERSIONS) // 2), len(VERSIONS) - 3)
    name = f"{rng.choice(_CLUSTER_WORDS)}-{rng.choice(_CLUSTER_KINDS)}-{serial:05d}"
    return SimCluster(
        id=_uuid4(rng),
        name=name,
        region=region,
        seed=rng.getrandbits(64),
        created_at=_REFERENCE_EPOCH - _below(rng, 400, 1_500) * _DAY,
        version_index=version_index,
        record_count=count,
        upgrading=count > 0 and rng.random() < 0.05,
    )


def _format_record_time(epoch: int) -> str:
    return time.strftime(_RECORD_TIME_FORMAT, time.gmtime(epoch))


def _parse_time(text: str) -> int:
    return calendar.timegm(time.strptime(text, _RECORD_TIME_FORMAT))


def _record(
    rng: random.Random,
    *,
    status: str,
    record_type: str,
    from_version: str,
    to_version: str,
    start: int,
    end: int | None,
) -> dict[str, Any]:
    return {
        "item_id": _uuid4(rng),
        "status": status,
        "record_type": record_type,
        "from_version": from_version,
        "to_version": to_version,
        "start_time": _format_record_time(start),
        "end_time": None if end is None else _format_record_time(end),
        "job_id": _hex32(rng),
        "failed_reason": rng.choice(_FAILURE_REASONS) if status == _FAILED else None,
    }


def _history(cluster: SimCluster) -> list[dict[str, Any]]:
    """Walk the history newest to oldest: each success steps the version ladder down."""
    rng = random.Random(cluster.seed)
    count = cluster.record_count
    records: list[dict[str, Any]] = []
    # Spread the history evenly between creation and the reference instant; a slot of at least
    # two hours keeps each upgrade (under an hour) clear of the next one.
    span = max(_REFERENCE_EPOCH - cluster.created_at - _DAY, count * 7_200)
    slot = span // max(count, 1)
    position = cluster.version_index
    for index in range(count):
        start = _REFERENCE_EPOCH - (index + 1) * slot + _below(rng, 0, slot // 2)
        current = VERSIONS[position]
        above = VERSIONS[min(position + _below(rng, 1, 3), len(VERSIONS) - 1)]
        if index == 0 and cluster.upgrading:
            status, end = _UPDATING, None
        else:
            draw = rng.random()
            status = _FAILED if draw < 0.08 else _ROLLBACK if draw < 0.11 else _SUCCESS
            end = start + _below(rng, 300, 3_000)
        if status == _SUCCESS:
            # A kernel upgrade jumps two builds, a patch one.
            record_type = rng.choice(_RECORD_TYPES)
            step = 2 if record_type == "update-kernel" else 1
            position = max(position - step, 0)
            from_version, to_version = VERSIONS[position], current
        else:
            # A failed, rolled back or running upgrade leaves the cluster where it was.
            record_type = rng.choice(_RECORD_TYPES)
            from_version, to_version = current, above
        records.append(
            _record(
                rng,
                status=status,
                record_type=record_type,
                from_version=from_version,
                to_version=to_version,
                start=start,
                end=end,
            )
        )
    return records


def _cluster_info(cluster: SimCluster) -> dict[str, Any]:
    rng = random.Random(cluster.seed ^ 0xC1_05_7E_12)
    nodes = rng.choice((3, 3, 3, 6, 9))
    host = f"{cluster.name}.dws.{cluster.region}.myhuaweicloud.com"
    private_ip = f"192.168.{_below(rng, 0, 255)}.{_below(rng, 2, 250)}"
    updated = cluster.created_at + _below(rng, 1, 300) * _DAY
    node_base = _uuid4(rng)[:-4]
    return {
        "id": cluster.id,
        "name": cluster.name,
        "status": "AVAILABLE",
        "version": cluster.version,
        "updated": time.strftime(_CLUSTER_TIME_FORMAT, time.gmtime(updated)),
        "created": time.strftime(_CLUSTER_TIME_FORMAT, time.gmtime(cluster.created_at)),
        "port": 8000,
        "endpoints": [
            {"connect_info": f"{private_ip}:8000", "jdbc_url": f"jdbc:gaussdb://{host}:8000/"}
        ],
        "nodes": [
            # One random id per cluster, numbered per node: list-clusters builds thousands of
            # these per call, and a uuid per node was most of its cost.
            {
                "id": f"{node_base}{n:04x}",
                "status": "200",
                "name": f"{cluster.name}-dws-cn-cn-{n}-1",
            }
            for n in range(1, nodes + 1)
        ],
        "tags": [],
        "user_name": "dbadmin",
        "number_of_node": nodes,
        "recent_event": _below(rng, 0, 12),
        "availability_zone": f"{cluster.region}a",
        "enterprise_project_id": "0",
        "node_type": rng.choice(_NODE_TYPES),
        "vpc_id": _uuid4(rng),
        "subnet_id": _uuid4(rng),
        "public_ip": {
            "public_bind_type": "not_use",
            "eip_id": None,
            "ip_type": None,
            "eip_address": None,
            "band_width": None,
            "status": None,
            "error_message": None,
        },
        "public_endpoints": [],
        "action_progress": {},
        "sub_status": "NORMAL",
        "task_status": "UPGRADING" if cluster.upgrading else None,
        "security_group_id": _uuid4(rng),
        "failed_reasons": None,
        # Fields the real API returns that the SDK's model does not know: clients must keep them.
        "spec_version": "v2.0",
        "maintain_window": {"day": "Thu", "start_time": "22:00", "end_time": "02:00"},
        "logical_cluster_enable": False,
    }
