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


# -- side-by-side comparison helpers (bench/compare.py) ------------------------------------------


@dataclass(frozen=True)
class SimProcess:
    """A running ``collector simulate``: its URL, and its pid so its CPU time can be read."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """utime + stime so far, from /proc (Linux): how busy the server was during a run."""
        return proc_cpu_seconds(self.pid)


def proc_cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def simulator_process(spec: FleetSpec, *fault_args: str, log: Path) -> Iterator[SimProcess]:
    """Like :func:`simulator`, but yields the pid too; stderr goes to ``log``."""
    port = free_port()
    cmd = [sys.executable, "-m", "collector", "simulate", "--port", str(port), *spec.args()]
    with log.open("wb") as err:
        proc = subprocess.Popen([*cmd, *fault_args], stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Huawei Cloud simulator listening on http://..."
        if "listening on" not in line:
            raise RuntimeError(f"simulator did not start: {line}{log.read_text()}")
        # The rest of the banner (credentials) is a few lines: it fits in the pipe's buffer.
        yield SimProcess(url=line.rsplit(" ", 1)[-1].strip(), pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class ChildOutcome:
    """One measured child process: wall clock, CPU (user + system) and peak RSS via wait4."""

    exit_code: int
    wall_s: float
    cpu_s: float
    rss_kb: int
    stdout: bytes
    #: CPU seconds the whole machine was busy meanwhile (this child, the server, and others).
    machine_busy_s: float


def peak_rss_kb(pid: int | str = "self") -> int:
    """VmHWM of a live process (its own address space's high-water mark), in kB; 0 if gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_child(cmd: list[str], *, env: dict[str, str] | None, log: Path) -> ChildOutcome:
    """Run ``cmd`` to completion; its stdout is kept, its stderr goes to ``log``.

    Peak RSS is the child's VmHWM, polled every 20 ms while it runs, not ``wait4``'s
    ``ru_maxrss``: Linux carries the high-water mark of the address space a child had before
    ``exec`` into ``ru_maxrss``, and subprocess forks (vforks) from this process, so
    ``ru_maxrss`` is never less than this bench's own RSS (about 100 MB with a fleet loaded).
    """
    out_path = log.with_suffix(".stdout")
    peak = 0
    with log.open("wb") as err, out_path.open("wb") as out:
        busy, started = machine_busy_seconds(), time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, peak_rss_kb(proc.pid))
            time.sleep(0.02)
        wall, busy = time.monotonic() - started, machine_busy_seconds() - busy
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildOutcome(
        exit_code=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        rss_kb=peak,
        stdout=out_path.read_bytes(),
        machine_busy_s=busy,
    )


def fleet_targets(fleet: Fleet) -> list[dict[str, str | None]]:
    """Every (account, region project) with its credentials, for clients that skip IAM."""
    return [
        {
            "account": account.name,
            "ak": account.ak,
            "sk": account.sk,
            "security_token": account.security_token,
            "project_id": project.id,
            "region": project.region,
        }
        for account in fleet.accounts
        for project in account.projects
    ]


def machine_info() -> dict[str, str]:
    """nproc, CPU model, kernel, Python and the versions of what is measured."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    revision = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    info = {
        "collector revision": revision or "unknown",
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }
    for dist in (
        "collector",
        "aiohttp",
        "anyio",
        "orjson",
        "huaweicloudsdkcore",
        "huaweicloudsdkdws",
        "requests",
        "urllib3",
    ):
        try:
            info[dist] = version(dist)
        except PackageNotFoundError:
            info[dist] = "not installed"
    return info


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle (all cores, every process), from /proc."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(*, max_wait: float, threshold: float = 0.2, window: float = 1.0) -> float:
    """Wait until other processes use less than ``threshold`` of one core; seconds waited.

    Benchmarks on a shared machine are only as good as its quiet moments: each measured run
    starts in one (or after ``max_wait`` seconds, whatever the load), and records how much CPU
    others used while it ran.
    """
    started = time.monotonic()
    while max_wait > 0:
        before = machine_busy_seconds()
        time.sleep(window)
        if (machine_busy_seconds() - before) / window < threshold:
            return time.monotonic() - started
        if time.monotonic() - started >= max_wait:
            break
    return time.monotonic() - started
