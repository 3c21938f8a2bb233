"""Whole runs against a simulator that lies or breaks: the run ends, on time, writes only its
output directory, never requests a bad identifier, and every other cluster is still exact."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.config import HttpConfig, PagingConfig, RetryConfig
from collector.demo import fleet_config
from collector.manifest import MANIFEST_NAME
from collector.run import RunResult, collect
from collector.simulator.faults import (
    HOSTILE_LISTINGS,
    Faults,
    HostileIam,
    HostileListing,
    HostileRecords,
)
from collector.simulator.fleet import Fleet, SimAccount, SimCluster, SimProject
from collector.simulator.server import serve

pytestmark = pytest.mark.anyio

RETRY = RetryConfig(max_attempts=2, backoff_base=0.001, backoff_cap=0.01, passes=0, pass_delay=0)
HTTP = HttpConfig(connect_timeout=1, read_timeout=0.5, request_timeout=2, max_body_bytes=1_000_000)
PAGING = PagingConfig(max_pages=30)
#: Every run here must end well inside this; the timeouts, not the deadline, end hostile requests.
DEADLINE = 15.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    # 2 accounts x 2 projects x 3 clusters; up to ~20 records each, so several pages.
    return Fleet.generate(seed=23, accounts=2, projects=2, clusters=3, records=12)


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    result: RunResult
    elapsed: float
    records: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    faults: Faults

    def exported(self, cluster_id: str) -> list[dict[str, Any]]:
        return [row for row in self.records if row["cluster_id"] == cluster_id]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``root``: (is a directory, size, mtime)."""
    tree = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        tree[str(path.relative_to(root))] = (path.is_dir(), st.st_size, st.st_mtime_ns)
    return tree


def real_cluster_ids(fleet: Fleet) -> set[str]:
    return {cluster.id for _account, _project, cluster in fleet.iter_clusters()}


def first_cluster(fleet: Fleet, *, min_records: int = 1) -> tuple[SimProject, SimCluster]:
    for _account, project, cluster in fleet.iter_clusters():
        if len(fleet.records(project.id, cluster.id)) >= min_records:
            return project, cluster
    raise AssertionError("the fleet has no cluster that large")


async def run_against(
    fleet: Fleet,
    faults: Faults,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    http: HttpConfig = HTTP,
    deadline: float = DEADLINE,
) -> Run:
    """Collect the whole fleet; assert it ended in time and wrote nothing but its output dir."""
    monkeypatch.chdir(tmp_path)  # a relative write anywhere would land in the snapshot
    out = tmp_path / "work" / "out"
    out.parent.mkdir(parents=True)
    before = snapshot(tmp_path)
    started = time.monotonic()
    async with serve(fleet, faults) as url:
        config = fleet_config(fleet, url, output_dir=str(out), concurrency=8, retry=RETRY)
        config = dataclasses.replace(config, http=http, paging=PAGING)
        result = await collect(config, output_dir=out, deadline=deadline)
    elapsed = time.monotonic() - started
    after = snapshot(tmp_path)
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    # "work" itself changes (out appears in it); nothing else outside out may.
    outside = {p for p in changed if p != "work" and not p.startswith(str(Path("work", "out")))}
    assert outside == set(), f"written outside the output directory: {sorted(outside)}"
    # A run a hostile server could not stop still ends; shutting the simulator down adds a little.
    assert elapsed < deadline + 3, f"the run took {elapsed:.1f}s"
    stats = faults.stats
    assert set(stats.records_by_cluster) <= real_cluster_ids(fleet), stats.records_by_cluster
    assert stats.by_kind.get("other", 0) == 0, "a request went to a path that is no API"
    # A finished run leaves its published files and manifest, nothing named after what it read.
    published = {"records.jsonl", "clusters.jsonl", "errors.jsonl", "summary.json", MANIFEST_NAME}
    assert {path.name for path in out.iterdir()} <= published
    return Run(
        result=result,
        elapsed=elapsed,
        records=read_jsonl(out / "records.jsonl"),
        errors=read_jsonl(out / "errors.jsonl"),
        faults=faults,
    )


