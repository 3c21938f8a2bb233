"""Side by side, on one simulated server: the collector, the SDK in a thread pool, a bare floor.

    python bench/compare.py             # the full run (about 6 minutes); rewrites bench/RESULTS.md
    python bench/compare.py --smoke     # a tiny run (under a minute): CI runs it so it never rots

One ``collector simulate`` process serves a fleet with a per-request latency; then, one after
another against that same server and interleaved (collector, peer, floor, collector, ...) so a
drift in the machine hits all three alike, each client runs as its own child process:

1. ``collector`` — ``collector run`` at concurrency C (pacing off: ``adaptive: false``, and
   ``per_endpoint: C``), through ``bench/collector_child.py``;
2. ``sdk+threads`` — the official SDK in a ``ThreadPoolExecutor`` of C threads
   (``bench/sdk_peer.py``);
3. ``aiohttp floor`` — a bare aiohttp loop with C workers that only fetches and parses
   (``bench/floor.py``).

Each child is measured by ``os.wait4`` (wall, user + system CPU, peak RSS); each also reports
the seconds its imports took, so the work can be shown apart from the interpreter's start-up.
Every run's output is checked against the fleet's ground truth. Then a memory-scaling run: peak
RSS of ``collector run`` on growing fleets, latency 0, records streamed to disk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from common import (
    FleetSpec,
    SimProcess,
    exactness,
    fleet_targets,
    machine_info,
    run_child,
    simulator_process,
    wait_for_quiet,
    write_config,
)

from collector.simulator.fleet import Fleet

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "RESULTS.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
CLIENTS = ("collector", "sdk+threads", "aiohttp floor")


@dataclass(frozen=True)
class Params:
    clusters: int
    records: int
    page_size: int
    latency: float
    jitter: float
    concurrency: int
    repeats: int
    seed: int = 7

    @property
    def mean_latency(self) -> float:
        return self.latency + self.jitter / 2  # the simulator adds uniform [0, jitter)

    @property
    def pages_per_cluster(self) -> int:
        # Every client stops at a short page or once ``count`` records are held.
        return max(1, -(-self.records // self.page_size))

    @property
    def requests(self) -> int:
        """The work: one cluster list (1 account, 1 project) and every page of every cluster."""
        return 1 + self.clusters * self.pages_per_cluster

    @property
    def ideal_s(self) -> float:
        """(requests x latency) / C, but never less than the longest chain of pages."""
        spread = self.requests * self.mean_latency / self.concurrency
        return max(spread, self.pages_per_cluster * self.mean_latency)


@dataclass
class Measure:
    client: str
    wall_s: float  # the whole process, as a user would time it
    cpu_s: float  # the whole process: user + system
    rss_mb: float
    run_s: float  # without interpreter start-up and imports
    run_cpu_s: float
    records: int
    requests: int
    server_cpu_s: float
    background_cpu_s: float  # the machine's busy CPU less the client's and the server's
    problems: list[str] = field(default_factory=list)

    @property
    def background_share(self) -> float:
        """Cores' worth of CPU other processes used while this run ran."""
        return self.background_cpu_s / self.wall_s


# -- the three clients --------------------------------------------------------------------------


def _child_stats(data: bytes) -> dict[str, float]:
    stats: dict[str, float] = orjson.loads(data) if data.strip() else {}
    return stats


