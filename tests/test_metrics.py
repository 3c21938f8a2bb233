"""The metrics file: parsed back with prometheus_client's own parser and checked by hand."""

from __future__ import annotations

import errno
import os
import stat
from calendar import timegm
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.errors import ConfigError, SinkError
from collector.metrics import (
    check_metrics_path,
    crash_summary,
    render_metrics,
    write_metrics,
)

#: 2025-06-01T02:03:04Z, computed independently of the module's own parsing.
ENDED = timegm((2025, 6, 1, 2, 3, 4, 0, 0, 0))
EARLIER_SUCCESS = 1_748_000_000.0


def summary(status: str = "ok", exit_code: int = 0, **counts: Any) -> dict[str, Any]:
    """A summary shaped like the one run.py publishes."""
    base = {
        "accounts_failed": 0,
        "projects": 9,
        "projects_failed": 1,
        "projects_skipped": 3,
        "clusters": 72,
        "clusters_ok": 65,
        "clusters_failed": 4,
        "clusters_gone": 3,
        "clusters_reread": 1,
        "records": 425,
        "units_not_collected": 2,
        "requests": 130,
        "retries": 11,
        "throttled": 6,
        "responses_by_status": {"200": 119, "429": 6, "503": 3, "error": 2},
    }
    return {
        "run_id": "20250601T010000Z-abc123",
        "collector_version": "0.1.0",
        "started_at": "2025-06-01T01:00:00Z",
        "ended_at": "2025-06-01T02:03:04Z",
        "duration_s": 3784.5,
        "status": status,
        "exit_code": exit_code,
        "reason": "test",
        "counts": base | counts,
    }


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}, via prometheus_client's parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        assert family.documentation, family.name
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_every_number_of_the_summary_is_exposed() -> None:
    """Records, clusters by state, requests by status, retries, throttled, duration, status."""
    got = samples(render_metrics(summary(), previous_text=None))
    assert got["collector_run_records", ()] == 425
    assert got["collector_run_clusters", (("state", "ok"),)] == 65
    assert got["collector_run_clusters", (("state", "failed"),)] == 4
    assert got["collector_run_clusters", (("state", "gone"),)] == 3
    assert got["collector_run_requests", (("status", "200"),)] == 119
    assert got["collector_run_requests", (("status", "429"),)] == 6
    assert got["collector_run_requests", (("status", "503"),)] == 3
    assert got["collector_run_requests", (("status", "error"),)] == 2
    assert got["collector_run_retries", ()] == 11
    assert got["collector_run_throttled", ()] == 6
    assert got["collector_run_failed_units", (("unit", "project"),)] == 1
    assert got["collector_run_failed_units", (("unit", "cluster"),)] == 4
    assert got["collector_run_failed_units", (("unit", "not_collected"),)] == 2
    assert got["collector_run_duration_seconds", ()] == 3784.5
    assert got["collector_run_exit_code", ()] == 0
    assert got["collector_run_status", (("status", "ok"),)] == 1
    assert got["collector_run_status", (("status", "partial"),)] == 0
    assert got["collector_run_status", (("status", "interrupted"),)] == 0
    assert got["collector_last_run_timestamp_seconds", ()] == ENDED


def test_a_successful_run_sets_last_success_to_its_end() -> None:
    """status ok: the alerting timestamp moves to this run's end, whatever came before."""
    previous = render_metrics(summary(), previous_text=None).replace(
        str(float(ENDED)), str(EARLIER_SUCCESS)
    )
    got = samples(render_metrics(summary(), previous_text=previous))
    assert got["collector_last_success_timestamp_seconds", ()] == ENDED


@pytest.mark.parametrize(("status", "code"), [("partial", 1), ("interrupted", 130)])
def test_an_unsuccessful_run_carries_last_success_over(status: str, code: int) -> None:
    """A partial or interrupted run keeps the previous file's last success, so alerts fire."""
    previous = (
        "# HELP collector_last_success_timestamp_seconds x\n"
        "# TYPE collector_last_success_timestamp_seconds gauge\n"
        f"collector_last_success_timestamp_seconds {EARLIER_SUCCESS}\n"
    )
    got = samples(render_metrics(summary(status, code), previous_text=previous))
    assert got["collector_last_success_timestamp_seconds", ()] == EARLIER_SUCCESS
    assert got["collector_last_run_timestamp_seconds", ()] == ENDED
    assert got["collector_run_status", (("status", status),)] == 1
    assert got["collector_run_status", (("status", "ok"),)] == 0
    assert got["collector_run_exit_code", ()] == code


def test_no_known_success_is_zero_so_the_staleness_alert_fires() -> None:
    """Never succeeded (or no earlier file): 0, and time() - 0 is far over any threshold."""
    got = samples(render_metrics(summary("partial", 1), previous_text=None))
    assert got["collector_last_success_timestamp_seconds", ()] == 0


def test_crash_summary_reports_failed_status_without_counts() -> None:
    """A run that raised still leaves status, exit code and timestamps."""
    started = datetime(2025, 6, 1, 1, 0, 0, tzinfo=UTC)
    ended = datetime(2025, 6, 1, 2, 3, 4, tzinfo=UTC)
    text = render_metrics(
        crash_summary(started_at=started, ended_at=ended, exit_code=3),
        previous_text=f"collector_last_success_timestamp_seconds {EARLIER_SUCCESS}\n",
    )
    got = samples(text)
    assert got["collector_run_status", (("status", "failed"),)] == 1
    assert got["collector_run_exit_code", ()] == 3
    assert got["collector_run_duration_seconds", ()] == 3784
    assert got["collector_last_success_timestamp_seconds", ()] == EARLIER_SUCCESS
    assert not any(name == "collector_run_records" for name, _ in got)


def test_write_metrics_replaces_the_file_atomically(tmp_path: Path) -> None:
    """Two runs: the second reads the first's file, replaces it, and leaves no temp file."""
    path = tmp_path / "collector.prom"
    write_metrics(path, summary())
    later = summary("partial", 1) | {"ended_at": "2025-06-02T02:03:04Z"}
    write_metrics(path, later)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["collector.prom"]
    got = samples(path.read_text())
    assert got["collector_last_success_timestamp_seconds", ()] == ENDED
    assert got["collector_last_run_timestamp_seconds", ()] == ENDED + 86_400
    # node_exporter usually runs as another user: the file must be readable by others.
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_failure_is_a_sink_error_naming_the_file(tmp_path: Path) -> None:
    """A directory that is not there: SinkError with the path, and nothing written."""
    path = tmp_path / "missing" / "collector.prom"
    with pytest.raises(SinkError, match=r"missing/collector\.prom"):
        write_metrics(path, summary())
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename fails (say, disk full): SinkError, the previous file whole, no temp file."""
    path = tmp_path / "collector.prom"
    write_metrics(path, summary())
    before = path.read_text()

    def no_space(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(SinkError, match=r"collector\.prom: No space left on device"):
        write_metrics(path, summary("partial", 1))
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["collector.prom"]


def test_check_metrics_path_fails_before_the_run(tmp_path: Path) -> None:
    """A missing directory or a directory in the file's place is a config error up front."""
    check_metrics_path(tmp_path / "collector.prom")
    with pytest.raises(ConfigError, match="does not exist"):
        check_metrics_path(tmp_path / "nope" / "collector.prom")
    with pytest.raises(ConfigError, match="is a directory"):
        check_metrics_path(tmp_path)
