"""The audit report, checked against the simulator's ground truth and hand-built exports."""

from __future__ import annotations

import csv
import functools
import gc
import gzip
import io
import shutil
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import zstandard

from collector.demo import run_demo
from collector.errors import ConfigError
from collector.report import Report, build_report, parse_since
from collector.reportview import render
from collector.simulator.fleet import Fleet
from collector.sinks import STAGING

#: The simulator's reference instant: every generated history ends before it.
NOW = datetime(2025, 6, 1, tzinfo=UTC)

#: The simulator's statuses, mapped by hand to the outcome an auditor counts.
OUTCOME = {
    "UpdateCompleted_Success": "success",
    "UpdateFailed": "failed",
    "Rollback_Success": "failed",
    "Updating": "running",
}


# -- ground truth ------------------------------------------------------------------------------


@dataclass
class Truth:
    versions: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    #: item_id -> (cluster_id, cluster_name, account, region, status, reason, start)
    failed: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    no_success: set[str] = field(default_factory=set)
    no_records: set[str] = field(default_factory=set)
    clusters: int = 0
    records: int = 0


def truth_of(fleet: Fleet, since: timedelta | None) -> Truth:
    """What the report must say, from the fleet itself, not from the export."""
    truth = Truth()
    start = None if since is None else NOW - since
    for account, project, cluster in fleet.iter_clusters():
        truth.clusters += 1
        # Every generated history's newest success ends on the cluster's current version.
        truth.versions[cluster.version] += 1
        history = fleet.records(project.id, cluster.id)
        truth.records += len(history)
        if not history:
            truth.no_records.add(cluster.id)
        succeeded = False
        for record in history:
            began = datetime.strptime(record["start_time"], "%Y-%m-%dT%H:%M:%S")
            if start is not None and began.replace(tzinfo=UTC) < start:
                continue
            outcome = OUTCOME[record["status"]]
            truth.outcomes[outcome] += 1
            succeeded = succeeded or outcome == "success"
            if outcome == "failed":
                truth.failed[record["item_id"]] = (
                    cluster.id,
                    cluster.name,
                    account.name,
                    project.region,
                    record["status"],
                    record["failed_reason"],
                    f"{record['start_time']}Z",
                )
        if not succeeded:
            truth.no_success.add(cluster.id)
    return truth


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Fleet]:
    """One real demo export (collected from the simulator over loopback) for the module."""
    out = tmp_path_factory.mktemp("demo")
    result, fleet = anyio.run(functools.partial(run_demo, output_dir=out), backend="asyncio")
    assert result.summary["status"] == "ok"
    return out, fleet


@pytest.fixture
def report_of() -> Iterator[Any]:
    """build_report, closing every report the test made."""
    made: list[Report] = []

    def build(directory: Path, since: timedelta | None = None) -> Report:
        report = build_report(directory, since=since, now=NOW)
        made.append(report)
        return report

    yield build
    for report in made:
        report.close()


# -- against the simulator's truth -------------------------------------------------------------


@pytest.mark.parametrize("since", [timedelta(days=90), timedelta(days=365), None])
def test_report_matches_the_fleet_truth(
    demo: tuple[Path, Fleet], report_of: Any, since: timedelta | None
) -> None:
    """Versions, outcomes, failures with reasons, no-success and no-record clusters all agree."""
    directory, fleet = demo
    truth = truth_of(fleet, since)
    report = report_of(directory, since)

    assert report.clusters == truth.clusters == fleet.total_clusters
    assert report.records == truth.records
    assert dict(report.versions) == dict(truth.versions)
    assert {k: v for k, v in report.outcomes if v} == dict(truth.outcomes)
    failed = {
        row.item_id: (
            row.cluster_id,
            row.cluster_name,
            row.account,
            row.region,
            row.status,
            row.reason,
            row.time,
        )
        for row in report.failed_upgrades
    }
    assert len(failed) == len(report.failed_upgrades)
    assert failed == truth.failed
    assert {row.cluster_id for row in report.no_success_in_window} == truth.no_success
    assert {row.cluster_id for row in report.no_records} == truth.no_records
    assert all(row.collection == "ok" for row in report.no_records)
    assert report.uncollected_clusters == 0
    assert report.clusters_without_inventory == 0
    assert report.run_status == "ok"


def test_the_demo_fleet_exercises_every_section(demo: tuple[Path, Fleet]) -> None:
    """Guard against a vacuous comparison: the year's window has each kind of row."""
    _, fleet = demo
    truth = truth_of(fleet, timedelta(days=365))
    assert truth.failed
    assert any(reason is None for *_, reason, _ in truth.failed.values())  # rollbacks
    assert truth.no_success - truth.no_records
    assert truth.no_records
    assert truth.outcomes["running"]


