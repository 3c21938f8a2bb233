"""The nightly delta: what changed since an earlier run, for a warehouse to load.

``changes.jsonl`` holds one line per record that is new or whose content changed (an
``Updating`` record that became ``UpdateCompleted_Success``), and one per cluster that appeared
or disappeared. Records are compared by ``item_id`` and the content the API returned (``raw``);
the earlier run is read in one streaming pass and kept as a digest per record (16 bytes), so a
fleet's whole history fits in modest memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from collector.compression import iter_lines
from collector.errors import ConfigError


def _digest(raw: Any) -> bytes:
    return hashlib.blake2b(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def _find(directory: Path, kind: str) -> Path:
    for name in (f"{kind}.jsonl", f"{kind}.jsonl.gz", f"{kind}.jsonl.zst"):
        if (directory / name).is_file():
            return directory / name
    raise ConfigError(f"--since-run: {directory} holds no {kind}.jsonl[.gz|.zst]")


def check_earlier_run(directory: Path) -> None:
    """Fail early (before collecting) when the earlier run cannot be read."""
    if not (directory / "summary.json").is_file():
        raise ConfigError(f"--since-run: {directory} holds no finished run (no summary.json)")
    _find(directory, "records")
    _find(directory, "clusters")


def changes(
    earlier: Path, *, records: Path, clusters: Path, listed_projects: set[str]
) -> Iterator[bytes]:
    """changes.jsonl lines (bytes, newline-terminated) comparing staged output with ``earlier``.

    A cluster counts as disappeared only if its project was listed in this run: a project that
    failed (403, outage) must not make its clusters look deleted.
    """
    before: dict[str, bytes] = {}
    for line in iter_lines(_find(earlier, "records")):
        row = orjson.loads(line)
        if isinstance(row.get("item_id"), str):
            before[row["item_id"]] = _digest(row.get("raw"))
    before_clusters: dict[str, dict[str, Any]] = {}
    for line in iter_lines(_find(earlier, "clusters")):
        row = orjson.loads(line)
        before_clusters[row["cluster_id"]] = _cluster_key(row)
    nl = orjson.OPT_APPEND_NEWLINE
    with records.open("rb") as fh:
        for line in fh:
            row = orjson.loads(line)
            old = before.get(row.get("item_id") or "")
            if old is None:
                yield orjson.dumps({"change": "record_new", "record": row}, option=nl)
            elif old != _digest(row.get("raw")):
                yield orjson.dumps({"change": "record_changed", "record": row}, option=nl)
    seen: set[str] = set()
    with clusters.open("rb") as fh:
        for line in fh:
            row = orjson.loads(line)
            seen.add(row["cluster_id"])
            if row["cluster_id"] not in before_clusters:
                yield orjson.dumps(
                    {"change": "cluster_appeared", "cluster": _cluster_key(row)}, option=nl
                )
    for cluster_id, key in before_clusters.items():
        if cluster_id not in seen and key["project_id"] in listed_projects:
            yield orjson.dumps({"change": "cluster_disappeared", "cluster": key}, option=nl)


def _cluster_key(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "account": row.get("account"),
        "region": row.get("region"),
        "project_id": row.get("project_id"),
        "cluster_id": row.get("cluster_id"),
        "cluster_name": row.get("cluster_name"),
    }
