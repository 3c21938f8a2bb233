"""Whole collections against the simulator on a real loopback port, checked against its truth."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.auth import Secret
from collector.config import Config, OffsetMode, PagingConfig, ProjectRef, RetryConfig
from collector.demo import check_against_truth, fleet_config
from collector.run import RunResult, collect
from collector.simulator.faults import ClusterFailure, Faults, Mutation
from collector.simulator.fleet import Fleet
from collector.simulator.server import serve

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryConfig(
    max_attempts=6,
    backoff_base=0.001,
    backoff_cap=0.01,
    retry_after_max=0.05,
    budget_minimum=1000,  # these tests are about correctness, not the budget
    passes=1,
    pass_delay=0.0,
)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def small_fleet(**kw: Any) -> Fleet:
    opts = {"seed": 11, "accounts": 2, "projects": 2, "clusters": 4, "records": 8} | kw
    return Fleet.generate(**opts)


async def run_against(
    fleet: Fleet,
    faults: Faults,
    tmp_path: Path,
    *,
    tweak: Callable[[Config], Config] | None = None,
    concurrency: int = 8,
) -> RunResult:
    async with serve(fleet, faults, host="127.0.0.1", port=0) as url:
        config = fleet_config(
            fleet, url, output_dir=str(tmp_path), concurrency=concurrency, retry=FAST_RETRY
        )
        if tweak is not None:
            config = tweak(config)
        return await collect(config, output_dir=tmp_path)


def multi_page_cluster(fleet: Fleet, at_least: int = 21) -> tuple[str, str]:
    for _account, project, cluster in fleet.iter_clusters():
        if len(fleet.records(project.id, cluster.id)) >= at_least:
            return project.id, cluster.id
    raise AssertionError("fleet has no multi-page cluster")


async def test_default_run_is_exact(tmp_path: Path) -> None:
    """Doc semantics: every record of every cluster, once, matching the simulator's truth."""
    fleet = small_fleet()
    result = await run_against(fleet, Faults(), tmp_path)
    expected, got = check_against_truth(fleet, tmp_path)
    assert got == expected == fleet.total_records
    assert result.exit_code == 0
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["status"] == "ok"
    assert summary["counts"]["records"] == fleet.total_records
    assert summary["counts"]["clusters_ok"] == fleet.total_clusters
    clusters = read_jsonl(tmp_path / "clusters.jsonl")
    assert sorted(c["cluster_id"] for c in clusters) == sorted(
        c.id for _a, _p, c in fleet.iter_clusters()
    )
    assert (tmp_path / "errors.jsonl").read_bytes() == b""
    # No temporary file, staging area or lock is left beside the published ones (the hidden
    # manifest stays: it names the run that owns the directory).
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".collector-run.json",
        "clusters.jsonl",
        "errors.jsonl",
        "records.jsonl",
        "summary.json",
    ]


@pytest.mark.parametrize("offset_mode", ["page", "record"])
@pytest.mark.parametrize("include_count", [True, False])
@pytest.mark.parametrize("page_cap", [None, 4])
async def test_every_paging_variant_is_exact(
    tmp_path: Path, offset_mode: str, include_count: bool, page_cap: int | None
) -> None:
    """Page- or record-offset, with or without count, capped or not: exact and duplicate-free."""
    fleet = small_fleet(records=12)
    faults = Faults()
    faults.offset_mode = offset_mode
    faults.include_count = include_count
    faults.page_cap = page_cap
    result = await run_against(fleet, faults, tmp_path)
    assert result.exit_code == 0
    expected, got = check_against_truth(fleet, tmp_path)
    assert got == expected


@pytest.mark.parametrize("offset_mode", ["page", "record"])
async def test_pinned_offset_mode_is_exact(tmp_path: Path, offset_mode: str) -> None:
    """offset_mode pinned in the config matches a server of that kind."""
    fleet = small_fleet(records=12)
    faults = Faults()
    faults.offset_mode = offset_mode

    def pin(config: Config) -> Config:
        return Config(
            accounts=config.accounts,
            retry=config.retry,
            limits=config.limits,
            paging=PagingConfig(offset_mode=OffsetMode(offset_mode)),
        )

    await run_against(fleet, faults, tmp_path, tweak=pin)
    expected, got = check_against_truth(fleet, tmp_path)
    assert got == expected