def assert_exact(
    run: Run, fleet: Fleet, *, skip_clusters: Iterable[str] = (), skip_projects: Iterable[str] = ()
) -> None:
    """Every cluster not skipped was exported exactly: the truth's item_ids, in order."""
    skipped_clusters, skipped_projects = set(skip_clusters), set(skip_projects)
    checked = 0
    for _account, project, cluster in fleet.iter_clusters():
        if cluster.id in skipped_clusters or project.id in skipped_projects:
            continue
        truth = [record["item_id"] for record in fleet.records(project.id, cluster.id)]
        got = [row["item_id"] for row in run.exported(cluster.id)]
        assert got == truth, f"cluster {cluster.id}: exported {len(got)} of {len(truth)}"
        checked += 1
    assert checked > 0


# -- records responses --------------------------------------------------------------------------

FAILING: dict[HostileRecords, tuple[str, str]] = {
    "records_not_list": ("BadResponseError", "'records' is a dict"),
    "record_not_object": ("BadResponseError", "not an object"),
    "count_string": ("BadResponseError", "'count'"),
    "non_utf8": ("BadResponseError", "JSON"),
    "deep_nesting": ("BadResponseError", "JSON"),
    "oversized_page": ("BadResponseError", "more than the limit"),
    "endless": ("PaginationError", "gave up after 30 pages"),
    "huge_body": ("BadResponseError", "1000000-byte cap"),
    "never_answer": ("RequestTimeout", "timed out"),
    "trickle": ("RequestTimeout", "timed out"),
}