def run_collector_client(
    params: Params, fleet: Fleet, sim: SimProcess, work: Path, tag: str
) -> Measure:
    cfg = work / "collector.yaml"
    c = params.concurrency
    extra = (
        f"limits: {{concurrency: {c}, per_endpoint: {c}, adaptive: false}}\n"
        f"paging: {{page_size: {params.page_size}}}\n"
    )
    env = write_config(cfg, fleet, sim.url, extra)
    out, stats_path = work / f"collector-{tag}", work / f"collector-{tag}.stats.json"
    env["BENCH_STATS"] = str(stats_path)
    cmd = [sys.executable, str(BENCH / "collector_child.py"), "run", "--config", str(cfg)]
    cmd += ["--output", str(out), "--log-level", "warning"]
    before = sim.cpu_seconds()
    child = run_child(cmd, env=env, log=work / f"collector-{tag}.log")
    server = sim.cpu_seconds() - before
    stats = _child_stats(stats_path.read_bytes()) if stats_path.exists() else {}
    summary_path = out / "summary.json"
    summary = orjson.loads(summary_path.read_bytes()) if summary_path.exists() else {}
    counts = summary.get("counts", {})
    problems = [] if child.exit_code == 0 else [f"exit {child.exit_code}"]
    if summary_path.exists():
        exact = exactness(fleet, out)
        if exact["lost"] or exact["duplicates"] or exact["unexpected"]:
            problems.append(f"not exact: {exact}")
    else:
        problems.append("no summary.json")
    return Measure(
        client="collector",
        wall_s=child.wall_s,
        cpu_s=child.cpu_s,
        rss_mb=max(child.rss_kb, int(stats.get("peak_rss_kb", 0))) / 1024,
        run_s=stats.get("run_s", float("nan")),
        run_cpu_s=stats.get("run_cpu_s", float("nan")),
        records=int(counts.get("records", 0)),
        requests=int(counts.get("requests", 0)),
        server_cpu_s=server,
        background_cpu_s=child.machine_busy_s - child.cpu_s - server,
        problems=problems,
    )


def _verify_jsonl(path: Path, truth: set[str]) -> list[str]:
    seen: dict[str, int] = {}
    if not path.exists():
        return ["no output file"]
    with path.open("rb") as fh:
        for line in fh:
            item = orjson.loads(line)["item_id"]
            seen[item] = seen.get(item, 0) + 1
    lost = len(truth - seen.keys())
    dup = sum(n - 1 for n in seen.values() if n > 1)
    extra = len(seen.keys() - truth)
    return (
        [f"not exact: lost={lost} duplicates={dup} unexpected={extra}"]
        if lost + dup + extra
        else []
    )


def run_script_client(
    name: str,
    script: str,
    args: list[str],
    fleet: Fleet,
    sim: SimProcess,
    work: Path,
    tag: str,
) -> tuple[Measure, dict[str, float]]:
    env = {**_base_env(), "BENCH_TARGETS": json.dumps(fleet_targets(fleet))}
    cmd = [sys.executable, str(BENCH / script), "--url", sim.url, *args]
    before = sim.cpu_seconds()
    child = run_child(cmd, env=env, log=work / f"{script}-{tag}.log")
    server = sim.cpu_seconds() - before
    stats = _child_stats(child.stdout) if child.exit_code == 0 else {}
    problems = [] if child.exit_code == 0 else [f"exit {child.exit_code}: see {script} log"]
    measure = Measure(
        client=name,
        wall_s=child.wall_s,
        cpu_s=child.cpu_s,
        rss_mb=max(child.rss_kb, int(stats.get("peak_rss_kb", 0))) / 1024,
        run_s=stats.get("run_s", float("nan")),
        run_cpu_s=stats.get("run_cpu_s", float("nan")),
        records=int(stats.get("records", 0)),
        requests=int(stats.get("requests", 0)),
        server_cpu_s=server,
        background_cpu_s=child.machine_busy_s - child.cpu_s - server,
        problems=problems,
    )
    if child.exit_code != 0:
        log = (work / f"{script}-{tag}.log").read_text(errors="replace")[-2000:]
        print(f"  {name} failed:\n{log}", file=sys.stderr)
    return measure, stats


def _base_env() -> dict[str, str]:
    import os  # noqa: PLC0415

    return dict(os.environ)


def run_peer(params: Params, fleet: Fleet, sim: SimProcess, work: Path, tag: str) -> Measure:
    out = work / f"sdk-{tag}.jsonl"
    args = ["--threads", str(params.concurrency), "--page-size", str(params.page_size)]
    measure, _ = run_script_client(
        "sdk+threads", "sdk_peer.py", [*args, "--output", str(out)], fleet, sim, work, tag
    )
    if not measure.problems:
        measure.problems += _verify_jsonl(out, _truth(fleet))
    return measure


