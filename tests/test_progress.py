"""The live display: its numbers against hand-filled counters, and when it is drawn at all."""

from __future__ import annotations

import io
import re
import threading

import pytest
from rich.console import Console

from collector.progress import (
    Progress,
    RateWindow,
    progress_enabled,
    render_line,
    snapshot,
)
from collector.stats import RunStats

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def filled() -> RunStats:
    """72 discovered, 36 done (30 ok + 4 failed + 2 gone), and a failed account and project."""
    return RunStats(
        requests=1500,
        retries=17,
        throttled=5,
        clusters=72,
        clusters_ok=30,
        clusters_failed=4,
        clusters_gone=2,
        records=1234,
        accounts_failed=1,
        projects_failed=2,
    )


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    """A stream that claims to be a terminal."""

    def isatty(self) -> bool:
        super().isatty()  # raises ValueError once closed, like a real stream
        return True


def test_snapshot_numbers_are_the_hand_computed_ones() -> None:
    """Done = ok+failed+gone; failed units = accounts+projects+clusters; ETA from the rate."""
    snap = snapshot(filled(), elapsed=60.0)
    assert snap.clusters_done == 36
    assert snap.clusters_discovered == 72
    assert snap.failed_units == 1 + 2 + 4
    # 36 clusters in 60 s; 36 left at that pace is another 60 s.
    assert snap.eta == pytest.approx(60.0)
    # No rate window given: the whole run's average, 1500 requests / 60 s.
    assert snap.requests_per_s == pytest.approx(25.0)


def test_render_line_shows_every_number() -> None:
    """The plain line carries clusters, records, rate, retries, throttled, failures, times."""
    line = render_line(filled(), 60.0, requests_per_s=12.5)
    assert line == (
        "clusters 36/72 discovered (50%) · records 1,234 · 12.5 req/s · retries 17 · "
        "throttled 5 · failed units 7 · elapsed 0:01:00 · ETA ~0:01:00"
    )


def test_no_eta_before_the_first_cluster_completes() -> None:
    """With nothing done there is no rate to extrapolate: the ETA is shown as unknown."""
    line = render_line(RunStats(clusters=10, requests=3), 2.0)
    assert line.endswith("ETA --")
    assert "clusters 0/10 discovered (0%)" in line


def test_rate_window_measures_only_the_last_seconds() -> None:
    """After a burst, the rate falls to what the last 5 s saw, not the run's average."""
    window = RateWindow(window=5.0)
    assert window.update(0.0, 0) == 0.0
    assert window.update(1.0, 100) == pytest.approx(100.0)
    for second in range(2, 11):
        rate = window.update(float(second), 100 + 10 * (second - 1))
    # From t=5 (140) to t=10 (190): 50 requests in 5 s.
    assert rate == pytest.approx(10.0)


def test_display_captured_on_a_terminal_console_shows_the_counters() -> None:
    """The live display, drawn on a forced terminal, shows the hand-filled numbers."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    clock = FakeClock()
    stats = filled()
    with Progress(stats, console=console, enabled=True, clock=clock, refresh_per_second=50):
        clock.now += 60.0
    text = ANSI.sub("", buffer.getvalue())
    last = text.rsplit("\r", 1)[-1]
    assert last.splitlines()[1:] == [
        "records 1,234 · 0.0 req/s · retries 17 · throttled 5",
        "failed units 7 · elapsed 0:01:00 · ETA ~0:01:00",
    ]
    assert "clusters 36/72 discovered (50%)" in last
    assert "records 1,234" in last
    assert "retries 17" in last
    assert "throttled 5" in last
    assert "failed units 7" in last
    assert "elapsed 0:01:00" in last
    assert "ETA ~0:01:00" in last
    # The bar: 50% of 30 cells filled.
    assert "━" * 14 in last


def test_request_rate_on_screen_is_the_windowed_one() -> None:
    """Requests made between two frames over the seconds between them."""
    clock = FakeClock()
    stats = RunStats(clusters=4)
    progress = Progress(stats, stream=io.StringIO(), enabled=False, clock=clock)
    progress.current()
    clock.now += 2.0
    stats.requests = 30
    assert progress.current().requests_per_s == pytest.approx(15.0)


def test_progress_enabled_only_on_a_terminal_without_opt_out_or_json_logs() -> None:
    """A pipe or file gets none; a terminal gets it unless --no-progress or JSON logs."""
    assert progress_enabled(io.StringIO(), no_progress=False) is False
    assert progress_enabled(Tty(), no_progress=False) is True
    assert progress_enabled(Tty(), no_progress=True) is False
    assert progress_enabled(Tty(), no_progress=False, json_logs=True) is False
    closed = Tty()
    closed.close()
    assert progress_enabled(closed, no_progress=False) is False


def test_disabled_progress_writes_nothing() -> None:
    """Not a terminal: the stream stays empty and logs go to it unchanged."""
    stream = io.StringIO()
    with Progress(filled(), stream=stream) as progress:
        assert progress.enabled is False
        assert progress.log_stream is stream
    assert stream.getvalue() == ""


def test_logs_are_printed_above_the_display_not_through_it() -> None:
    """A log line written while the display is up reaches the console as a whole line."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with Progress(filled(), console=console, enabled=True, clock=FakeClock()) as progress:
        progress.log_stream.write("2025-06-01 [info] cluster.done records=3\n")
    text = ANSI.sub("", buffer.getvalue())
    assert "2025-06-01 [info] cluster.done records=3\n" in text
    # After it, the display is drawn again below the log line.
    assert text.index("cluster.done") < text.rindex("clusters 36/72")


def refresh_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "collector-progress")


def test_stop_ends_the_refresh_thread_and_is_idempotent() -> None:
    """Leaving the block (even by an exception) joins the refresh thread; stopping twice is fine."""
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    progress = Progress(filled(), console=console, enabled=True)
    running: list[int] = []

    def interrupted_run() -> None:
        with progress:
            running.append(refresh_threads())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_run()
    assert running == [1]
    assert refresh_threads() == 0
    progress.stop()
    assert refresh_threads() == 0
