"""The peer: what a user would write instead — the official SDK in a thread pool.

    BENCH_TARGETS='[{"ak": ..., "sk": ..., "security_token": ..., "project_id": ...}]' \
        python bench/sdk_peer.py --url http://127.0.0.1:PORT --threads 256 --output out.jsonl

For each project: ``DwsClient.list_clusters``; then one task per cluster in a
``ThreadPoolExecutor`` of ``--threads`` threads, paging ``list_update_record(offset=page,
limit=10)`` until a short page (or ``count`` reached, so it makes exactly the requests the
collector makes). The main thread writes each cluster's records as JSON lines with the standard
library (``record.to_dict()`` plus where it came from) as clusters complete: the collector
writes normalized JSONL, so the peer writes too. The SDK's HTTP pool holds ``--threads``
connections (its default of 10 would make most threads reconnect for every request).

Prints one JSON object: start-up and run seconds, run CPU seconds, requests, records.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

started = time.perf_counter()

from huaweicloudsdkcore.auth.credentials import BasicCredentials  # noqa: E402
from huaweicloudsdkcore.http.http_config import HttpConfig  # noqa: E402
from huaweicloudsdkdws.v2 import (  # noqa: E402
    DwsClient,
    ListClustersRequest,
    ListUpdateRecordRequest,
)


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


def build_client(url: str, target: dict[str, Any], threads: int) -> Any:
    credentials = BasicCredentials(target["ak"], target["sk"], target["project_id"])
    if target.get("security_token"):
        credentials = credentials.with_security_token(target["security_token"])
    config = HttpConfig.get_default_config()
    config.timeout = (10, 30)
    config.pool_connections = 1
    config.pool_maxsize = threads
    return (
        DwsClient.new_builder()
        .with_http_config(config)
        .with_credentials(credentials)
        .with_endpoints([url])
        .build()
    )


def page_all(client: Any, cluster_id: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every record of one cluster, page by page; (records, requests made)."""
    records: list[dict[str, Any]] = []
    page = 0
    while True:
        response = client.list_update_record(
            ListUpdateRecordRequest(cluster_id=cluster_id, offset=page, limit=limit)
        )
        got = response.records or []
        records += [record.to_dict() for record in got]
        page += 1
        if len(got) < limit or (response.count is not None and len(records) >= response.count):
            return records, page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--page-size", type=int, default=10)
    parser.add_argument("--output", help="JSONL file to write; none: write nothing")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the SDK's and urllib3's loggers stay quiet
    targets: list[dict[str, Any]] = json.loads(os.environ["BENCH_TARGETS"])
    ready, ready_cpu = time.perf_counter(), _cpu()

    requests = records = 0
    out = open(args.output, "w", encoding="utf-8") if args.output else None  # noqa: SIM115
    clients = [build_client(args.url, target, args.threads) for target in targets]
    try:
        with ThreadPoolExecutor(max_workers=args.threads) as pool:
            futures = {}
            for client, target in zip(clients, targets, strict=True):
                clusters = client.list_clusters(ListClustersRequest()).clusters or []
                requests += 1
                for cluster in clusters:
                    future = pool.submit(page_all, client, cluster.id, args.page_size)
                    futures[future] = (target, cluster)
            for future in as_completed(futures):
                target, cluster = futures.pop(future)
                got, made = future.result()
                requests += made
                records += len(got)
                if out is not None:
                    where = {
                        "account": target.get("account"),
                        "project_id": target["project_id"],
                        "cluster_id": cluster.id,
                        "cluster_name": cluster.name,
                    }
                    out.writelines(json.dumps({**where, **record}) + "\n" for record in got)
    finally:
        for client in clients:
            client.close()
        if out is not None:
            out.close()
    done, done_cpu = time.perf_counter(), _cpu()
    print(
        json.dumps(
            {
                "startup_s": ready - started,
                "startup_cpu_s": ready_cpu,
                "run_s": done - ready,
                "run_cpu_s": done_cpu - ready_cpu,
                "requests": requests,
                "records": records,
                "peak_rss_kb": peak_rss_kb(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