def run_floor(params: Params, fleet: Fleet, sim: SimProcess, work: Path, tag: str) -> Measure:
    args = ["--concurrency", str(params.concurrency), "--page-size", str(params.page_size)]
    measure, _ = run_script_client("aiohttp floor", "floor.py", args, fleet, sim, work, tag)
    if not measure.problems and measure.records != fleet.total_records:
        measure.problems.append(f"records {measure.records} != {fleet.total_records}")
    return measure


_TRUTH: dict[int, set[str]] = {}


def _truth(fleet: Fleet) -> set[str]:
    key = id(fleet)
    if key not in _TRUTH:
        _TRUTH[key] = {
            r["item_id"] for _a, p, c in fleet.iter_clusters() for r in fleet.records(p.id, c.id)
        }
    return _TRUTH[key]


# -- the comparison ------------------------------------------------------------------------------


Runner = Callable[[Params, Fleet, SimProcess, Path, str], Measure]
RUNNERS: dict[str, Runner] = {
    "collector": run_collector_client,
    "sdk+threads": run_peer,
    "aiohttp floor": run_floor,
}


@dataclass(frozen=True)
class Noise:
    """How the bench copes with a shared machine (see :func:`common.wait_for_quiet`)."""

    quiet_wait: float = 20.0  # longest wait for a quiet moment before each run, seconds
    max_background: float = 0.35  # a run during which others used more cores than this...
    retries: int = 1  # ...is run again, at most this many times


def compare(params: Params, work: Path, noise: Noise) -> dict[str, list[Measure]]:
    spec = FleetSpec(seed=params.seed, clusters=params.clusters, records=params.records)
    fleet = spec.generate()
    latency = ["--latency", f"{params.latency:g}", "--latency-jitter", f"{params.jitter:g}"]
    results: dict[str, list[Measure]] = {name: [] for name in CLIENTS}
    with simulator_process(spec, *latency, log=work / "simulator.log") as sim:
        for rep in range(params.repeats):
            for name in CLIENTS:
                for attempt in range(noise.retries + 1):
                    waited = wait_for_quiet(max_wait=noise.quiet_wait)
                    measure = RUNNERS[name](params, fleet, sim, work, f"{rep}-{attempt}")
                    noisy = measure.background_share > noise.max_background
                    print(
                        f"  run {rep + 1}/{params.repeats} {name:14} wall={measure.wall_s:6.2f}s "
                        f"run={measure.run_s:6.2f}s cpu={measure.cpu_s:6.2f}s "
                        f"rss={measure.rss_mb:6.1f}MB records={measure.records} "
                        f"requests={measure.requests} server_cpu={measure.server_cpu_s:5.2f}s "
                        f"others={measure.background_share:.2f} cores (waited {waited:.0f}s)"
                        + (f" PROBLEMS: {measure.problems}" if measure.problems else "")
                        + (" NOISY" if noisy else ""),
                        flush=True,
                    )
                    if not noisy:
                        break
                results[name].append(measure)
    return results


@dataclass(frozen=True)
class Row:
    client: str
    wall_s: float
    run_s: float
    cpu_s: float
    run_cpu_s: float
    rss_mb: float
    records: int
    requests: int
    server_cpu_s: float
    background: float  # cores' worth of others' CPU during the runs (median)
    ideal_s: float
    ok: bool

    @property
    def records_per_s(self) -> float:
        return self.records / self.wall_s

    @property
    def cpu_ms_per_1k(self) -> float:
        return 1e6 * self.cpu_s / max(1, self.records)

    @property
    def run_cpu_ms_per_1k(self) -> float:
        return 1e6 * self.run_cpu_s / max(1, self.records)

    @property
    def efficiency(self) -> float:
        return self.ideal_s / self.wall_s

    @property
    def run_efficiency(self) -> float:
        return self.ideal_s / self.run_s

    @property
    def server_busy(self) -> float:
        return self.server_cpu_s / self.wall_s


