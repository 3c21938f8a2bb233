"""``collector demo``: a real collection against the built-in simulator, no cloud account needed.

It runs the production code path (config → discovery → paging → sinks) against a simulated fleet
on a loopback port, then checks the export against the simulator's ground truth. This module
and ``simulate`` are the only runtime users of the simulator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from collector.auth import Credentials, Secret
from collector.config import AccountConfig, Config, LimitsConfig, OutputConfig, RetryConfig
from collector.run import RunResult, collect
from collector.simulator.faults import Faults
from collector.simulator.fleet import Fleet
from collector.simulator.server import serve


def fleet_config(
    fleet: Fleet,
    url: str,
    *,
    output_dir: str = "./exports",
    concurrency: int = 32,
    retry: RetryConfig | None = None,
) -> Config:
    """A config that points every account of ``fleet`` at the simulator at ``url``."""
    regions = sorted({project.region for account in fleet.accounts for project in account.projects})
    endpoints = dict.fromkeys(regions, url)
    accounts = tuple(
        AccountConfig(
            name=account.name,
            credentials=Credentials(
                ak=account.ak,
                sk=Secret(account.sk),
                security_token=Secret(account.security_token) if account.security_token else None,
            ),
            iam_endpoint=url,
            endpoints=endpoints,
        )
        for account in fleet.accounts
    )
    return Config(
        accounts=accounts,
        limits=LimitsConfig(concurrency=concurrency),
        retry=retry or RetryConfig(backoff_base=0.05, backoff_cap=1.0),
        output=OutputConfig(dir=output_dir),
    )


def check_against_truth(fleet: Fleet, output_dir: Path) -> tuple[int, int]:
    """(records expected, records exported that match); raises AssertionError on a mismatch."""
    exported: dict[tuple[str, str], list[str]] = {}
    with (output_dir / "records.jsonl").open("rb") as fh:
        for line in fh:
            row: dict[str, Any] = orjson.loads(line)
            key = (row["project_id"], row["cluster_id"])
            exported.setdefault(key, []).append(row["item_id"])
    expected = 0
    for _account, project, cluster in fleet.iter_clusters():
        truth = [r["item_id"] for r in fleet.records(project.id, cluster.id)]
        expected += len(truth)
        got = exported.get((project.id, cluster.id), [])
        if got != truth:
            raise AssertionError(f"cluster {cluster.id}: exported {len(got)} of {len(truth)}")
    total = sum(len(v) for v in exported.values())
    if total != expected:
        raise AssertionError(f"exported {total} records, simulator holds {expected}")
    return expected, total


async def run_demo(*, output_dir: Path, concurrency: int = 32) -> tuple[RunResult, Fleet]:
    fleet = Fleet.generate(seed=7, accounts=3, projects=3, clusters=8, records=6)
    async with serve(fleet, Faults(), host="127.0.0.1", port=0) as url:
        config = fleet_config(fleet, url, output_dir=str(output_dir), concurrency=concurrency)
        result = await collect(config, output_dir=output_dir)
    return result, fleet
