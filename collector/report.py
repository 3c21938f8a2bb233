"""``collector report DIR``: the fleet view an auditor asks for, read from an export.

Sections: clusters per current version; upgrades per outcome in the window; every failed
upgrade in the window with its reason; clusters with no successful upgrade in the window;
clusters of the inventory with no records at all. ``--since 30d`` sets the window (it ends
at ``now``); without it the window is all of history.

Definitions (where the export leaves a choice):

* An upgrade's time is its ``start_time``, else its ``end_time``. One with neither is counted
  as *undated*: it belongs to no bounded window (it does with no ``--since``).
* A failed upgrade is ``outcome: failed``, which includes rollbacks (the cluster did not end on
  the target version).
* A cluster's current version is the ``to_version`` of its newest successful upgrade (by time;
  an undated one counts as older than any dated one; ties go to the first in the file, which
  is the newest in API order), else its inventory ``cluster.version``, else ``(unknown)``.
* Clusters with no records include those whose collection failed (their history is unknown,
  not empty): each row says its ``collection`` state. They also count as having no successful
  upgrade in the window.

Memory is bounded by the fleet's size, not its history: two streaming passes (records, then
the inventory) keep about 250 bytes per cluster (25 MB for 100,000), and every list a section
prints (failed upgrades, clusters without success, clusters without records) is spooled to a
temporary file as it is found, past a few MiB, so a complete list never has to fit in memory.
Lists come out in file order (clusters as collected, each cluster's records newest first).

This module reads and computes; :mod:`collector.reportview` writes a :class:`Report` out as a
table, JSON or CSV.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Final, Generic, Self, TypeVar

import msgspec
import orjson

from collector.compression import Compression, iter_lines, suffix
from collector.errors import CollectorError, ConfigError
from collector.normalize import outcome_of, parse_time
from collector.sinks import STAGING

#: The outcomes every report lists, in this order, even at zero; others follow if present.
OUTCOMES: Final = ("success", "failed", "running", "unknown")
UNKNOWN_VERSION: Final = "(unknown)"

# Hours, days and weeks only: "m" would be read as minutes by some and months by others, and a
# report over the wrong window looks just as plausible as one over the right window.
_SINCE: Final = re.compile(r"\s*([0-9]+)\s*([hdw])\s*", re.ASCII)
_UNIT_SECONDS: Final = {"h": 3_600, "d": 86_400, "w": 604_800}

#: Bytes a spooled list keeps in memory before it moves to a temporary file.
_SPOOL_MEMORY: Final = 2 * 1024 * 1024


def parse_since(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w`` as a timedelta; ConfigError otherwise."""
    match = _SINCE.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"--since {text!r} is not a window: a whole number of hours, days or weeks"
            " (examples: 12h, 30d, 2w)"
        )
    amount = int(match.group(1))
    if amount == 0:
        raise ConfigError(f"--since {text!r} must be longer than zero")
    return timedelta(seconds=amount * _UNIT_SECONDS[match.group(2)])


