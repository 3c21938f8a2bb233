"""Fleet-grade scheduling against the simulator on real sockets: throttling, dead regions,
stalls, outages that end, deadlines and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.config import HttpConfig, LimitsConfig, RetryConfig
from collector.demo import check_against_truth, fleet_config
from collector.run import collect
from collector.simulator.faults import Faults
from collector.simulator.fleet import Fleet
from collector.simulator.server import SimulatorThread, serve

pytestmark = pytest.mark.anyio

QUICK = RetryConfig(
    max_attempts=5,
    backoff_base=0.001,
    backoff_cap=0.01,
    retry_after_max=0.05,
    passes=1,
    pass_delay=0.0,
)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def run(fleet: Fleet, faults: Faults, out: Path, **overrides: Any) -> Any:
    deadline = overrides.pop("deadline", None)
    async with serve(fleet, faults) as url:
        config = fleet_config(fleet, url, output_dir=str(out), concurrency=16, retry=QUICK)
        config = replace(config, **overrides)
        return await collect(config, output_dir=out, deadline=deadline)


async def test_adaptive_pacing_keeps_throttling_rare(tmp_path: Path) -> None:
    """A 100 req/s per-key limit we are not told: exact output, few 429s, pace learned."""
    fleet = Fleet.generate(seed=5, accounts=1, projects=1, clusters=60, records=12)
    faults = Faults(rate_limit=100.0)
    result = await run(
        fleet,
        faults,
        tmp_path,
        limits=LimitsConfig(concurrency=32, rate=300.0),  # start well above the limit
    )
    counts = result.summary["counts"]
    check_against_truth(fleet, tmp_path)
    assert result.exit_code == 0
    # Unpaced, a 300/s fan-out against 100/s is refused most of the time; paced, rarely.
    assert counts["throttled"] <= 0.10 * counts["requests"], counts


async def test_dead_region_fails_alone_with_its_name_and_few_retries(tmp_path: Path) -> None:
    """One region answers 503 to everything: others exact; retries there stay within budget."""
    fleet = Fleet.generate(seed=6, accounts=1, projects=3, clusters=15, records=6)
    dead = fleet.accounts[0].projects[0].region
    faults = Faults(region_status={dead: 503})
    retry = replace(QUICK, budget_ratio=0.1, budget_minimum=5, breaker_threshold=10)
    result = await run(fleet, faults, tmp_path, retry=retry)
    assert result.exit_code == 1
    assert dead in result.summary["reason"]
    errors = read_jsonl(tmp_path / "errors.jsonl")
    assert errors
    assert {e["region"] for e in errors} == {dead}
    # Every other region's clusters are exact.
    records = read_jsonl(tmp_path / "records.jsonl")
    for _a, project, cluster in fleet.iter_clusters():
        if project.region != dead:
            got = [r["item_id"] for r in records if r["cluster_id"] == cluster.id]
            assert got == [r["item_id"] for r in fleet.records(project.id, cluster.id)]
    # The dead region saw its project listing attempts and little else: the breaker and the
    # budget kept us from hammering it.
    dead_requests = faults.stats.by_status.get(503, 0)
    assert dead_requests <= 2 * (retry.max_attempts + retry.budget_minimum + 1), faults.stats


async def test_outage_that_ends_is_recovered_in_a_later_pass(tmp_path: Path) -> None:
    """A region down for the first second: its units are set aside, then collected exactly."""
    fleet = Fleet.generate(seed=8, accounts=1, projects=2, clusters=6, records=6)
    down = fleet.accounts[0].projects[0].region
    faults = Faults(down_periods={down: (0.0, 1.0)})
    retry = replace(QUICK, passes=2, pass_delay=0.6)
    result = await run(fleet, faults, tmp_path, retry=retry)
    assert result.exit_code == 0, (tmp_path / "errors.jsonl").read_text()
    check_against_truth(fleet, tmp_path)


async def test_stalled_responses_are_cut_off_by_the_read_timeout(tmp_path: Path) -> None:
    """5% of responses stall for a minute: each is cut at the read timeout; output exact."""
    fleet = Fleet.generate(seed=9, accounts=1, projects=1, clusters=30, records=6)
    faults = Faults(seed=2, stall_rate=0.05, stall_seconds=60.0)
    started = time.monotonic()
    result = await run(
        fleet,
        faults,
        tmp_path,
        http=HttpConfig(connect_timeout=1.0, read_timeout=0.3),
        retry=replace(QUICK, max_attempts=8, budget_minimum=1000),
    )
    assert result.exit_code == 0
    check_against_truth(fleet, tmp_path)
    assert time.monotonic() - started < 20.0  # nothing waited out a 60 s stall


async def test_deadline_publishes_what_completed_and_lists_the_rest(tmp_path: Path) -> None:
    """A deadline shorter than the work: partial summary, whole clusters only, rest listed."""
    fleet = Fleet.generate(seed=10, accounts=1, projects=2, clusters=40, records=12)
    faults = Faults(latency=0.05)
    started = time.monotonic()
    result = await run(
        fleet, faults, tmp_path, deadline=0.6, limits=LimitsConfig(concurrency=4, per_endpoint=2)
    )
    assert time.monotonic() - started < 5.0
    assert result.exit_code == 1
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["status"] == "partial"
    assert "deadline" in summary["reason"]
    counts = summary["counts"]
    assert counts["units_not_collected"] > 0
    # Every cluster in records.jsonl is whole; every cluster is either done or listed undone.
    records = read_jsonl(tmp_path / "records.jsonl")
    done = {c["cluster_id"] for c in read_jsonl(tmp_path / "clusters.jsonl")}
    for _a, project, cluster in fleet.iter_clusters():
        if cluster.id in done:
            got = [r["item_id"] for r in records if r["cluster_id"] == cluster.id]
            assert got == [r["item_id"] for r in fleet.records(project.id, cluster.id)]
    undone = [e for e in read_jsonl(tmp_path / "errors.jsonl") if e["error"] == "NotCollected"]
    assert len(undone) == counts["units_not_collected"]
    listed = {e["cluster_id"] for e in undone if e["unit"] == "cluster"}
    assert not listed & done
    assert listed, "clusters listed but never paged must be named one by one"
    # A project that was listed accounts for each of its clusters: done, or named undone.
    unlisted_projects = {e["project_id"] for e in undone if e["unit"] == "project"}
    for _a, project, cluster in fleet.iter_clusters():
        if project.id not in unlisted_projects:
            assert cluster.id in done | listed


def _write_config(path: Path, fleet: Fleet, url: str, env: dict[str, str]) -> None:
    regions = sorted({p.region for a in fleet.accounts for p in a.projects})
    lines = [f"iam_endpoint: {url}", "endpoints:"]
    lines += [f"  {region}: {url}" for region in regions]
    lines += ["limits: {concurrency: 4, per_endpoint: 2}", "accounts:"]
    for i, account in enumerate(fleet.accounts):
        env[f"AK_{i}"], env[f"SK_{i}"] = account.ak, account.sk
        env[f"TOK_{i}"] = account.security_token or ""
        lines += [
            f"  - name: {account.name}",
            f"    ak: ${{AK_{i}}}",
            f"    sk: ${{SK_{i}}}",
            f"    security_token: ${{TOK_{i}:-}}",
        ]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_cleanly_with_interrupted_summary(
    tmp_path: Path, signum: int, code: int
) -> None:
    """First signal: finish in-flight clusters, publish, status interrupted, exit 130/143."""
    fleet = Fleet.generate(seed=12, accounts=1, projects=2, clusters=40, records=12)
    with SimulatorThread(fleet, Faults(latency=0.05)) as sim:
        env = dict(os.environ)
        cfg = tmp_path / "c.yaml"
        _write_config(cfg, fleet, sim.url, env)
        out = tmp_path / "out"
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "run", "--config", str(cfg), "--output", str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.5)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["status"] == "interrupted"
    assert summary["exit_code"] == code
    records = read_jsonl(out / "records.jsonl")
    done = {c["cluster_id"] for c in read_jsonl(out / "clusters.jsonl")}
    for _a, project, cluster in fleet.iter_clusters():
        if cluster.id in done:
            got = [r["item_id"] for r in records if r["cluster_id"] == cluster.id]
            assert got == [r["item_id"] for r in fleet.records(project.id, cluster.id)]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_second_signal_exits_at_once_leaving_no_partial_files(tmp_path: Path) -> None:
    """Two signals: out now; no output file is half-written (none is published)."""
    fleet = Fleet.generate(seed=12, accounts=1, projects=2, clusters=40, records=12)
    with SimulatorThread(fleet, Faults(latency=0.2)) as sim:
        env = dict(os.environ)
        cfg = tmp_path / "c.yaml"
        _write_config(cfg, fleet, sim.url, env)
        out = tmp_path / "out"
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "run", "--config", str(cfg), "--output", str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert time.monotonic() - started < 2.0
    assert proc.returncode == 143
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".tmp")]
    assert "summary.json" not in names
