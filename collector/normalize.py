"""Turn an API upgrade record into the exported line: typed, zoned, with its context stamped on.

The API's times carry no zone and are UTC; we emit ISO 8601 with ``Z``. ``outcome`` folds the
free-form ``status`` into four values an auditor can count; ``raw`` keeps the record exactly as
it came, so nothing the API says is ever lost to normalization.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordContext:
    """Where a record came from; the same for every record of one cluster."""

    account: str
    region: str
    project_id: str
    cluster_id: str
    cluster_name: str | None
    collected_at: str


#: The API's own shape, "2023-08-04T06:46:46": already UTC, so only a "Z" is missing.
_PLAIN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}").fullmatch


def parse_time(value: object) -> datetime | None:
    """An API timestamp as an aware UTC datetime; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


@functools.lru_cache(maxsize=256)
def _outcome(status: str) -> str:
    return outcome_of(status)


def _time_field(value: object) -> tuple[datetime | None, str | None]:
    """(parsed, formatted) for a time field; the common API shape skips the re-formatting.

    The parsed time is naive UTC, only ever subtracted from another: attaching a tzinfo costs
    more than parsing (1.1 us against 0.15 us, twice per record).
    """
    if isinstance(value, str) and _PLAIN(value):
        try:
            return datetime.fromisoformat(value), value + "Z"
        except ValueError:
            return None, None
    parsed = parse_time(value)
    if parsed is None:
        return None, None
    return parsed.replace(tzinfo=None), format_time(parsed)


def outcome_of(status: object) -> str:
    """success | failed | running | unknown, from the API's status text.

    A rollback counts as failed: the cluster did not end on the target version.
    """
    if not isinstance(status, str):
        return "unknown"
    text = status.lower()
    if "fail" in text or "rollback" in text or "error" in text:
        return "failed"
    if "success" in text or "completed" in text:
        return "success"
    if text.endswith("ing") or "running" in text or "pending" in text or "wait" in text:
        return "running"
    return "unknown"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def normalize(raw: Mapping[str, Any], ctx: RecordContext) -> dict[str, Any]:
    start, start_text = _time_field(raw.get("start_time"))
    end, end_text = _time_field(raw.get("end_time"))
    duration = (end - start).total_seconds() if start and end else None
    status = raw.get("status")
    return {
        "account": ctx.account,
        "region": ctx.region,
        "project_id": ctx.project_id,
        "cluster_id": ctx.cluster_id,
        "cluster_name": ctx.cluster_name,
        "item_id": _text(raw.get("item_id")),
        "job_id": _text(raw.get("job_id")),
        "record_type": _text(raw.get("record_type")),
        "status": status if isinstance(status, str) else None,
        "outcome": _outcome(status) if isinstance(status, str) else "unknown",
        "from_version": _text(raw.get("from_version")),
        "to_version": _text(raw.get("to_version")),
        "start_time": start_text,
        "end_time": end_text,
        "duration_s": duration,
        "failed_reason": _text(raw.get("failed_reason")),
        "collected_at": ctx.collected_at,
        "raw": raw,
    }