def since_text(since: timedelta | None) -> str | None:
    """A window as ``--since`` spells it (``30d``, ``12h``, ``2w``), or None."""
    if since is None:
        return None
    seconds = int(since.total_seconds())
    for unit in ("w", "d", "h"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


# -- rows ------------------------------------------------------------------------------------


# Rows are msgspec structs rather than dataclasses: a spool writes and reads them back by the
# hundred thousand, and msgspec encodes and decodes them (as JSON arrays) several times faster.


class FailedUpgrade(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One failed (or rolled back) upgrade in the window."""

    time: str | None
    account: str | None
    region: str | None
    project_id: str | None
    cluster_id: str | None
    cluster_name: str | None
    item_id: str | None
    status: str | None
    from_version: str | None
    to_version: str | None
    reason: str | None


class ClusterRow(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An inventory cluster, as the cluster lists show it."""

    account: str | None
    region: str | None
    project_id: str | None
    cluster_id: str | None
    cluster_name: str | None
    version: str
    collection: str | None
    records: int


Row = TypeVar("Row", FailedUpgrade, ClusterRow)

_ENCODER: Final = msgspec.json.Encoder()


class Spool(Generic[Row]):
    """An append-only list of rows kept in a temporary file once it outgrows a few MiB."""

    __slots__ = ("_count", "_file", "_row_type")

    def __init__(self, row_type: type[Row]) -> None:
        self._row_type: type[Row] = row_type
        # Closed by close(), which Report.close() and build_report's failure path call.
        self._file: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=_SPOOL_MEMORY, mode="w+b"
        )
        self._count = 0

    @property
    def fields(self) -> tuple[str, ...]:
        return self._row_type.__struct_fields__

    def append(self, row: Row) -> None:
        self._file.write(_ENCODER.encode(row) + b"\n")
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Row]:
        """The rows in the order appended (one reader at a time; no appends meanwhile)."""
        fh = self._file
        fh.flush()
        fh.seek(0)
        decode = msgspec.json.Decoder(self._row_type).decode
        for line in fh:
            yield decode(line)
        fh.seek(0, 2)

    def close(self) -> None:
        self._file.close()


# -- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """What :func:`build_report` found. Close it (or use ``with``) to drop its spools."""

    directory: Path
    records_file: Path
    clusters_file: Path
    #: From summary.json; both None when there is none (the run did not finish).
    run_id: str | None
    run_status: str | None
    now: datetime
    since: timedelta | None
    #: None: the window is all of history.
    window_start: datetime | None
    #: Clusters in the inventory (each counted once).
    clusters: int
    #: Record lines read.
    records: int
    #: (version, clusters) sorted by version.
    versions: tuple[tuple[str, int], ...]
    #: (outcome, upgrades in the window), :data:`OUTCOMES` first.
    outcomes: tuple[tuple[str, int], ...]
    #: Records with neither start_time nor end_time.
    undated_records: int
    #: Clusters with records but no inventory line (a damaged or hand-edited export).
    clusters_without_inventory: int
    #: Inventory lines repeating a cluster already seen (read once).
    duplicate_inventory_lines: int
    #: Clusters without records whose collection did not succeed: history unknown, not empty.
    uncollected_clusters: int
    failed_upgrades: Spool[FailedUpgrade]
    no_success_in_window: Spool[ClusterRow]
    no_records: Spool[ClusterRow]

    def close(self) -> None:
        for spool in (self.failed_upgrades, self.no_success_in_window, self.no_records):
            spool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _ClusterState:
    """The little a report keeps per cluster between the two passes."""

    __slots__ = ("listed", "records", "success_at", "success_in_window", "version")

    def __init__(self) -> None:
        self.records = 0
        #: Time of the newest successful upgrade ("" if it is undated); None: no success yet.
        self.success_at: str | None = None
        self.version: str | None = None
        self.success_in_window = False
        self.listed = False


def _find(directory: Path, base: str) -> Path:
    """The one ``base``.jsonl[.gz|.zst] in ``directory``; ConfigError naming what is wrong."""
    candidates = [directory / f"{base}{suffix(kind)}" for kind in Compression]
    found = [path for path in candidates if path.is_file()]
    if not found and (directory / STAGING).exists():
        # A run's staging area without published files: still running, or killed.
        raise ConfigError(
            f"{directory} holds a run that has not published its files: it is still running,"
            " or was stopped (finish it with collector run --resume)"
        )
    if not found:
        raise ConfigError(
            f"{directory} is not a collector export: it has no {base}.jsonl"
            f" (nor {base}.jsonl.gz, {base}.jsonl.zst)"
        )
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise ConfigError(f"{directory} holds more than one {base} file ({names}): keep one")
    return found[0]


