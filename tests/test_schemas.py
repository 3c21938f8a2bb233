"""The shipped JSON Schemas hold real output to the README's shapes (checked with jsonschema)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from jsonschema import Draft202012Validator

from collector.config import RetryConfig
from collector.demo import fleet_config, run_demo
from collector.run import collect
from collector.schemas import SCHEMA_FOR_OUTPUT, SCHEMA_NAMES, load_schema
from collector.simulator.faults import ClusterFailure, Faults
from collector.simulator.fleet import Fleet
from collector.simulator.server import serve

FAST_RETRY = RetryConfig(
    max_attempts=2, backoff_base=0.001, backoff_cap=0.01, passes=0, pass_delay=0.0
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name))


def read_lines(path: Path) -> list[dict[str, Any]]:
    # The stdlib json module: a reader independent of the orjson that wrote the files.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_export_valid(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Validate every line of every output and the summary; return what was read."""
    read = {}
    for output, schema in SCHEMA_FOR_OUTPUT.items():
        check = validator(schema)
        if output == "summary":
            docs = [json.loads((directory / "summary.json").read_text(encoding="utf-8"))]
        else:
            docs = read_lines(directory / f"{output}.jsonl")
        for number, doc in enumerate(docs, 1):
            problems = [e.message for e in check.iter_errors(doc)]
            assert not problems, f"{output} #{number}: {problems}"
        read[output] = docs
    return read


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    """Each shipped schema loads from the package and passes the metaschema."""
    for name in SCHEMA_NAMES:
        schema = load_schema(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_unknown_schema_name_is_refused() -> None:
    """A typo names the known schemas rather than failing on a missing file."""
    with pytest.raises(ValueError, match="known: record, cluster, error, summary"):
        load_schema("records")


@pytest.mark.anyio
async def test_a_demo_run_matches_the_schemas(tmp_path: Path) -> None:
    """Every line of a real demo export, and its summary, validates."""
    result, _fleet = await run_demo(output_dir=tmp_path, concurrency=8)
    read = assert_export_valid(tmp_path)
    assert len(read["records"]) == result.summary["counts"]["records"] > 0
    assert len(read["clusters"]) == result.summary["counts"]["clusters"] > 0


@pytest.mark.anyio
async def test_a_run_with_failures_matches_the_schemas(tmp_path: Path) -> None:
    """Error lines (project and cluster units), failed and gone clusters, a partial summary."""
    fleet = Fleet.generate(seed=11, accounts=2, projects=2, clusters=3, records=4)
    forbidden = fleet.accounts[0].projects[0]
    units = [(p, c) for _a, p, c in fleet.iter_clusters() if p.id != forbidden.id]
    (gone_project, gone_cluster), (_p, failing_cluster) = units[0], units[1]
    fleet.mark_gone(gone_project.id, gone_cluster.id)
    faults = Faults()
    faults.forbidden_projects.add(forbidden.id)
    faults.cluster_failures[failing_cluster.id] = ClusterFailure(status=500)
    async with serve(fleet, faults, host="127.0.0.1", port=0) as url:
        config = fleet_config(fleet, url, output_dir=str(tmp_path), retry=FAST_RETRY)
        with anyio.fail_after(30):
            result = await collect(config, output_dir=tmp_path)
    read = assert_export_valid(tmp_path)
    assert result.summary["status"] == "partial"
    assert sorted(e["unit"] for e in read["errors"]) == ["cluster", "project"]
    states = {c["cluster_id"]: c["collection"] for c in read["clusters"]}
    assert states[gone_cluster.id] == "gone"
    assert states[failing_cluster.id] == "failed"


# -- the schemas reject what the README does not allow --------------------------------------

RECORD: dict[str, Any] = {
    "account": "prod",
    "region": "cn-north-4",
    "project_id": "0536cdee2200d5912f7cc00b877980f1",
    "cluster_id": "7f0ba6a1-2c5e-4d0a-9a5b-3c1b0e6f2d11",
    "cluster_name": None,
    "item_id": "i-1",
    "job_id": None,
    "record_type": "update-patch",
    "status": "UpdateCompleted_Success",
    "outcome": "success",
    "from_version": "9.0.0.201",
    "to_version": "9.0.0.210",
    "start_time": "2024-12-24T10:20:12Z",
    "end_time": None,
    "duration_s": None,
    "failed_reason": None,
    "collected_at": "2025-01-01T00:00:00Z",
    "raw": {"item_id": "i-1", "anything": ["the API adds"]},
}

SUMMARY: dict[str, Any] = {
    "run_id": "20250101T000000Z-abcdef",
    "started_at": "2025-01-01T00:00:00Z",
    "ended_at": "2025-01-01T00:01:00Z",
    "status": "ok",
    "exit_code": 0,
    "counts": {
        "projects": 1,
        "projects_skipped": 0,
        "projects_failed": 0,
        "clusters": 1,
        "clusters_ok": 1,
        "clusters_failed": 0,
        "clusters_gone": 0,
        "clusters_reread": 0,
        "records": 1,
        "requests": 3,
        "retries": 0,
        "throttled": 0,
        "responses_by_status": {"200": 3},
    },
}


def changed(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    return doc


def test_the_reference_documents_are_valid() -> None:
    """The hand-written record and summary used below are valid to begin with."""
    assert validator("record").is_valid(RECORD)
    assert validator("summary").is_valid(SUMMARY)


@pytest.mark.parametrize(
    "bad",
    [
        changed(RECORD, cluster_id=...),
        changed(RECORD, cluster_id=None),
        changed(RECORD, outcome="rolled_back"),
        changed(RECORD, start_time="2024-12-24 10:20:12"),  # not ISO 8601 with Z
        changed(RECORD, start_time="2024-12-24T10:20:12+08:00"),  # not UTC
        changed(RECORD, duration_s="1509"),
        changed(RECORD, raw=None),
        changed(RECORD, surprise=1),  # top level is closed
    ],
)
def test_invalid_records_are_rejected(bad: dict[str, Any]) -> None:
    """A missing or mistyped field, or an undocumented one, fails validation."""
    assert not validator("record").is_valid(bad)


@pytest.mark.parametrize(
    "bad",
    [
        changed(SUMMARY, counts=...),
        changed(SUMMARY, run_id=...),
        changed(SUMMARY, status="done"),
        changed(SUMMARY, exit_code=1),  # ok must exit 0
        changed(SUMMARY, status="interrupted", exit_code=1),
        changed(SUMMARY, counts={**SUMMARY["counts"], "records": -1}),
        changed(SUMMARY, shard={"index": 0}),
    ],
)
def test_invalid_summaries_are_rejected(bad: dict[str, Any]) -> None:
    """Required keys, the status/exit-code pairing and count types are enforced."""
    assert not validator("summary").is_valid(bad)


def test_summary_accepts_new_optional_keys() -> None:
    """The summary is open: new keys (resume, shard, new counters) do not break consumers."""
    doc = changed(
        SUMMARY,
        resumed=True,
        shard={"index": 2, "count": 8},
        counts={**SUMMARY["counts"], "clusters_not_owned": 7, "by_endpoint": {"iam": 2}},
    )
    assert validator("summary").is_valid(doc)


def test_error_lines_must_locate_their_unit() -> None:
    """A cluster error names its cluster; a project error names no cluster."""
    line = {
        "unit": "cluster",
        "account": "prod",
        "region": "cn-north-4",
        "project_id": "p",
        "cluster_id": "c",
        "error": "HttpStatusError",
        "message": "HTTP 500",
        "status": 500,
        "error_code": None,
        "error_msg": None,
        "request_id": None,
        "attempts": 5,
        "at": "2025-01-01T00:00:00Z",
    }
    check = validator("error")
    assert check.is_valid(line)
    assert not check.is_valid(changed(line, cluster_id=None))
    assert not check.is_valid(changed(line, unit="project"))  # a project error with a cluster
    assert check.is_valid(changed(line, unit="project", cluster_id=None))
    assert not check.is_valid(changed(line, status="500"))