@pytest.mark.parametrize("action", ["insert", "remove"])
@pytest.mark.parametrize("include_count", [True, False])
async def test_records_changing_while_paging_are_reread(
    tmp_path: Path, action: str, include_count: bool
) -> None:
    """A record added or removed mid-paging: the cluster is re-read; the output is the final
    truth."""
    fleet = small_fleet(records=12)
    project_id, cluster_id = multi_page_cluster(fleet)
    faults = Faults()
    faults.include_count = include_count
    faults.mutations[cluster_id] = Mutation(after_requests=1, action=action, index=0)
    result = await run_against(fleet, faults, tmp_path)
    assert result.summary["counts"]["clusters_reread"] == 1
    expected, got = check_against_truth(fleet, tmp_path)  # truth after the change
    assert got == expected
    rows = [r for r in read_jsonl(tmp_path / "records.jsonl") if r["cluster_id"] == cluster_id]
    assert [r["item_id"] for r in rows] == [
        r["item_id"] for r in fleet.records(project_id, cluster_id)
    ]


async def test_forbidden_project_fails_alone(tmp_path: Path) -> None:
    """A 403 project is reported; every other cluster is still exact; exit 1."""
    fleet = small_fleet()
    victim = fleet.accounts[0].projects[0]
    faults = Faults()
    faults.forbidden_projects.add(victim.id)
    result = await run_against(fleet, faults, tmp_path)
    assert result.exit_code == 1
    errors = read_jsonl(tmp_path / "errors.jsonl")
    assert [(e["unit"], e["project_id"], e["status"]) for e in errors] == [
        ("project", victim.id, 403)
    ]
    assert errors[0]["attempts"] == 1  # 403 is never retried
    records = read_jsonl(tmp_path / "records.jsonl")
    assert all(r["project_id"] != victim.id for r in records)
    others = sum(
        len(fleet.records(p.id, c.id)) for _a, p, c in fleet.iter_clusters() if p.id != victim.id
    )
    assert len(records) == others


async def test_deleted_cluster_is_gone_not_failed(tmp_path: Path) -> None:
    """A cluster deleted after listing (404) is reported gone; the run still exits 0."""
    fleet = small_fleet()
    _account, project, cluster = next(iter(fleet.iter_clusters()))
    fleet.mark_gone(project.id, cluster.id)
    result = await run_against(fleet, Faults(), tmp_path)
    assert result.exit_code == 0
    assert result.summary["counts"]["clusters_gone"] == 1
    states = {c["cluster_id"]: c["collection"] for c in read_jsonl(tmp_path / "clusters.jsonl")}
    assert states[cluster.id] == "gone"
    assert (tmp_path / "errors.jsonl").read_bytes() == b""
    records = read_jsonl(tmp_path / "records.jsonl")
    assert all(r["cluster_id"] != cluster.id for r in records)


async def test_failing_cluster_contributes_no_partial_history(tmp_path: Path) -> None:
    """A cluster whose later page keeps failing: no records of it, one error line, exit 1."""
    fleet = small_fleet(records=12)
    project_id, cluster_id = multi_page_cluster(fleet)
    faults = Faults()
    # The first page succeeds, every later request fails: a partial history must not leak.
    faults.cluster_failures[cluster_id] = ClusterFailure(status=500, times=None, skip=1)
    result = await run_against(fleet, faults, tmp_path)
    assert result.exit_code == 1
    errors = read_jsonl(tmp_path / "errors.jsonl")
    assert [(e["unit"], e["cluster_id"], e["status"]) for e in errors] == [
        ("cluster", cluster_id, 500)
    ]
    assert errors[0]["request_id"]
    # Set aside after the first pass, tried again in the second: the simulator saw the first
    # page once, then every attempt of both passes, and the error line counts them all.
    assert faults.stats.records_by_cluster[cluster_id] == 1 + 2 * FAST_RETRY.max_attempts
    assert errors[0]["attempts"] == 2 * FAST_RETRY.max_attempts
    records = read_jsonl(tmp_path / "records.jsonl")
    assert all(r["cluster_id"] != cluster_id for r in records)
    assert len(records) == fleet.total_records - len(fleet.records(project_id, cluster_id))


