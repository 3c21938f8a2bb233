"""``collector run`` exactly as the console script runs it, plus the cost of starting up.

    python bench/collector_child.py run --config ... --output ...   # same arguments as collector

It calls ``collector.cli.main`` with its arguments (the code path of ``collector run``) after
importing what ``collector run`` imports, and writes to ``$BENCH_STATS`` (JSON) how long the
imports took and the wall and CPU seconds of the run itself, so the comparison can show the
interpreter's start-up apart from the work. The parent still measures the whole process.

With ``$BENCH_CPROFILE`` set, the run is profiled by cProfile on CPU time (``process_time``,
so time spent waiting for the network or for a core is not counted) and the stats are dumped
to that path.
"""

from __future__ import annotations

import cProfile
import os
import resource
import sys
import time

started = time.perf_counter()

import orjson  # noqa: E402

import collector.configload  # noqa: E402 - cmd_run imports these lazily: count them as start-up
import collector.run  # noqa: E402, F401
from collector.cli import main  # noqa: E402


def peak_rss_kb() -> int:
    """This process's VmHWM (kB): ru_maxrss would include the parent's, see common.run_child."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    ready, ready_cpu = time.perf_counter(), _cpu()
    profile_path = os.environ.get("BENCH_CPROFILE")
    if profile_path:
        profiler = cProfile.Profile(time.process_time)
        code = profiler.runcall(main, sys.argv[1:])
        profiler.dump_stats(profile_path)
    else:
        code = main(sys.argv[1:])
    done, done_cpu = time.perf_counter(), _cpu()
    stats = {
        "startup_s": ready - started,
        "startup_cpu_s": ready_cpu,
        "run_s": done - ready,
        "run_cpu_s": done_cpu - ready_cpu,
        "peak_rss_kb": peak_rss_kb(),
    }
    path = os.environ.get("BENCH_STATS")
    if path:
        with open(path, "wb") as fh:
            fh.write(orjson.dumps(stats))
    sys.exit(code)