def summarize(params: Params, results: dict[str, list[Measure]]) -> dict[str, Row]:
    rows = {}
    for name, runs in results.items():

        def med(attr: str, runs: list[Measure] = runs) -> float:
            return statistics.median(getattr(m, attr) for m in runs)

        rows[name] = Row(
            client=name,
            wall_s=med("wall_s"),
            run_s=med("run_s"),
            cpu_s=med("cpu_s"),
            run_cpu_s=med("run_cpu_s"),
            rss_mb=med("rss_mb"),
            records=int(med("records")),
            requests=int(med("requests")),
            server_cpu_s=med("server_cpu_s"),
            background=statistics.median(m.background_share for m in runs),
            ideal_s=params.ideal_s,
            ok=not any(m.problems for m in runs),
        )
    return rows


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    goal: str
    met: bool


def targets(rows: dict[str, Row]) -> list[Target]:
    col, sdk, floor = rows["collector"], rows["sdk+threads"], rows["aiohttp floor"]
    out = []
    for label, w_col, w_sdk in (
        ("process", col.wall_s, sdk.wall_s),
        ("run only", col.run_s, sdk.run_s),
    ):
        ratio = w_sdk / w_col
        out.append(
            Target(f"wall: SDK+threads / collector ({label})", ratio, ">= 3.5x", ratio >= 3.5)
        )
    for label, eff in (("process", col.efficiency), ("run only", col.run_efficiency)):
        out.append(Target(f"collector efficiency ({label})", eff, ">= 90%", eff >= 0.90))
    for label, c, f, s in (
        ("process", col.cpu_ms_per_1k, floor.cpu_ms_per_1k, sdk.cpu_ms_per_1k),
        ("run only", col.run_cpu_ms_per_1k, floor.run_cpu_ms_per_1k, sdk.run_cpu_ms_per_1k),
    ):
        out.append(
            Target(f"CPU/record: collector / floor ({label})", c / f, "<= 1.5x", c / f <= 1.5)
        )
        out.append(
            Target(f"CPU/record: collector / SDK ({label})", c / s, "<= 1/6", c / s <= 1 / 6)
        )
    return out


# -- memory scaling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryRow:
    clusters: int
    records: int
    accounts: int
    projects: int
    wall_s: float
    rss_mb: float
    exit_code: int
    exact: bool

    @property
    def per_project(self) -> int:
        return self.clusters // max(1, self.projects)


#: Clusters in each project of the scaling series: a large project, held constant so that the
#: series measures what grows with the fleet, not with one project's unpaged cluster list.
MEMORY_PER_PROJECT = 500
#: Projects per account in the scaling series (more accounts beyond that).
MEMORY_PROJECTS = 20
#: The extra run: the same 100,000 clusters in 20 projects of 5,000, so the cost of one very
#: large project's listing (parsed whole: the API does not page it) is shown, not hidden.
BIG_PROJECTS_SHAPE = (2, 10)