async def test_transient_faults_are_retried_to_an_exact_result(tmp_path: Path) -> None:
    """429/5xx/HTML/truncation/resets at random: retried, nothing lost, nothing repeated."""
    fleet = small_fleet(records=12)
    faults = Faults(seed=3)
    faults.error_rates = {429: 0.05, 500: 0.03, 502: 0.03, 503: 0.05, 504: 0.02}
    faults.reset_rate = 0.03
    faults.truncate_rate = 0.03
    faults.html_rate = 0.03

    def patient(config: Config) -> Config:
        return Config(
            accounts=config.accounts,
            limits=config.limits,
            retry=replace(FAST_RETRY, max_attempts=12),
        )

    result = await run_against(fleet, faults, tmp_path, tweak=patient)
    assert result.exit_code == 0, (tmp_path / "errors.jsonl").read_text()
    assert result.summary["counts"]["retries"] > 0
    expected, got = check_against_truth(fleet, tmp_path)
    assert got == expected


async def test_wrong_secret_key_fails_the_account_without_retry(tmp_path: Path) -> None:
    """A bad signature is a 401 from the gateway: reported once, not retried, others exact."""
    fleet = small_fleet()

    def break_first(config: Config) -> Config:
        bad = replace(
            config.accounts[0],
            credentials=replace(config.accounts[0].credentials, sk=Secret("wrong-secret")),
        )
        return replace(config, accounts=(bad, *config.accounts[1:]))

    result = await run_against(fleet, Faults(), tmp_path, tweak=break_first)
    assert result.exit_code == 1
    errors = read_jsonl(tmp_path / "errors.jsonl")
    assert [(e["unit"], e["account"], e["status"], e["error_code"]) for e in errors] == [
        ("account", fleet.accounts[0].name, 401, "APIG.0301")
    ]
    assert errors[0]["attempts"] == 1
    others = sum(
        len(fleet.records(p.id, c.id))
        for a, p, c in fleet.iter_clusters()
        if a.name != fleet.accounts[0].name
    )
    assert len(read_jsonl(tmp_path / "records.jsonl")) == others


async def test_temporary_credentials_sign_with_security_token(tmp_path: Path) -> None:
    """Accounts with a security token (odd accounts in the simulator) are collected too."""
    fleet = small_fleet(accounts=2)
    assert fleet.accounts[1].security_token
    await run_against(fleet, Faults(), tmp_path)
    accounts = {r["account"] for r in read_jsonl(tmp_path / "records.jsonl")}
    assert fleet.accounts[1].name in accounts


async def test_non_region_projects_are_skipped_with_a_note(tmp_path: Path) -> None:
    """IAM's MOS project has no DWS endpoint: skipped, counted, not failed."""
    fleet = small_fleet()
    result = await run_against(fleet, Faults(), tmp_path)
    assert result.summary["counts"]["projects_skipped"] == len(fleet.accounts)
    assert result.exit_code == 0


async def test_regions_and_explicit_projects_restrict_discovery(tmp_path: Path) -> None:
    """regions: only that region's projects; projects: exactly those, without asking IAM."""
    fleet = small_fleet(projects=3)
    account0 = fleet.accounts[0]
    region = account0.projects[0].region
    explicit = account0.projects[1]

    def restrict(config: Config) -> Config:
        first = replace(config.accounts[0], regions=(region,))
        second = replace(
            config.accounts[1],
            projects=(
                ProjectRef(
                    id=fleet.accounts[1].projects[0].id, region=fleet.accounts[1].projects[0].region
                ),
            ),
        )
        return replace(config, accounts=(first, second))

    await run_against(fleet, Faults(), tmp_path, tweak=restrict)
    seen = {(r["account"], r["project_id"]) for r in read_jsonl(tmp_path / "clusters.jsonl")}
    want = {(account0.name, p.id) for p in account0.projects if p.region == region and p.clusters}
    want |= {(fleet.accounts[1].name, fleet.accounts[1].projects[0].id)}
    assert seen == want
    assert explicit.region != region or (account0.name, explicit.id) in seen
