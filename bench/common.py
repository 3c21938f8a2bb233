"""Shared plumbing for the benchmarks: a simulator in its own process, configs, ground truth.

The simulator runs as ``collector simulate`` in a separate process so that the collector being
measured has a core of its own; the bench regenerates the same fleet from the same seed in
process to know the credentials and the ground truth.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from collector.simulator.fleet import Fleet


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class FleetSpec:
    seed: int = 7
    accounts: int = 1
    projects: int = 1
    clusters: int = 100
    records: int = 10
    fixed_records: bool = True

    def generate(self) -> Fleet:
        return Fleet.generate(
            seed=self.seed,
            accounts=self.accounts,
            projects=self.projects,
            clusters=self.clusters,
            records=self.records,
            fixed_records=self.fixed_records,
        )

    def args(self) -> list[str]:
        out = [
            "--seed",
            str(self.seed),
            "--accounts",
            str(self.accounts),
            "--projects",
            str(self.projects),
            "--clusters",
            str(self.clusters),
            "--records",
            str(self.records),
        ]
        return [*out, "--fixed-records"] if self.fixed_records else out


@contextlib.contextmanager
def simulator(spec: FleetSpec, *fault_args: str) -> Iterator[str]:
    """Run ``collector simulate`` in its own process; yield its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "collector", "simulate", "--port", str(port), *spec.args()]
    proc = subprocess.Popen(
        [*cmd, *fault_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Huawei Cloud simulator listening on http://..."
        if "listening on" not in line:
            raise RuntimeError(
                f"simulator did not start: {line}{proc.stderr.read() if proc.stderr else ''}"
            )
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def write_config(path: Path, fleet: Fleet, url: str, extra: str = "") -> dict[str, str]:
    """A config for ``fleet`` at ``url``; returns the environment holding its secrets."""
    env = dict(os.environ)
    regions = sorted({p.region for a in fleet.accounts for p in a.projects})
    lines = [f"iam_endpoint: {url}", "endpoints:"]
    lines += [f"  {region}: {url}" for region in regions]
    lines.append("accounts:")
    for i, account in enumerate(fleet.accounts):
        env[f"BENCH_AK_{i}"], env[f"BENCH_SK_{i}"] = account.ak, account.sk
        env[f"BENCH_TOKEN_{i}"] = account.security_token or ""
        lines += [
            f"  - name: {account.name}",
            f"    ak: ${{BENCH_AK_{i}}}",
            f"    sk: ${{BENCH_SK_{i}}}",
            f"    security_token: ${{BENCH_TOKEN_{i}:-}}",
        ]
    path.write_text("\n".join(lines) + "\n" + extra)
    return env


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    wall_s: float
    summary: dict[str, Any]
    out: Path
    rss_kb: int


def run_collector(config: Path, out: Path, env: dict[str, str], *args: str) -> RunOutcome:
    """``collector run`` as a child process; wall time, its summary and its peak RSS."""
    started = time.monotonic()
    log = (out.parent / f"{out.name}.log").open("wb")  # a pipe nobody reads would fill and block
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collector",
            "run",
            "--config",
            str(config),
            "--output",
            str(out),
            "--log-level",
            "warning",
            *args,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    log.close()
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    summary_path = out / "summary.json"
    summary = orjson.loads(summary_path.read_bytes()) if summary_path.exists() else {}
    return RunOutcome(proc.returncode, wall, summary, out, usage.ru_maxrss)


def exactness(
    fleet: Fleet, out: Path, *, skip_regions: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Lost, duplicated and unexpected records against the fleet's ground truth."""
    seen: dict[str, int] = {}
    with (out / "records.jsonl").open("rb") as fh:
        for line in fh:
            item = orjson.loads(line)["item_id"]
            seen[item] = seen.get(item, 0) + 1
    truth = {
        r["item_id"]
        for _a, p, c in fleet.iter_clusters()
        if p.region not in skip_regions
        for r in fleet.records(p.id, c.id)
    }
    return {
        "expected": len(truth),
        "lost": len(truth - seen.keys()),
        "duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "unexpected": len(seen.keys() - truth),
    }