class _RecordLine(msgspec.Struct, frozen=True, gc=False):
    """The fields of a records.jsonl line the report reads; the rest (``raw``...) is skipped
    by the decoder without being built, which is most of a line's bytes."""

    cluster_id: str | None = None
    outcome: str | None = None
    status: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    account: str | None = None
    region: str | None = None
    project_id: str | None = None
    cluster_name: str | None = None
    item_id: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    failed_reason: str | None = None


class _ClusterInfo(msgspec.Struct, frozen=True, gc=False):
    # The API's object as returned, not normalized: take whatever is there and check it.
    version: object = None


class _InventoryLine(msgspec.Struct, frozen=True, gc=False):
    """The fields of a clusters.jsonl line the report reads."""

    cluster_id: str | None = None
    account: str | None = None
    region: str | None = None
    project_id: str | None = None
    cluster_name: str | None = None
    collection: str | None = None
    cluster: _ClusterInfo | None = None


Line = TypeVar("Line", _RecordLine, _InventoryLine)


def _rows(path: Path, line_type: type[Line]) -> Iterator[Line]:
    """Each non-blank line, decoded; ConfigError naming the file and line of a bad one."""
    decode = msgspec.json.Decoder(line_type).decode
    lines = iter_lines(path)
    number = 0
    while True:
        try:
            line = next(lines, None)
        except CollectorError as exc:  # a truncated or corrupt compressed file, an I/O error
            raise ConfigError(str(exc)) from exc
        if line is None:
            return
        number += 1
        try:
            yield decode(line)
        except msgspec.DecodeError as exc:
            if line.strip():  # blank lines are skipped, not errors
                raise ConfigError(f"{path} line {number}: {_why(exc)}") from exc


def _why(exc: msgspec.DecodeError) -> str:
    if isinstance(exc, msgspec.ValidationError):
        return f"unexpected shape ({exc})"
    return f"not JSON ({exc})"