@pytest.mark.parametrize("behaviour", sorted(FAILING))
async def test_hostile_records_fail_only_their_cluster(
    behaviour: HostileRecords, fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster whose records lie or break fails alone, clearly, in time; the rest are exact."""
    project, cluster = first_cluster(fleet, min_records=2)
    # A trickle faster than read_timeout: only the whole-request timeout can stop it.
    faults = Faults(hostile={cluster.id: behaviour}, hostile_seconds=20, trickle_interval=0.2)
    run = await run_against(fleet, faults, tmp_path, monkeypatch)

    assert run.result.exit_code == 1
    assert run.result.summary["status"] == "partial"
    assert "deadline" not in run.result.summary["reason"], "the timeouts should have ended it"
    error, words = FAILING[behaviour]
    assert [(e["unit"], e["project_id"], e["cluster_id"], e["error"]) for e in run.errors] == [
        ("cluster", project.id, cluster.id, error)
    ]
    assert words in run.errors[0]["message"]
    assert run.exported(cluster.id) == []
    assert_exact(run, fleet, skip_clusters=[cluster.id])


async def test_endless_pagination_stops_at_the_page_bound(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full pages forever with a growing count cost at most max_pages requests per pass."""
    _project, cluster = first_cluster(fleet)
    faults = Faults(hostile={cluster.id: "endless"})
    run = await run_against(fleet, faults, tmp_path, monkeypatch)
    assert run.result.exit_code == 1
    bound = PAGING.max_pages * (PAGING.max_rereads + 1)
    assert PAGING.max_pages <= faults.stats.records_by_cluster[cluster.id] <= bound


async def test_missing_fields_are_kept_as_nulls(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records that carry only item_id are exported, every other field null."""
    project, cluster = first_cluster(fleet, min_records=2)
    run = await run_against(
        fleet, Faults(hostile={cluster.id: "missing_fields"}), tmp_path, monkeypatch
    )
    assert run.result.exit_code == 0, run.errors
    assert run.errors == []
    assert_exact(run, fleet)
    rows = run.exported(cluster.id)
    assert rows
    for row, truth in zip(rows, fleet.records(project.id, cluster.id), strict=True):
        assert row["raw"] == {"item_id": truth["item_id"]}
        for field in (
            "job_id",
            "record_type",
            "status",
            "from_version",
            "to_version",
            "start_time",
            "end_time",
            "duration_s",
            "failed_reason",
        ):
            assert row[field] is None, field
        assert row["outcome"] == "unknown"


async def test_unknown_fields_are_kept_in_raw(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records with fields the doc does not name are exported, the extras kept in raw."""
    project, cluster = first_cluster(fleet, min_records=2)
    run = await run_against(
        fleet, Faults(hostile={cluster.id: "unknown_fields"}), tmp_path, monkeypatch
    )
    assert run.result.exit_code == 0, run.errors
    assert_exact(run, fleet)
    rows = run.exported(cluster.id)
    for row, truth in zip(rows, fleet.records(project.id, cluster.id), strict=True):
        assert row["raw"] == {**truth, "x_hostile": {"nested": [1, 2]}}
        assert (row["status"], row["job_id"]) == (truth["status"], truth["job_id"])
        assert "x_hostile" not in row


async def test_a_trickle_is_cut_off_by_the_run_deadline(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With generous timeouts, a trickling server still cannot keep the run past its deadline."""
    _project, cluster = first_cluster(fleet)
    faults = Faults(hostile={cluster.id: "trickle"}, hostile_seconds=30, trickle_interval=0.2)
    lax = dataclasses.replace(HTTP, request_timeout=60)
    run = await run_against(fleet, faults, tmp_path, monkeypatch, http=lax, deadline=3)
    assert run.result.exit_code == 1
    assert "deadline reached" in run.result.summary["reason"]
    assert [(e["unit"], e["cluster_id"]) for e in run.errors] == [("cluster", cluster.id)]
    assert "deadline reached" in run.errors[0]["message"]
    assert_exact(run, fleet, skip_clusters=[cluster.id])


# -- cluster lists ------------------------------------------------------------------------------

BAD_ENTRIES = sorted(HOSTILE_LISTINGS - {"clusters_not_list", "bad_ids"})


@pytest.mark.parametrize("behaviour", [*BAD_ENTRIES, "bad_ids"])
async def test_bad_cluster_ids_are_reported_and_never_requested(
    behaviour: HostileListing, fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listed cluster id that is no UUID is an error line; it is never requested nor a path."""
    project, _cluster = first_cluster(fleet)
    faults = Faults(hostile_projects={project.id: behaviour})
    run = await run_against(fleet, faults, tmp_path, monkeypatch)
    assert run.result.exit_code == 1
    expected = len(BAD_ENTRIES) if behaviour == "bad_ids" else 1
    assert len(run.errors) == expected
    for line in run.errors:
        assert (line["unit"], line["project_id"], line["cluster_id"]) == (
            "cluster",
            project.id,
            None,
        )
        assert line["error"] == "BadResponseError"
        assert "not requested" in line["message"]
    # The same project's real clusters are still collected, and exactly.
    assert_exact(run, fleet)
    assert {row["cluster_id"] for row in run.records} <= real_cluster_ids(fleet)


async def test_a_cluster_list_of_the_wrong_shape_fails_its_project(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'clusters' that is not an array fails that project, clearly; the others are exact."""
    project, _cluster = first_cluster(fleet)
    faults = Faults(hostile_projects={project.id: "clusters_not_list"})
    run = await run_against(fleet, faults, tmp_path, monkeypatch)
    assert run.result.exit_code == 1
    assert [(e["unit"], e["project_id"], e["error"]) for e in run.errors] == [
        ("project", project.id, "BadResponseError")
    ]
    assert "not an array" in run.errors[0]["message"]
    assert_exact(run, fleet, skip_projects=[project.id])


# -- IAM project lists --------------------------------------------------------------------------


def account_of(fleet: Fleet, index: int) -> SimAccount:
    return fleet.accounts[index]


@pytest.mark.parametrize("behaviour", ["bad_project_id", "project_not_object", "projects_not_list"])
async def test_a_bad_iam_project_list_is_reported_and_never_requested(
    behaviour: HostileIam, fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project id that is not 32 hex (or a list of the wrong shape) is reported, not used."""
    hostile = account_of(fleet, 0)
    run = await run_against(
        fleet, Faults(hostile_iam={hostile.name: behaviour}), tmp_path, monkeypatch
    )
    assert run.result.exit_code == 1
    mine = [e for e in run.errors if e["account"] == hostile.name]
    assert mine
    assert all(e["error"] == "BadResponseError" for e in mine), mine
    if behaviour == "bad_project_id":
        assert any("'../x'" in e["message"] for e in mine), mine
    # No request ever named "../x" (it would have reached no API: checked in run_against).
    assert all(e["project_id"] != "../x" for e in run.errors)
    other = {project.id for project in hostile.projects}
    assert_exact(run, fleet, skip_projects=other)


async def test_a_bad_iam_project_id_spares_the_accounts_other_projects(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One malformed project id in IAM's list is refused alone, as a bad cluster id is: the
    account's real projects are still collected, exactly."""
    hostile = account_of(fleet, 0)
    faults = Faults(hostile_iam={hostile.name: "bad_project_id"})
    run = await run_against(fleet, faults, tmp_path, monkeypatch)
    assert run.result.exit_code == 1
    assert [(e["account"], e["error"]) for e in run.errors] == [(hostile.name, "BadResponseError")]
    assert "'../x'" in run.errors[0]["message"]
    assert_exact(run, fleet)
