"""Durable exports with real processes and real files: resume after SIGKILL, dated directories,
refusals, the lock, compression, shards and the delta, all checked against the simulator."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from collector.compression import iter_lines
from collector.simulator.faults import Faults
from collector.simulator.fleet import Fleet
from collector.simulator.server import SimulatorThread
from tests.conftest import CollectorCli


def rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in iter_lines(path)]


def truth_ids(fleet: Fleet) -> Counter[str]:
    return Counter(
        r["item_id"] for _a, p, c in fleet.iter_clusters() for r in fleet.records(p.id, c.id)
    )


def exported_ids(out: Path, name: str = "records.jsonl") -> Counter[str]:
    return Counter(r["item_id"] for r in rows(out / name))


@pytest.mark.parametrize(
    ("compression", "name"), [("gzip", "records.jsonl.gz"), ("zstd", "records.jsonl.zst")]
)
def test_compressed_exports_hold_exactly_the_fleet(
    cli: CollectorCli, tmp_path: Path, compression: str, name: str
) -> None:
    """gzip and zstd outputs decompress (independently of our reader) to the exact truth."""
    fleet = Fleet.generate(seed=31, accounts=1, projects=2, clusters=6, records=8)
    with SimulatorThread(fleet, Faults()) as sim:
        cfg = cli.config(
            tmp_path / "c.yaml", fleet, sim.url, extra={"output": {"compression": compression}}
        )
        result = cli.run(
            "run", "--config", cfg, "--output", tmp_path / "out", cwd=tmp_path, env=cli.env(fleet)
        )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    raw = (out / name).read_bytes()
    if compression == "gzip":
        text = gzip.decompress(raw)
    else:
        text = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    ids = Counter(orjson.loads(line)["item_id"] for line in text.splitlines())
    assert ids == truth_ids(fleet)
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["files"]["records"] == name


def _start_run(cfg: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collector",
            "run",
            "--config",
            str(cfg),
            "--output",
            str(out),
            *extra,
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _journaled(out: Path) -> int:
    journal = out / ".collector-staging" / "journal.jsonl"
    return journal.read_bytes().count(b"\n") if journal.exists() else 0


@pytest.mark.parametrize("kill_after_clusters", [0, 5, 20, 45])
def test_resume_after_sigkill_finishes_the_same_run_exactly(
    cli: CollectorCli, tmp_path: Path, kill_after_clusters: int
) -> None:
    """SIGKILL at several points, then --resume: exact output, journaled clusters not refetched."""
    fleet = Fleet.generate(seed=32, accounts=1, projects=2, clusters=30, records=12)
    faults = Faults(latency=0.02)
    out = tmp_path / "out"
    env = cli.env(fleet)
    with SimulatorThread(fleet, faults) as sim:
        cfg = cli.config(
            tmp_path / "c.yaml",
            fleet,
            sim.url,
            extra={"limits": {"concurrency": 4, "per_endpoint": 2}},
        )
        proc = _start_run(cfg, out, env)
        deadline = time.monotonic() + 30
        # Kill point 0: right after the run claimed its directory (lock and manifest written).
        while not (out / ".collector-run.json").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        while _journaled(out) < kill_after_clusters and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert not (out / "summary.json").exists()  # killed: nothing claims to be complete
        done_before = _journaled(out)
        path = out / ".collector-staging" / "journal.jsonl"
        journal = path.read_bytes().splitlines() if path.exists() else []
        finished = {orjson.loads(line)["c"] for line in journal if line.endswith(b"}")}
        # Without --resume the directory is refused, naming the way out.
        refused = cli.run("run", "--config", cfg, "--output", out, cwd=tmp_path, env=env)
        assert refused.returncode == 2
        assert "--resume" in refused.stderr
        faults.reset_stats()
        resumed = cli.run(
            "run", "--config", cfg, "--output", out, "--resume", cwd=tmp_path, env=env
        )
    assert resumed.returncode == 0, resumed.stderr
    assert exported_ids(out) == truth_ids(fleet)  # nothing lost, nothing twice
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["resumed"] is True
    assert summary["resumed_clusters"] >= done_before - 1  # the last line may have been cut
    # Clusters the journal held were not fetched again.
    assert not finished & set(faults.stats.records_by_cluster)
    clusters = rows(out / "clusters.jsonl")
    assert Counter(c["cluster_id"] for c in clusters) == Counter(
        c.id for _a, _p, c in fleet.iter_clusters()
    )


def test_a_second_run_on_a_finished_directory_refuses_unless_overwrite(
    cli: CollectorCli, tmp_path: Path
) -> None:
    """Same day, same dir: refused with a clear message; --overwrite replaces it cleanly."""
    fleet = Fleet.generate(seed=33, accounts=1, projects=1, clusters=4, records=4)
    with SimulatorThread(fleet, Faults()) as sim:
        cfg = cli.config(
            tmp_path / "c.yaml",
            fleet,
            sim.url,
            extra={"output": {"dir": str(tmp_path / "x-{date}")}},
        )
        first = cli.run("run", "--config", cfg, cwd=tmp_path, env=cli.env(fleet))
        assert first.returncode == 0, first.stderr
        dated = [p for p in tmp_path.iterdir() if p.name.startswith("x-")]
        assert len(dated) == 1
        assert dated[0].name == "x-" + time.strftime("%Y-%m-%d", time.gmtime())
        before = (dated[0] / "summary.json").read_bytes()
        again = cli.run("run", "--config", cfg, cwd=tmp_path, env=cli.env(fleet))
        assert again.returncode == 2
        assert "--overwrite" in again.stderr
        cli.assert_no_traceback(again)
        assert (dated[0] / "summary.json").read_bytes() == before  # untouched
        over = cli.run("run", "--config", cfg, "--overwrite", cwd=tmp_path, env=cli.env(fleet))
    assert over.returncode == 0, over.stderr
    assert (
        orjson.loads((dated[0] / "summary.json").read_bytes())["run_id"]
        != orjson.loads(before)["run_id"]
    )
    assert exported_ids(dated[0]) == truth_ids(fleet)


def test_two_runs_on_one_directory_the_second_is_refused_naming_the_holder(
    cli: CollectorCli, tmp_path: Path
) -> None:
    """The second run exits non-zero at once naming pid and host; the first is unaffected."""
    fleet = Fleet.generate(seed=34, accounts=1, projects=1, clusters=30, records=8)
    out = tmp_path / "out"
    with SimulatorThread(fleet, Faults(latency=0.05)) as sim:
        cfg = cli.config(tmp_path / "c.yaml", fleet, sim.url, extra={"limits": {"concurrency": 2}})
        first = _start_run(cfg, out, cli.env(fleet))
        deadline = time.monotonic() + 20
        while not (out / ".collector.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        second = cli.run("run", "--config", cfg, "--output", out, cwd=tmp_path, env=cli.env(fleet))
        assert time.monotonic() - started < 10
        assert second.returncode != 0
        assert str(first.pid) in second.stderr
        assert os.uname().nodename in second.stderr
        first.wait(timeout=60)
    assert first.returncode == 0
    assert exported_ids(out) == truth_ids(fleet)


def test_shards_partition_the_fleet_exactly(cli: CollectorCli, tmp_path: Path) -> None:
    """N shard processes against one simulator: their union is the fleet, with no overlap."""
    fleet = Fleet.generate(seed=35, accounts=2, projects=2, clusters=10, records=6)
    n = 3
    with SimulatorThread(fleet, Faults()) as sim:
        cfg = cli.config(tmp_path / "c.yaml", fleet, sim.url)
        procs = [
            _start_run(
                cfg,
                tmp_path / f"shard-{k}",
                {**cli.env(fleet), "JOB_COMPLETION_INDEX": "0"},
                "--shard",
                "auto",
                "--shards",
                str(n),
            )
            if k == 0
            else _start_run(cfg, tmp_path / f"shard-{k}", cli.env(fleet), "--shard", f"{k}/{n}")
            for k in range(n)
        ]
        # Shard 0 reads its index the way a Kubernetes Indexed Job gives it.
        for proc in procs:
            proc.wait(timeout=60)
    assert [p.returncode for p in procs] == [0] * n
    union: Counter[str] = Counter()
    seen_clusters: Counter[str] = Counter()
    for k in range(n):
        out = tmp_path / f"shard-{k}"
        union += exported_ids(out)
        seen_clusters += Counter(c["cluster_id"] for c in rows(out / "clusters.jsonl"))
        assert orjson.loads((out / "summary.json").read_bytes())["shard"] == {
            "index": k,
            "count": n,
        }
    assert union == truth_ids(fleet)
    assert all(v == 1 for v in seen_clusters.values())


def test_since_run_writes_new_and_changed_records(cli: CollectorCli, tmp_path: Path) -> None:
    """A record added and one whose status changed since the earlier run are the delta."""
    fleet = Fleet.generate(seed=36, accounts=1, projects=1, clusters=5, records=5)
    with SimulatorThread(fleet, Faults()) as sim:
        cfg = cli.config(tmp_path / "c.yaml", fleet, sim.url)
        first = cli.run(
            "run", "--config", cfg, "--output", tmp_path / "day1", cwd=tmp_path, env=cli.env(fleet)
        )
        assert first.returncode == 0, first.stderr
        _a, project, cluster = next(
            (a, p, c) for a, p, c in fleet.iter_clusters() if fleet.records(p.id, c.id)
        )
        added = fleet.insert_record(project.id, cluster.id)
        changed = fleet.history(project.id, cluster.id)[1]
        changed["status"] = "UpdateFailed"
        second = cli.run(
            "run",
            "--config",
            cfg,
            "--output",
            tmp_path / "day2",
            "--since-run",
            tmp_path / "day1",
            cwd=tmp_path,
            env=cli.env(fleet),
        )
    assert second.returncode == 0, second.stderr
    delta = rows(tmp_path / "day2" / "changes.jsonl")
    assert sorted((d["change"], d["record"]["item_id"]) for d in delta) == sorted(
        [("record_new", added["item_id"]), ("record_changed", changed["item_id"])]
    )


def test_failure_while_publishing_leaves_no_partial_file_and_no_summary(
    cli: CollectorCli, tmp_path: Path
) -> None:
    """An output that cannot be put in place: exit 3, a clear message, no summary.json, no
    temporary file; what was published is whole; the staging area stays for --resume."""
    out = tmp_path / "out"
    (out / "clusters.jsonl").mkdir(parents=True)  # a directory where a file must go
    fleet = Fleet.generate(seed=37, accounts=1, projects=1, clusters=3, records=3)
    with SimulatorThread(fleet, Faults()) as sim:
        cfg = cli.config(tmp_path / "c.yaml", fleet, sim.url)
        result = cli.run("run", "--config", cfg, "--output", out, cwd=tmp_path, env=cli.env(fleet))
    assert result.returncode == 3
    cli.assert_no_traceback(result)
    assert "clusters.jsonl" in result.stderr
    names = {p.name for p in out.iterdir()}
    assert "summary.json" not in names
    assert not [n for n in names if n.endswith(".tmp")]
    assert exported_ids(out) == truth_ids(fleet)  # records.jsonl went first and is whole