def utc_text(moment: datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SSZ``, the form exports hold, or None."""
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _moment(value: object) -> str | None:
    """A record time as ``YYYY-MM-DDTHH:MM:SSZ``, whose text order is time order.

    Exports already hold this form (normalize writes it), so the common case costs a length
    check instead of a datetime per record; anything else is parsed and re-spelled.
    """
    if isinstance(value, str) and len(value) == 20 and value[10] == "T" and value[19] == "Z":
        return value
    return utc_text(parse_time(value))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _read_summary(directory: Path) -> tuple[str | None, str | None]:
    path = directory / "summary.json"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        summary = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not JSON ({exc})") from exc
    if not isinstance(summary, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return _text(summary.get("run_id")), _text(summary.get("status"))


def _version_key(version: str) -> tuple[tuple[int, ...], str]:
    # Numeric parts compare as numbers (9.1.0 after 8.10.0); the text breaks ties and orders
    # the rare non-numeric labels.
    return tuple(int(part) for part in re.findall(r"[0-9]+", version)), version


def build_report(directory: Path, *, since: timedelta | None, now: datetime) -> Report:
    """Read the export in ``directory`` (any compression) into a :class:`Report`."""
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        raise ConfigError(f"export directory {directory} {what}")
    records_file = _find(directory, "records")
    clusters_file = _find(directory, "clusters")
    run_id, run_status = _read_summary(directory)
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    window_start = None if since is None else now - since
    builder = _Builder(window_start=window_start)
    try:
        for record in _rows(records_file, _RecordLine):
            builder.add_record(record)
        for cluster in _rows(clusters_file, _InventoryLine):
            builder.add_cluster(cluster)
    except BaseException:
        builder.close()
        raise
    outcomes = builder.outcomes
    others = sorted(name for name in outcomes if name not in OUTCOMES)
    versions = sorted(builder.versions.items(), key=lambda item: _version_key(item[0]))
    return Report(
        directory=directory,
        records_file=records_file,
        clusters_file=clusters_file,
        run_id=run_id,
        run_status=run_status,
        now=now,
        since=since,
        window_start=window_start,
        clusters=builder.inventory,
        records=builder.records,
        versions=tuple(versions),
        outcomes=tuple((name, outcomes[name]) for name in (*OUTCOMES, *others)),
        undated_records=builder.undated,
        clusters_without_inventory=sum(1 for s in builder.states.values() if not s.listed),
        duplicate_inventory_lines=builder.duplicates,
        uncollected_clusters=builder.uncollected,
        failed_upgrades=builder.failed,
        no_success_in_window=builder.no_success,
        no_records=builder.no_records,
    )


class _Builder:
    """The two passes' state: records first (per-cluster state), then the inventory."""

    def __init__(self, *, window_start: datetime | None) -> None:
        self.window_start = window_start
        self.cutoff = "" if window_start is None else utc_text(window_start) or ""
        self.states: dict[str, _ClusterState] = {}
        # One string object per distinct version, not one per cluster.
        self.interned: dict[str, str] = {}
        self.outcomes: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.records = 0
        self.undated = 0
        self.inventory = 0
        self.duplicates = 0
        self.uncollected = 0
        self.failed = Spool(FailedUpgrade)
        self.no_success = Spool(ClusterRow)
        self.no_records = Spool(ClusterRow)

    def close(self) -> None:
        for spool in (self.failed, self.no_success, self.no_records):
            spool.close()

    def _state(self, cluster_id: str) -> _ClusterState:
        state = self.states.get(cluster_id)
        if state is None:
            state = self.states[cluster_id] = _ClusterState()
        return state

    def add_record(self, row: _RecordLine) -> None:
        self.records += 1
        state = self._state(str(row.cluster_id))
        state.records += 1
        outcome = row.outcome or outcome_of(row.status)
        at = _moment(row.start_time)
        if at is None:
            at = _moment(row.end_time)
        if at is None:
            self.undated += 1
        in_window = self.window_start is None or (at is not None and at >= self.cutoff)
        if in_window:
            self.outcomes[outcome] += 1
        if outcome == "success":
            state.success_in_window = state.success_in_window or in_window
            key = "" if at is None else at  # an undated success is older than any dated one
            to_version = row.to_version
            # Strictly newer only: on a tie the first seen (the newest, in API order) wins.
            newer = state.success_at is None or key > state.success_at
            if newer and to_version is not None:
                state.success_at = key
                state.version = self.interned.setdefault(to_version, to_version)
        elif outcome == "failed" and in_window:
            self.failed.append(
                FailedUpgrade(
                    time=row.start_time or row.end_time,
                    account=row.account,
                    region=row.region,
                    project_id=row.project_id,
                    cluster_id=row.cluster_id,
                    cluster_name=row.cluster_name,
                    item_id=row.item_id,
                    status=row.status,
                    from_version=row.from_version,
                    to_version=row.to_version,
                    reason=row.failed_reason,
                )
            )

    def add_cluster(self, row: _InventoryLine) -> None:
        state = self._state(str(row.cluster_id))
        if state.listed:
            self.duplicates += 1
            return
        state.listed = True
        self.inventory += 1
        listed = row.cluster.version if row.cluster is not None else None
        listed_version = listed if isinstance(listed, str) and listed else None
        current = state.version or listed_version or UNKNOWN_VERSION
        self.versions[current] += 1
        if state.success_in_window and state.records:
            return
        line = ClusterRow(
            account=row.account,
            region=row.region,
            project_id=row.project_id,
            cluster_id=row.cluster_id,
            cluster_name=row.cluster_name,
            version=current,
            collection=row.collection,
            records=state.records,
        )
        if not state.success_in_window:
            self.no_success.append(line)
        if not state.records:
            self.no_records.append(line)
            # "gone" was read (a 404: deleted), so its empty history is as known as "ok"'s.
            if line.collection not in ("ok", "gone"):
                self.uncollected += 1
