"""The staging journal recovers exactly what reached the disk; write errors are SinkErrors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from collector.errors import SinkError
from collector.sinks import ExportSink


def _done(sink: ExportSink, n: int) -> None:
    sink.cluster_done(
        cluster_id=f"c{n}",
        state="ok",
        cluster={"cluster_id": f"c{n}"},
        records=[{"item_id": f"c{n}-r{i}"} for i in range(3)],
        error=None,
    )


def test_resume_keeps_the_journaled_prefix_and_cuts_the_rest(tmp_path: Path) -> None:
    """A torn last journal line and data written after the last entry are both dropped."""
    sink = ExportSink(tmp_path, run_id="r1")
    for n in range(3):
        _done(sink, n)
    sink.close()
    staging = tmp_path / ".collector-staging"
    # A kill mid-cluster: records of c3 reached the file, its journal line only half did.
    with (staging / "records.jsonl").open("ab") as fh:
        fh.write(b'{"item_id":"c3-r0"}\n')
    with (staging / "journal.jsonl").open("ab") as fh:
        fh.write(b'{"c":"c3","s":"ok"')
    resumed = ExportSink(tmp_path, run_id="r1", resume=True)
    assert set(resumed.completed) == {"c0", "c1", "c2"}
    assert resumed.restored.records == 9
    _done(resumed, 3)
    resumed.close()
    items = [
        orjson.loads(x)["item_id"] for x in (staging / "records.jsonl").read_bytes().splitlines()
    ]
    assert items == [f"c{n}-r{i}" for n in range(4) for i in range(3)]


def test_journal_entry_pointing_past_the_data_is_not_trusted(tmp_path: Path) -> None:
    """After a crash that lost data but kept the journal line, that cluster is fetched again."""
    sink = ExportSink(tmp_path, run_id="r1")
    for n in range(2):
        _done(sink, n)
    sink.close()
    records = tmp_path / ".collector-staging" / "records.jsonl"
    data = records.read_bytes()
    records.write_bytes(data[: len(data) - 5])  # the tail of c1's records never reached disk
    resumed = ExportSink(tmp_path, run_id="r1", resume=True)
    assert set(resumed.completed) == {"c0"}
    resumed.close()
    assert len(records.read_bytes().splitlines()) == 3


def test_disk_full_is_a_sink_error_naming_the_problem(tmp_path: Path) -> None:
    """ENOSPC while writing (/dev/full) becomes SinkError, not an OSError traceback."""
    sink = ExportSink(tmp_path, run_id="r1")
    sink._files["records"].close()  # swap in a device that is always full
    sink._files["records"] = open("/dev/full", "wb")  # noqa: SIM115
    _done(sink, 0)  # staged in the buffer; the flush meets the full disk
    with pytest.raises(SinkError, match="No space left"):
        sink.publish({"run_id": "r1"}, keep_staging=True)  # must not publish a truncated file
    sink.close()
    assert not (tmp_path / "summary.json").exists()
    assert not (tmp_path / "records.jsonl").exists()