def memory_shape(size: int) -> tuple[int, int, int]:
    """(accounts, projects per account, clusters per project) for the scaling series."""
    projects = max(1, size // MEMORY_PER_PROJECT)
    accounts = max(1, -(-projects // MEMORY_PROJECTS))
    return accounts, projects // accounts, size // (accounts * (projects // accounts))


def memory_run(
    sizes: list[int], work: Path, *, big_project: bool, concurrency: int = 64
) -> list[MemoryRow]:
    """Peak RSS of ``collector run`` by fleet size: latency 0, 3 records per cluster, C = 64.

    The series keeps projects at 500 clusters and adds projects (20 an account, then more
    accounts); with ``big_project`` one more run puts the largest size in 2 x 10 projects.
    """
    shapes = [(size, *memory_shape(size)) for size in sizes]
    if big_project and sizes:
        accounts, projects = BIG_PROJECTS_SHAPE
        shapes.append((sizes[-1], accounts, projects, sizes[-1] // (accounts * projects)))
    rows = []
    for size, accounts, projects, per_project in shapes:
        spec = FleetSpec(
            seed=11, accounts=accounts, projects=projects, clusters=per_project, records=3
        )
        fleet = spec.generate()
        tag = f"{size}-{accounts}x{projects}"
        with simulator_process(spec, log=work / f"memory-sim-{tag}.log") as sim:
            cfg = work / f"memory-{tag}.yaml"
            limits = f"limits: {{concurrency: {concurrency}, adaptive: false}}\n"
            env = write_config(cfg, fleet, sim.url, limits)
            out = work / f"memory-{tag}"
            # Not common.run_collector: its wait4 ru_maxrss includes this process's own RSS.
            cmd = [sys.executable, "-m", "collector", "run", "--config", str(cfg)]
            cmd += ["--output", str(out), "--log-level", "warning"]
            result = run_child(cmd, env=env, log=work / f"memory-{tag}.log")
        exact = exactness(fleet, out) if (out / "summary.json").exists() else {}
        ok = bool(exact) and not (exact["lost"] or exact["duplicates"] or exact["unexpected"])
        row = MemoryRow(
            clusters=fleet.total_clusters,
            records=fleet.total_records,
            accounts=accounts,
            projects=accounts * projects,
            wall_s=result.wall_s,
            rss_mb=result.rss_kb / 1024,
            exit_code=result.exit_code,
            exact=ok,
        )
        print(
            f"  memory {row.clusters:>7} clusters in {row.projects} projects: "
            f"rss={row.rss_mb:7.1f}MB wall={row.wall_s:6.1f}s exit={row.exit_code} "
            f"exact={row.exact}",
            flush=True,
        )
        rows.append(row)
    return rows


# -- profile -------------------------------------------------------------------------------------


_AREAS = (
    # (substring of the file, or of a built-in's name) -> area; first match wins
    ("collector/normalize", "collector: normalize"),
    ("collector/auth", "collector: signing (auth.py)"),
    ("collector/sinks", "collector: sinks (JSONL writing)"),
    ("collector/pagination", "collector: pagination"),
    ("collector/client", "collector: client (retry, limits)"),
    ("collector/transport", "collector: transport"),
    ("collector/scheduler", "collector: scheduler"),
    ("collector/limits", "collector: limits"),
    ("collector/", "collector: other modules"),
    ("'send' of '_socket", "socket send/recv (syscalls)"),
    ("'recv' of '_socket", "socket send/recv (syscalls)"),
    ("'poll' of 'select", "epoll (syscall)"),
    ("BufferedWriter", "file write/flush (syscalls)"),
    ("fsync", "file write/flush (syscalls)"),
    ("orjson", "orjson"),
    ("_hashlib", "hashlib/hmac"),
    ("hmac", "hashlib/hmac"),
    ("datetime", "datetime"),
    ("urllib/parse", "urllib.parse (percent-encoding)"),
    ("aiohttp/", "aiohttp"),
    ("yarl/", "aiohttp"),
    ("multidict", "aiohttp"),
    ("anyio/", "anyio"),
    ("asyncio/", "asyncio event loop"),
    ("concurrent/futures", "threads (run_in_executor)"),
    ("threading", "threads (run_in_executor)"),
    ("_queue", "threads (run_in_executor)"),
    ("structlog", "structlog"),
)


def _area(func: tuple[str, int, str]) -> str:
    filename, _, name = func
    text = filename if filename != "~" else name
    for needle, area in _AREAS:
        if needle in text:
            return area
    return "other (builtins, stdlib)"


def profile_collector(params: Params, work: Path, top: int = 25) -> str:
    """One ``collector run`` under cProfile on CPU time; CPU by area, then the top functions.

    At most 1,000 clusters (the shares do not change with size). cProfile's own cost per call
    inflates small Python functions (the profiled run takes several times the CPU), so read the
    shares, not the seconds.
    """
    import pstats  # noqa: PLC0415

    clusters = min(params.clusters, 1000)
    spec = FleetSpec(seed=params.seed, clusters=clusters, records=params.records)
    fleet = spec.generate()
    latency = ["--latency", f"{params.latency:g}", "--latency-jitter", f"{params.jitter:g}"]
    stats_path = work / "collector.cprofile"
    with simulator_process(spec, *latency, log=work / "profile-sim.log") as sim:
        cfg = work / "profile.yaml"
        c = params.concurrency
        extra = f"limits: {{concurrency: {c}, per_endpoint: {c}, adaptive: false}}\n"
        env = {**write_config(cfg, fleet, sim.url, extra), "BENCH_CPROFILE": str(stats_path)}
        cmd = [sys.executable, str(BENCH / "collector_child.py"), "run", "--config", str(cfg)]
        cmd += ["--output", str(work / "profile-out"), "--log-level", "warning"]
        run_child(cmd, env=env, log=work / "profile.log")
    if not stats_path.exists():
        return "(the profiled run failed: see profile.log)"
    stats = pstats.Stats(str(stats_path))
    raw = stats.stats  # type: ignore[attr-defined]  # {func: (cc, nc, tottime, cumtime, callers)}
    total = sum(entry[2] for entry in raw.values())
    by_area: dict[str, float] = {}
    for func, entry in raw.items():
        by_area[_area(func)] = by_area.get(_area(func), 0.0) + entry[2]
    lines = [
        f"CPU seconds under cProfile: {total:.2f} ({clusters:,} clusters, "
        f"{fleet.total_records:,} records)",
        "",
        "CPU by area (self time):",
    ]
    for area, secs in sorted(by_area.items(), key=lambda kv: -kv[1]):
        if secs / total >= 0.005:
            lines.append(f"  {100 * secs / total:5.1f}%  {secs:6.2f}s  {area}")
    lines += [
        "",
        f"Top {top} functions by self CPU time:",
        "  ncalls      self s   cum s  function",
    ]
    ranked = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    for (filename, line, name), (_cc, nc, tottime, cumtime, _callers) in ranked:
        where = name if filename == "~" else f"{_short(filename)}:{line}({name})"
        lines.append(f"  {nc:>8}  {tottime:7.2f} {cumtime:7.2f}  {where}")
    return "\n".join(lines)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/collector/", "python3.11/"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return f"collector/{tail}" if marker == "/collector/" else tail
    return filename


# -- report --------------------------------------------------------------------------------------


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def render(
    params: Params,
    noise: Noise,
    rows: dict[str, Row],
    memory: list[MemoryRow],
    profile: str | None,
    command: str,
    seconds: float,
) -> str:
    info = machine_info()
    col = rows["collector"]
    lines = [
        BEGIN,
        f"_Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" in {seconds:.0f} s; the text outside the bench markers is written by hand._",
        "",
        "### Machine and versions",
        "",
        "| | |",
        "| --- | --- |",
        *[f"| {key} | {value} |" for key, value in info.items()],
        "",
        "### Parameters",
        "",
        f"- fleet: 1 account, 1 project, {params.clusters:,} clusters x {params.records} records "
        f"(fixed), page size {params.page_size}: {params.pages_per_cluster} pages per cluster, "
        f"{params.requests:,} requests (1 cluster list + pages)",
        f"- simulator latency {params.latency * 1000:g} ms + uniform jitter "
        f"[0, {params.jitter * 1000:g}) ms (mean {params.mean_latency * 1000:g} ms); "
        "signatures verified on every request",
        f"- concurrency C = {params.concurrency} for all three; each run repeated "
        f"{params.repeats}x, interleaved; medians",
        f"- ideal = max(requests x mean latency / C, pages per cluster x mean latency) = "
        f"**{params.ideal_s:.2f} s**",
        "",
        "### Side by side (medians)",
        "",
        "`wall`/`CPU` are the whole child process (os.wait4: interpreter start-up and imports "
        "included); `run` excludes start-up and imports (measured inside the child). "
        "`server busy` is the simulator's CPU during the run / wall: near 100% means the server "
        "was the bottleneck. `others` is the CPU other processes on this shared machine used "
        "meanwhile, in cores (a run above "
        f"{noise.max_background:g} is repeated, up to {noise.retries} times).",
        "",
        "| client | wall s | run s | CPU s | run CPU s | records/s | CPU ms / 1k rec | "
        "run CPU ms / 1k rec | peak RSS MB | efficiency | run efficiency | server busy | others | "
        "exact |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    for row in rows.values():
        lines.append(
            f"| {row.client} | {row.wall_s:.2f} | {row.run_s:.2f} | {row.cpu_s:.2f} | "
            f"{row.run_cpu_s:.2f} | {row.records_per_s:,.0f} | {row.cpu_ms_per_1k:.1f} | "
            f"{row.run_cpu_ms_per_1k:.1f} | {row.rss_mb:.0f} | {_fmt_pct(row.efficiency)} | "
            f"{_fmt_pct(row.run_efficiency)} | {_fmt_pct(row.server_busy)} | "
            f"{row.background:.2f} | {'yes' if row.ok else 'NO'} |"
        )
    sdk, floor = rows["sdk+threads"], rows["aiohttp floor"]
    lines += [
        "",
        "Ratios (same run): "
        f"wall SDK/collector **{sdk.wall_s / col.wall_s:.2f}x** "
        f"(run only {sdk.run_s / col.run_s:.2f}x); "
        f"wall collector/floor {col.wall_s / floor.wall_s:.2f}x "
        f"(run only {col.run_s / floor.run_s:.2f}x); "
        f"CPU per record collector/floor **{col.cpu_ms_per_1k / floor.cpu_ms_per_1k:.2f}x** "
        f"(run only {col.run_cpu_ms_per_1k / floor.run_cpu_ms_per_1k:.2f}x), "
        f"collector/SDK **{col.cpu_ms_per_1k / sdk.cpu_ms_per_1k:.2f}** "
        f"(run only {col.run_cpu_ms_per_1k / sdk.run_cpu_ms_per_1k:.2f}).",
        "",
        "### Targets",
        "",
        "| target | measured | goal | |",
        "| --- | ---: | --- | --- |",
    ]
    for t in targets(rows):
        shown = _fmt_pct(t.value) if "efficiency" in t.name else f"{t.value:.2f}"
        lines.append(f"| {t.name} | {shown} | {t.goal} | {'met' if t.met else '**missed**'} |")
    if memory:
        series = [m for m in memory if m.per_project <= MEMORY_PER_PROJECT]
        big = [m for m in memory if m.per_project > MEMORY_PER_PROJECT]
        lines += [
            "",
            "### Memory scaling: peak RSS of `collector run`",
            "",
            f"Projects of {MEMORY_PER_PROJECT} clusters, {MEMORY_PROJECTS} an account (more "
            "accounts as the fleet grows), 3 records per cluster, latency 0, C = 64, records "
            "streamed to disk; one run per size. The last row, if any, is the largest size again "
            "in a few very large projects: each project's cluster list is one unpaged response, "
            "parsed whole, so its size (not the fleet's) sets that row's peak.",
            "",
            "| clusters | accounts | projects | clusters/project | records | wall s "
            "| peak RSS MB | exit | exact |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        lines += [
            f"| {m.clusters:,} | {m.accounts} | {m.projects} | {m.per_project:,} | "
            f"{m.records:,} | {m.wall_s:.1f} | {m.rss_mb:.0f} | "
            f"{m.exit_code} | {'yes' if m.exact else 'NO'} |"
            for m in memory
        ]
        if series:
            growth = series[-1].rss_mb - series[0].rss_mb
            lines += [
                "",
                f"Growth from {series[0].clusters:,} to {series[-1].clusters:,} clusters: "
                f"**{growth:.0f} MB** (target: at most 50 MB from 1,000 to 100,000: "
                f"{'met' if growth <= 50 else '**missed**'}"
                + ("" if series[-1].clusters >= 100_000 else "; the 100,000 run was skipped")
                + ")."
                + "".join(
                    f" In projects of {b.per_project:,} clusters, {b.clusters:,} clusters "
                    f"peaked at {b.rss_mb:.0f} MB ({b.rss_mb - series[0].rss_mb:+.0f} MB)."
                    for b in big
                ),
            ]
    if profile:
        lines += [
            "",
            "### Profile of one `collector run` (cProfile on CPU time; at most 1,000 clusters, "
            "otherwise the same parameters)",
            "",
            "```",
            profile,
            "```",
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_results(path: Path, block: str) -> None:
    """Replace the generated block of ``path``, keeping what was written by hand around it."""
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, _, rest = text.partition(BEGIN)
            _, _, tail = rest.partition(END + "\n")
            path.write_text(head + block + tail)
            return
    path.write_text("# Benchmark results\n\n" + block)


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        yield Path(tmp)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run for CI (< 60 s)")
    parser.add_argument("--clusters", type=int, help="default 5000 (smoke: 100)")
    parser.add_argument("--records", type=int, default=25)
    parser.add_argument("--page-size", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds (default 0.05)")
    parser.add_argument("--jitter", type=float, default=0.01, help="seconds (default 0.01)")
    parser.add_argument("--concurrency", type=int, help="default 256 (smoke: 32)")
    parser.add_argument("--repeats", type=int, help="default 3 (smoke: 1)")
    parser.add_argument(
        "--memory-sizes",
        help="comma-separated fleet sizes (default 1000,10000,100000; smoke: 200,1000)",
    )
    parser.add_argument("--skip-100k", action="store_true", help="leave out 100,000 clusters")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory-scaling run")
    parser.add_argument(
        "--no-big-project",
        action="store_true",
        help="skip the extra memory run of the largest size in 2 x 10 very large projects",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    parser.add_argument(
        "--results",
        type=Path,
        help="where to write the report (default bench/RESULTS.md; smoke: nowhere)",
    )
    parser.add_argument("--keep", type=Path, help="keep outputs and logs in this directory")
    parser.add_argument(
        "--quiet-wait", type=float, help="seconds to wait for a quiet machine (default 20; smoke 0)"
    )
    args = parser.parse_args()

    smoke = args.smoke
    params = Params(
        clusters=args.clusters or (100 if smoke else 5000),
        records=args.records,
        page_size=args.page_size,
        latency=args.latency,
        jitter=args.jitter,
        concurrency=args.concurrency or (32 if smoke else 256),
        repeats=args.repeats or (1 if smoke else 3),
    )
    if args.memory_sizes:
        sizes = [int(s) for s in args.memory_sizes.split(",")]
    else:
        sizes = [200, 1000] if smoke else [1000, 10_000, 100_000]
    if args.skip_100k:
        sizes = [s for s in sizes if s < 100_000]
    results_path = args.results if args.results else (None if smoke else RESULTS)
    quiet = args.quiet_wait if args.quiet_wait is not None else (0.0 if smoke else 20.0)
    noise = Noise(quiet_wait=quiet, retries=0 if smoke else 1)
    command = "python bench/compare.py" + (" --smoke" if smoke else "")

    started = time.monotonic()
    with workdir(args.keep) as work:
        print(f"comparing: {params}", flush=True)
        results = compare(params, work, noise)
        rows = summarize(params, results)
        big = not (args.no_big_project or smoke)
        memory = [] if args.no_memory else memory_run(sizes, work, big_project=big)
        profile = None if (args.no_profile or smoke) else profile_collector(params, work)
    block = render(params, noise, rows, memory, profile, command, time.monotonic() - started)
    print(block)
    if results_path is not None:
        write_results(results_path, block)
        print(f"written: {results_path}")

    harness_ok = all(row.ok for row in rows.values()) and all(
        m.exit_code == 0 and m.exact for m in memory
    )
    if smoke:
        return 0 if harness_ok else 1  # the smoke run proves the harness works, not the targets
    met = all(t.met for t in targets(rows))
    series = [m for m in memory if m.per_project <= MEMORY_PER_PROJECT]
    if series and series[-1].clusters >= 100_000:
        met = met and series[-1].rss_mb - series[0].rss_mb <= 50
    return 0 if harness_ok and met else 1


if __name__ == "__main__":
    sys.exit(main())
