"""Record normalization, checked by hand against the API doc's own example."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from collector.normalize import RecordContext, normalize, outcome_of, parse_time

CTX = RecordContext(
    account="prod",
    region="cn-north-4",
    project_id="0536cdee2200d5912f7cc00b877980f1",
    cluster_id="7d85f602-a948-4a30-afd4-e84f47471c15",
    cluster_name="dws-demo",
    collected_at="2024-05-01T00:00:00Z",
)

#: The example response record of ListUpdateRecord (ListUpdateRecord.en.txt), verbatim.
DOC_RECORD: dict[str, Any] = {
    "item_id": "930d2820-fc17-4a42-9a50-eb695bf05e83",
    "status": "UpdateCompleted_Success",
    "record_type": "update-kernel",
    "from_version": "8.2.0",
    "to_version": "8.2.0.100",
    "start_time": "2023-08-04T06:46:46",
    "end_time": "2023-08-04T06:54:59",
    "job_id": "2c90804789bf441e0189bf4c78fd0001",
    "failed_reason": None,
}


def test_doc_example_record_normalizes_as_computed_by_hand() -> None:
    """The doc's record: zone-less times read as UTC, 8 min 13 s long, a success, raw intact."""
    raw = copy.deepcopy(DOC_RECORD)
    row = normalize(raw, CTX)

    assert row == {
        "account": "prod",
        "region": "cn-north-4",
        "project_id": "0536cdee2200d5912f7cc00b877980f1",
        "cluster_id": "7d85f602-a948-4a30-afd4-e84f47471c15",
        "cluster_name": "dws-demo",
        "item_id": "930d2820-fc17-4a42-9a50-eb695bf05e83",
        "job_id": "2c90804789bf441e0189bf4c78fd0001",
        "record_type": "update-kernel",
        "status": "UpdateCompleted_Success",
        "outcome": "success",
        "from_version": "8.2.0",
        "to_version": "8.2.0.100",
        "start_time": "2023-08-04T06:46:46Z",
        "end_time": "2023-08-04T06:54:59Z",
        "duration_s": 493.0,  # 06:54:59 - 06:46:46 = 8 * 60 + 13
        "failed_reason": None,
        "collected_at": "2024-05-01T00:00:00Z",
        "raw": DOC_RECORD,
    }
    assert raw == DOC_RECORD  # the input was not edited


@pytest.mark.parametrize(
    ("start", "end", "start_utc", "end_utc", "duration"),
    [
        pytest.param(
            "2023-08-04T08:46:46+02:00",
            "2023-08-04T06:54:59Z",
            "2023-08-04T06:46:46Z",
            "2023-08-04T06:54:59Z",
            493.0,
            id="offset-and-z",
        ),
        pytest.param(
            "2023-12-31T23:59:30-01:00",
            "2024-01-01T01:00:00",
            "2024-01-01T00:59:30Z",
            "2024-01-01T01:00:00Z",
            30.0,
            id="negative-offset-crosses-the-year",
        ),
    ],
)
def test_zoned_times_are_converted_to_utc(
    start: str, end: str, start_utc: str, end_utc: str, duration: float
) -> None:
    """Times with an offset or Z are moved to UTC, and the duration spans the real interval."""
    row = normalize({**DOC_RECORD, "start_time": start, "end_time": end}, CTX)
    assert (row["start_time"], row["end_time"], row["duration_s"]) == (start_utc, end_utc, duration)


def test_parse_time_reads_zone_less_times_as_utc() -> None:
    """parse_time gives an aware UTC datetime; an offset time is the same instant."""
    expected = datetime(2023, 8, 4, 6, 46, 46, tzinfo=UTC)
    assert parse_time("2023-08-04T06:46:46") == expected
    assert parse_time("2023-08-04T08:46:46+02:00") == expected
    assert parse_time("2023-08-04T06:46:46Z") == expected
    assert parse_time("2023-08-04T08:46:46+02:00").utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "yesterday", "2023-13-45T00:00:00", "2023-08-04T25:00:00", 1691131606, []],
    ids=["null", "empty", "blank", "word", "bad-date", "bad-hour", "epoch-int", "list"],
)
def test_unreadable_time_is_none(value: object) -> None:
    """Null, empty, garbage and non-string times parse to None rather than failing."""
    assert parse_time(value) is None


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"start_time": None}, id="start-null"),
        pytest.param({"end_time": None}, id="end-null"),
        pytest.param({"end_time": "not a time"}, id="end-garbage"),
        pytest.param({"start_time": 12345}, id="start-number"),
    ],
)
def test_missing_or_bad_time_gives_null_times_and_no_duration(change: dict[str, Any]) -> None:
    """A null or unreadable time is null in the export, and so is the duration."""
    raw = {**DOC_RECORD, **change}
    row = normalize(raw, CTX)
    (key,) = change
    assert row[key] is None
    assert row["duration_s"] is None
    assert row["raw"] == raw


def test_absent_times_give_null_times_and_no_duration() -> None:
    """A record with no time keys at all exports null times and a null duration."""
    raw = {k: v for k, v in DOC_RECORD.items() if k not in {"start_time", "end_time"}}
    row = normalize(raw, CTX)
    assert (row["start_time"], row["end_time"], row["duration_s"]) == (None, None, None)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("UpdateCompleted_Success", "success"),
        ("UpdateFailed", "failed"),
        ("Rollback_Success", "failed"),  # rolled back: the cluster did not reach the target
        ("RollbackFailed", "failed"),
        ("Updating", "running"),
        ("weird", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
        (3, "unknown"),
        (["UpdateFailed"], "unknown"),
    ],
)
def test_outcome_of_status(status: object, outcome: str) -> None:
    """Statuses fold into success, failed (incl. rolled back), running or unknown."""
    assert outcome_of(status) == outcome


def test_outcome_in_the_exported_row_follows_the_status() -> None:
    """normalize stamps the same outcome: a failed upgrade's row says failed, with its reason."""
    raw = {**DOC_RECORD, "status": "UpdateFailed", "failed_reason": "disk full"}
    row = normalize(raw, CTX)
    assert (row["status"], row["outcome"], row["failed_reason"]) == (
        "UpdateFailed",
        "failed",
        "disk full",
    )


def test_unknown_fields_stay_in_raw_and_do_not_become_columns() -> None:
    """Fields the doc does not list are kept, unchanged, in raw only."""
    extra = {"new_field": {"nested": [1, 2]}, "progress": 42, "item_id_v2": "x"}
    raw = {**DOC_RECORD, **extra}
    row = normalize(raw, CTX)
    assert row["raw"] == raw
    for key, value in extra.items():
        assert row["raw"][key] == value
        assert key not in row


def test_non_string_fields_are_null_in_columns_but_kept_in_raw() -> None:
    """A field of the wrong type is null in its column; raw still holds what the API sent."""
    raw = {**DOC_RECORD, "item_id": 17, "to_version": None, "status": None}
    row = normalize(raw, CTX)
    assert (row["item_id"], row["to_version"], row["status"]) == (None, None, None)
    assert row["outcome"] == "unknown"
    assert row["raw"]["item_id"] == 17
