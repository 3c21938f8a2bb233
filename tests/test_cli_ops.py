"""The operator-facing commands wired end to end: metrics file, report, log lines, no progress
when not a terminal."""

from __future__ import annotations

from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families

from collector.simulator.faults import Faults
from collector.simulator.fleet import Fleet
from collector.simulator.server import SimulatorThread
from tests.conftest import CollectorCli


def test_run_writes_metrics_and_report_reads_the_export(cli: CollectorCli, tmp_path: Path) -> None:
    """--metrics-file parses as Prometheus text with the run's figures; report --format json
    counts the fleet's clusters and records; JSON log lines carry run_id; no progress when piped."""
    fleet = Fleet.generate(seed=51, accounts=1, projects=2, clusters=5, records=6)
    out, prom = tmp_path / "out", tmp_path / "collector.prom"
    with SimulatorThread(fleet, Faults()) as sim:
        cfg = cli.config(tmp_path / "c.yaml", fleet, sim.url)
        result = cli.run(
            "run",
            "--config",
            cfg,
            "--output",
            out,
            "--metrics-file",
            prom,
            "--log-format",
            "json",
            cwd=tmp_path,
            env=cli.env(fleet),
        )
    assert result.returncode == 0, result.stderr
    cli.assert_no_traceback(result)
    summary = orjson.loads((out / "summary.json").read_bytes())
    metrics = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
    }
    assert metrics[("collector_run_records", ())] == fleet.total_records
    assert metrics[("collector_run_clusters", (("state", "ok"),))] == fleet.total_clusters
    assert metrics[("collector_run_exit_code", ())] == 0
    assert metrics[("collector_last_success_timestamp_seconds", ())] > 0
    # Every log line is JSON with the run's id; nothing else (no progress bar) is on stderr.
    lines = [orjson.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines
    assert {line.get("run_id") for line in lines if line.get("event") != "lock.taken_over"} == {
        summary["run_id"]
    }

    report = cli.run("report", out, "--format", "json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    data = orjson.loads(report.stdout)
    assert data["export"]["clusters"] == fleet.total_clusters
    assert data["export"]["records"] == fleet.total_records
    assert sum(v["clusters"] for v in data["versions"]) == fleet.total_clusters


def test_report_on_a_missing_directory_is_a_clear_error(cli: CollectorCli, tmp_path: Path) -> None:
    """No traceback, exit 2, the path named."""
    result = cli.run("report", tmp_path / "nope", cwd=tmp_path)
    assert result.returncode == 2
    cli.assert_no_traceback(result)
    assert "nope" in result.stderr


def test_report_with_a_bad_window_is_a_clear_error(cli: CollectorCli, tmp_path: Path) -> None:
    """--since 5m (minutes or months?) is refused with exit 2, no traceback."""
    result = cli.run("report", tmp_path, "--since", "5m", cwd=tmp_path)
    assert result.returncode == 2
    cli.assert_no_traceback(result)
