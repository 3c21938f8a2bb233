"""The floor: a bare aiohttp loop that only fetches and parses — the cost of the I/O alone.

    BENCH_TARGETS='[...]' python bench/floor.py --url http://127.0.0.1:PORT --concurrency 256

One ``aiohttp.ClientSession`` with a pool of ``--concurrency`` connections; per project one
cluster list, then ``--concurrency`` workers, each taking the next cluster and paging it
(``orjson.loads`` of every body, stop at a short page or at ``count``). No retries, no pacing,
no normalizing, no writing.

The simulator checks a signature on every request, so the floor signs too, minimally, with
``hmac``/``hashlib`` directly rather than ``collector.auth.Signer``: only ``Host`` and
``X-Sdk-Date`` (plus ``X-Security-Token`` for temporary keys) are signed, the date string is
made once a second, and paths and queries are known to need no percent-encoding. What is left —
two SHA-256 and one HMAC per request — is the least any client of this API must do.

Prints one JSON object: start-up and run seconds, run CPU seconds, requests, records.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import resource
import sys
import time
from typing import Any

started = time.perf_counter()

import aiohttp  # noqa: E402
import orjson  # noqa: E402
from yarl import URL  # noqa: E402

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


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


class MinimalSigner:
    """SDK-HMAC-SHA256 with the fewest signed headers the gateway accepts."""

    def __init__(self, *, ak: str, sk: str, token: str | None, host: str) -> None:
        self._key = sk.encode()
        self._host = host
        self._token = token
        names = ["host", "x-sdk-date"] + (["x-security-token"] if token else [])
        self._signed = ";".join(names)
        self._prefix = f"SDK-HMAC-SHA256 Access={ak}, SignedHeaders={self._signed}, Signature="
        self._second = -1
        self._date = ""

    def headers(self, path: str, query: str) -> dict[str, str]:
        now = int(time.time())
        if now != self._second:
            self._second, self._date = now, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        lines = f"host:{self._host}\nx-sdk-date:{self._date}\n"
        if self._token:
            lines += f"x-security-token:{self._token}\n"
        canonical = f"GET\n{path}/\n{query}\n{lines}\n{self._signed}\n{_EMPTY_SHA256}"
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        to_sign = f"SDK-HMAC-SHA256\n{self._date}\n{digest}".encode()
        signature = hmac.new(self._key, to_sign, hashlib.sha256).hexdigest()
        out = {
            "Host": self._host,
            "X-Sdk-Date": self._date,
            "Authorization": self._prefix + signature,
        }
        if self._token:
            out["X-Security-Token"] = self._token
        return out


async def run(args: argparse.Namespace, targets: list[dict[str, Any]]) -> tuple[int, int]:
    base = URL(args.url)
    host = f"{base.host}:{base.port}"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    requests = records = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(signer: MinimalSigner, path: str, query: str = "") -> Any:
            nonlocal requests
            url = URL(f"{args.url}{path}{'?' + query if query else ''}", encoded=True)
            async with session.get(url, headers=signer.headers(path, query)) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status} for {path}: {body[:200]!r}")
            requests += 1
            return orjson.loads(body)

        work: list[tuple[MinimalSigner, str]] = []
        for target in targets:
            signer = MinimalSigner(
                ak=target["ak"], sk=target["sk"], token=target.get("security_token"), host=host
            )
            listing = await get(signer, f"/v1.0/{target['project_id']}/clusters")
            prefix = f"/v1/{target['project_id']}/clusters/"
            work += [(signer, prefix + c["id"]) for c in listing["clusters"]]

        queue = iter(work)
        limit = args.page_size

        async def worker() -> None:
            nonlocal records
            for signer, cluster_path in queue:
                path = cluster_path + "/upgrade-management/records"
                got, page = 0, 0
                while True:
                    body = await get(signer, path, f"limit={limit}&offset={page}")
                    page += 1
                    got += len(body["records"])
                    count = body.get("count")
                    if len(body["records"]) < limit or (count is not None and got >= count):
                        break
                records += got

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return requests, records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--page-size", type=int, default=10)
    args = parser.parse_args()
    targets: list[dict[str, Any]] = json.loads(os.environ["BENCH_TARGETS"])
    ready, ready_cpu = time.perf_counter(), _cpu()
    requests, records = asyncio.run(run(args, targets))
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