def _recompress(source: Path, target: Path, kind: str) -> None:
    target.mkdir()
    shutil.copy(source / "summary.json", target / "summary.json")
    for name in ("records.jsonl", "clusters.jsonl"):
        data = (source / name).read_bytes()
        if kind == "gz":
            (target / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (target / f"{name}.zst").write_bytes(zstandard.ZstdCompressor().compress(data))


@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_compressed_export_gives_the_same_report(
    demo: tuple[Path, Fleet], report_of: Any, tmp_path: Path, kind: str
) -> None:
    """records.jsonl.gz / .zst read exactly like the plain files."""
    directory, _ = demo
    _recompress(directory, tmp_path / kind, kind)
    since = timedelta(days=365)
    plain, packed = report_of(directory, since), report_of(tmp_path / kind, since)
    assert packed.records_file.name == f"records.jsonl.{kind}"

    def as_json(report: Report) -> dict[str, Any]:
        out = io.StringIO()
        render(report, "json", out)
        body: dict[str, Any] = orjson.loads(out.getvalue())
        del body["export"]["directory"]
        return body

    assert as_json(packed) == as_json(plain)


# -- formats -------------------------------------------------------------------------------------


def test_json_format_is_one_object_with_every_section(
    demo: tuple[Path, Fleet], report_of: Any
) -> None:
    """One JSON document; its lists are as long as the truth says."""
    directory, fleet = demo
    truth = truth_of(fleet, timedelta(days=365))
    out = io.StringIO()
    render(report_of(directory, timedelta(days=365)), "json", out)
    body = orjson.loads(out.getvalue())
    assert body["export"]["since"] == "365d"
    assert body["export"]["window_start"] == "2024-06-01T00:00:00Z"
    assert {v["version"]: v["clusters"] for v in body["versions"]} == dict(truth.versions)
    assert {row["item_id"] for row in body["failed_upgrades"]} == set(truth.failed)
    assert {row["cluster_id"] for row in body["no_success_in_window"]} == truth.no_success
    assert {row["cluster_id"] for row in body["no_records"]} == truth.no_records


def test_csv_format_has_a_section_column(demo: tuple[Path, Fleet], report_of: Any) -> None:
    """One CSV: rows per section, counts and ids matching the truth."""
    directory, fleet = demo
    truth = truth_of(fleet, timedelta(days=365))
    out = io.StringIO()
    render(report_of(directory, timedelta(days=365)), "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    by_section: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append(row)
    versions = {row["key"]: int(row["value"]) for row in by_section["version"]}
    assert versions == dict(truth.versions)
    outcomes = {row["key"]: int(row["value"]) for row in by_section["outcome"]}
    assert {k: v for k, v in outcomes.items() if v} == dict(truth.outcomes)
    failed = {row["item_id"]: row["reason"] for row in by_section["failed_upgrade"]}
    assert failed == {item: t[5] or "" for item, t in truth.failed.items()}
    assert {r["cluster_id"] for r in by_section["no_success_in_window"]} == truth.no_success
    assert {r["cluster_id"] for r in by_section["no_records"]} == truth.no_records


def test_table_format_lists_failures_with_their_reasons(
    demo: tuple[Path, Fleet], report_of: Any
) -> None:
    """The text table names every failed upgrade, its cluster and its reason."""
    directory, fleet = demo
    truth = truth_of(fleet, timedelta(days=365))
    out = io.StringIO()
    render(report_of(directory, timedelta(days=365)), "table", out)
    text = out.getvalue()
    assert f"Failed upgrades in the window ({len(truth.failed)})" in text
    assert "window: 2024-06-01T00:00:00Z .. 2025-06-01T00:00:00Z (365d)" in text
    lines = text.splitlines()
    for item_id, (cluster_id, name, _, _, status, reason, _) in truth.failed.items():
        (line,) = [line for line in lines if item_id in line]
        assert cluster_id in line
        assert name in line
        assert status in line
        assert line.endswith(reason or "-")


# -- definitions, on hand-built exports -----------------------------------------------------------


def write_export(directory: Path, records: list[dict[str, Any]], clusters: list[dict[str, Any]]):
    directory.mkdir(parents=True, exist_ok=True)
    option = orjson.OPT_APPEND_NEWLINE
    (directory / "records.jsonl").write_bytes(
        b"".join(orjson.dumps(r, option=option) for r in records)
    )
    (directory / "clusters.jsonl").write_bytes(
        b"".join(orjson.dumps(c, option=option) for c in clusters)
    )


def rec(cluster: str, outcome: str, start: str | None, to: str, **extra: Any) -> dict[str, Any]:
    return {
        "cluster_id": cluster,
        "outcome": outcome,
        "start_time": start,
        "to_version": to,
    } | extra


def inv(cluster: str, version: str | None, collection: str = "ok") -> dict[str, Any]:
    info = {} if version is None else {"version": version}
    return {"cluster_id": cluster, "collection": collection, "cluster": info}


def test_current_version_is_the_newest_success_by_time(tmp_path: Path, report_of: Any) -> None:
    """Newest success by time wins over file order; failures and undated ones do not count."""
    write_export(
        tmp_path,
        [
            rec("a", "success", "2025-01-01T00:00:00Z", "9.0.0"),
            rec("a", "success", "2025-03-01T00:00:00Z", "9.1.0"),  # newer, though later in file
            rec("a", "failed", "2025-04-01T00:00:00Z", "9.2.0"),  # a failure moves nothing
            rec("b", "success", None, "8.0.0"),  # undated: older than any dated success
            rec("b", "success", "2020-01-01T00:00:00Z", "8.1.0"),
            rec("c", "success", None, "7.0.0"),  # only undated: still a success
            rec("d", "failed", "2025-05-01T00:00:00Z", "9.9.9"),  # no success: inventory's
        ],
        [
            inv("a", "1.0"),
            inv("b", "1.0"),
            inv("c", "1.0"),
            inv("d", "9.0.3"),
            inv("e", None),
            {"cluster_id": "f", "cluster": {"version": 9}},  # not text: no version known
        ],
    )
    report = report_of(tmp_path)
    assert dict(report.versions) == {
        "9.1.0": 1,
        "8.1.0": 1,
        "7.0.0": 1,
        "9.0.3": 1,
        "(unknown)": 2,
    }
    # Sorted numerically, (unknown) (no digits) first.
    assert [v for v, _ in report.versions] == ["(unknown)", "7.0.0", "8.1.0", "9.0.3", "9.1.0"]


def test_window_counts_by_start_else_end_time(tmp_path: Path, report_of: Any) -> None:
    """start_time places an upgrade; end_time when it has none; neither: undated."""
    write_export(
        tmp_path,
        [
            rec("a", "success", "2025-05-20T00:00:00Z", "2"),  # in
            rec("a", "failed", "2025-04-01T00:00:00Z", "2", failed_reason="old"),  # out
            rec("a", "failed", None, "2", end_time="2025-05-30T00:00:00Z", failed_reason="x"),
            rec("b", "running", None, "2"),  # undated
            rec("b", "success", "2025-05-02T00:00:00Z", "2"),  # exactly at the window's start
        ],
        [inv("a", "1"), inv("b", "1"), inv("c", "1", collection="failed")],
    )
    report = report_of(tmp_path, timedelta(days=30))
    assert dict(report.outcomes) == {"success": 2, "failed": 1, "running": 0, "unknown": 0}
    assert report.undated_records == 1
    (failed,) = report.failed_upgrades
    assert (failed.reason, failed.time) == ("x", "2025-05-30T00:00:00Z")
    assert [row.cluster_id for row in report.no_success_in_window] == ["c"]
    assert [(row.cluster_id, row.collection) for row in report.no_records] == [("c", "failed")]
    assert report.uncollected_clusters == 1
    # Over all history the undated record counts too.
    assert dict(report_of(tmp_path).outcomes)["running"] == 1


def test_outcome_falls_back_to_status_and_duplicates_count_once(
    tmp_path: Path, report_of: Any
) -> None:
    """Lines without outcome are classified from status; a repeated inventory line is skipped."""
    write_export(
        tmp_path,
        [{"cluster_id": "a", "status": "Rollback_Success", "start_time": "2025-05-01T00:00:00Z"}],
        [inv("a", "1"), inv("a", "1"), inv("z", "2")],
    )
    (tmp_path / "records.jsonl").write_bytes(
        (tmp_path / "records.jsonl").read_bytes() + b"\n"  # a blank line is skipped
    )
    report = report_of(tmp_path)
    assert dict(report.outcomes)["failed"] == 1
    assert report.clusters == 2
    assert report.duplicate_inventory_lines == 1
    assert report.run_status is None  # no summary.json: the run never finished
    out = io.StringIO()
    render(report, "table", out)
    assert "UNFINISHED" in out.getvalue()


# -- errors ------------------------------------------------------------------------------------


def test_missing_directory_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A path that is not there, or not a directory, is named in the message."""
    with pytest.raises(ConfigError, match=r"nowhere does not exist"):
        build_report(tmp_path / "nowhere", since=None, now=NOW)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"file is not a directory"):
        build_report(tmp_path / "file", since=None, now=NOW)


def test_directory_without_an_export_is_a_config_error(tmp_path: Path) -> None:
    """No records file: says which names it looked for."""
    (tmp_path / "clusters.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"no records\.jsonl \(nor records\.jsonl\.gz"):
        build_report(tmp_path, since=None, now=NOW)


def test_unpublished_run_is_named_as_such(tmp_path: Path) -> None:
    """Only a staging area: the run has not published, and the message says how to finish."""
    (tmp_path / STAGING).mkdir()
    with pytest.raises(ConfigError, match=r"has not published its files.*--resume"):
        build_report(tmp_path, since=None, now=NOW)


def test_two_records_files_are_ambiguous(tmp_path: Path) -> None:
    """records.jsonl beside records.jsonl.gz: refuse rather than guess."""
    write_export(tmp_path, [], [])
    (tmp_path / "records.jsonl.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(ConfigError, match=r"records\.jsonl, records\.jsonl\.gz"):
        build_report(tmp_path, since=None, now=NOW)


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    """A line that is not JSON: the file and its line number."""
    write_export(tmp_path, [rec("a", "success", None, "1")], [])
    with (tmp_path / "records.jsonl").open("ab") as fh:
        fh.write(b'{"cluster_id": "a", trunc\n')
    with pytest.raises(ConfigError, match=r"records\.jsonl line 2: not JSON"):
        build_report(tmp_path, since=None, now=NOW)
    write_export(tmp_path, [rec("a", "success", None, "1"), rec("a", "success", None, 9)], [])
    with pytest.raises(ConfigError, match=r"records\.jsonl line 2: unexpected shape.*to_version"):
        build_report(tmp_path, since=None, now=NOW)


def test_truncated_gzip_is_a_config_error(tmp_path: Path) -> None:
    """A cut-off compressed file is reported, not read as a shorter export."""
    write_export(tmp_path, [], [inv("a", "1")])
    body = gzip.compress(b'{"cluster_id": "a", "outcome": "success"}\n' * 1000)
    (tmp_path / "records.jsonl").unlink()
    (tmp_path / "records.jsonl.gz").write_bytes(body[: len(body) // 2])
    with pytest.raises(ConfigError, match=r"records\.jsonl\.gz"):
        build_report(tmp_path, since=None, now=NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("2w", timedelta(days=14))],
)
def test_parse_since_reads_hours_days_weeks(text: str, expected: timedelta) -> None:
    """The documented units."""
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["", "30", "6m", "1y", "0d", "-3d", "1.5d", "d", "30 days"])
def test_parse_since_refuses_anything_else(text: str) -> None:
    """No unit, minutes-or-months, zero, negatives, fractions: a config error with examples."""
    with pytest.raises(ConfigError, match=r"examples: 12h, 30d, 2w|longer than zero"):
        parse_since(text)


# -- bounded memory ----------------------------------------------------------------------------


def test_100k_cluster_export_builds_in_bounded_memory(tmp_path: Path) -> None:
    """100,000 clusters, 200,000 records, 100,000 failures listed: peak well under 50 MB."""
    clusters = 100_000
    option = orjson.OPT_APPEND_NEWLINE
    with (
        (tmp_path / "records.jsonl").open("wb") as records,
        (tmp_path / "clusters.jsonl").open("wb") as inventory,
    ):
        for n in range(clusters):
            cid = f"{n:08x}-0000-4000-8000-000000000000"
            if n % 2:  # odd clusters succeeded inside the window
                records.write(
                    orjson.dumps(
                        rec(cid, "success", "2025-05-20T00:00:00Z", "9.1.0", item_id=f"{n}-s"),
                        option=option,
                    )
                )
            records.write(
                orjson.dumps(
                    rec(
                        cid,
                        "failed",
                        "2025-05-25T00:00:00Z",
                        "9.2.0",
                        item_id=f"{n}-f",
                        failed_reason="DWS.8020: Upgrade package verification failed.",
                    ),
                    option=option,
                )
            )
            inventory.write(orjson.dumps(inv(cid, "9.0.0") | {"account": "a"}, option=option))
    gc.collect()
    tracemalloc.start()
    try:
        report = build_report(tmp_path, since=timedelta(days=30), now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with report:
        assert report.clusters == clusters
        assert report.records == clusters + clusters // 2
        assert len(report.failed_upgrades) == clusters
        assert len(report.no_success_in_window) == clusters // 2
        assert dict(report.versions) == {"9.0.0": clusters // 2, "9.1.0": clusters // 2}
        # The complete failure list is there, though it never sat in memory whole.
        assert sum(1 for _ in report.failed_upgrades) == clusters
    assert peak < 50 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
