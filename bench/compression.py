"""Records per second with none, gzip and zstd output on one simulated fleet.

python bench/compression.py             # 5,000 clusters x 10 records
python bench/compression.py --smoke     # 200 clusters (CI)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import FleetSpec, exactness, run_collector, simulator, write_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a small run (CI)")
    args = parser.parse_args()
    spec = FleetSpec(seed=41, clusters=200 if args.smoke else 5000, records=10)
    fleet = spec.generate()
    print(f"fleet: {fleet.total_clusters} clusters, {fleet.total_records} records")
    ok = True
    with tempfile.TemporaryDirectory() as tmp, simulator(spec) as url:
        work = Path(tmp)
        # The first run warms the simulator's caches; it is not reported.
        for codec in ("warm-up", "none", "gzip", "zstd"):
            cfg = work / f"{codec}.yaml"
            extra = (
                "limits: {concurrency: 64, adaptive: false}\n"
                f"output: {{compression: {'none' if codec == 'warm-up' else codec}}}\n"
            )
            env = write_config(cfg, fleet, url, extra)
            result = run_collector(cfg, work / codec, env)
            if codec == "warm-up":
                continue
            name = result.summary.get("files", {}).get("records", "?")
            size = (work / codec / name).stat().st_size if name != "?" else 0
            exact = exactness(fleet, work / codec) if codec == "none" else None
            ok = ok and result.exit_code == 0 and (exact is None or exact["lost"] == 0)
            print(
                f"{codec:5} wall={result.wall_s:6.2f}s "
                f"records/s={fleet.total_records / result.wall_s:8.0f} "
                f"records file={size / 1e6:7.2f} MB peak_rss={result.rss_kb / 1024:6.1f} MB "
                f"exit={result.exit_code}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
