"""A live progress display on the terminal, drawn from the run's counters.

The display is for a person watching a run: it is drawn only when stderr is a terminal, never
when logs are JSON (a machine reads that stream) and never with ``--no-progress``. It goes to
the stream it is given and nowhere else; stdout stays for the command's own output.

What it shows is computed by pure functions (:func:`snapshot`, :func:`render_line`,
:func:`build_display`) so tests check the numbers without a terminal; :class:`Progress` only
adds the clock, the request-rate window and rich's ``Live`` refresh thread.

The refresh thread reads :class:`~collector.stats.RunStats` while the event loop writes it.
The counters are plain ints, so a read is never torn, only a refresh old; nothing here writes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self, TextIO, cast

from rich.console import Console, Group, RenderableType
from rich.file_proxy import FileProxy
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from collector.stats import RunStats

#: Refreshes per second: smooth enough to read, cheap enough to ignore.
REFRESH_PER_SECOND: Final = 4.0
#: Seconds of history the request rate is measured over: short enough to show a throttled
#: region slowing the run down, long enough not to flicker between refreshes.
RATE_WINDOW: Final = 5.0


def progress_enabled(stream: TextIO, *, no_progress: bool, json_logs: bool = False) -> bool:
    """Whether to draw the live display on ``stream``.

    Only on a terminal, and not when the logs on that stream are JSON: cursor movements in a
    JSON log would break every line a collector parses.
    """
    if no_progress or json_logs:
        return False
    try:
        return stream.isatty()
    except (ValueError, OSError):  # closed or detached stream: certainly no terminal
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The numbers one frame shows."""

    elapsed: float
    clusters_done: int
    clusters_discovered: int
    records: int
    requests_per_s: float
    retries: int
    throttled: int
    failed_units: int
    #: Seconds left at the cluster completion rate so far; None before the first completes.
    eta: float | None


def snapshot(stats: RunStats, *, elapsed: float, requests_per_s: float | None = None) -> Snapshot:
    """One frame's numbers from the counters.

    ``requests_per_s`` defaults to the average over the whole run (what a caller without a
    rate window can know). The ETA counts the clusters discovered so far, so it grows while
    discovery is still finding clusters: it is an estimate, and says so on screen (``~``).
    """
    done = stats.clusters_ok + stats.clusters_failed + stats.clusters_gone
    discovered = max(stats.clusters, done)
    if requests_per_s is None:
        requests_per_s = stats.requests / elapsed if elapsed > 0 else 0.0
    eta: float | None = None
    if done > 0 and elapsed > 0:
        eta = (discovered - done) * elapsed / done
    return Snapshot(
        elapsed=elapsed,
        clusters_done=done,
        clusters_discovered=discovered,
        records=stats.records,
        requests_per_s=requests_per_s,
        retries=stats.retries,
        throttled=stats.throttled,
        failed_units=stats.accounts_failed + stats.projects_failed + stats.clusters_failed,
        eta=eta,
    )


def format_seconds(seconds: float) -> str:
    """H:MM:SS, the way people read durations."""
    whole = max(round(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _traffic(snap: Snapshot) -> str:
    return (
        f"records {snap.records:,} · {snap.requests_per_s:,.1f} req/s · "
        f"retries {snap.retries:,} · throttled {snap.throttled:,}"
    )


def _failures_and_time(snap: Snapshot) -> str:
    eta = "--" if snap.eta is None else f"~{format_seconds(snap.eta)}"
    return (
        f"failed units {snap.failed_units:,} · elapsed {format_seconds(snap.elapsed)} · ETA {eta}"
    )


def _clusters(snap: Snapshot) -> str:
    share = snap.clusters_done / snap.clusters_discovered if snap.clusters_discovered else 0.0
    return f"clusters {snap.clusters_done:,}/{snap.clusters_discovered:,} discovered ({share:.0%})"


def render_line(stats: RunStats, elapsed: float, *, requests_per_s: float | None = None) -> str:
    """The display as one plain line (no colour, no bar): for tests and dumb outputs."""
    snap = snapshot(stats, elapsed=elapsed, requests_per_s=requests_per_s)
    return f"{_clusters(snap)} · {_traffic(snap)} · {_failures_and_time(snap)}"


def build_display(snap: Snapshot) -> RenderableType:
    """The live display: a bar over clusters done, then the counters on two short lines.

    Three lines of at most ~75 columns, even with a 100,000-cluster fleet's numbers: an
    80-column terminal must not wrap them (a wrapped live area redraws badly).
    """
    head = Table.grid(padding=(0, 1))
    head.add_column(no_wrap=True)
    head.add_column(no_wrap=True)
    head.add_row(
        ProgressBar(total=max(snap.clusters_discovered, 1), completed=snap.clusters_done, width=30),
        Text(_clusters(snap), style="bold"),
    )
    tail = Text(_failures_and_time(snap))
    if snap.failed_units:
        # Failures are what a watcher must not miss.
        tail.highlight_words([f"failed units {snap.failed_units:,}"], style="bold red")
    return Group(head, Text(_traffic(snap)), tail)


class RateWindow:
    """Requests per second over the last ``window`` seconds, from samples of a running total."""

    __slots__ = ("_samples", "_window")

    def __init__(self, *, window: float = RATE_WINDOW) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now: float, total: int) -> float:
        """Add a sample; the rate between the oldest sample in the window and this one."""
        samples = self._samples
        samples.append((now, total))
        # Keep one sample at or beyond the window's edge, so the span covers the whole window.
        while len(samples) > 2 and now - samples[1][0] >= self._window:
            samples.popleft()
        first_time, first_total = samples[0]
        span = now - first_time
        return (total - first_total) / span if span > 0 else 0.0


class Progress:
    """Draw the live display while the ``with`` block runs; a no-op when disabled.

    ``enabled`` defaults to :func:`progress_enabled` on ``stream``. ``console`` lets a test
    capture the display (a rich ``Console`` on a ``StringIO``); otherwise one is made on
    ``stream``. Leaving the block (normally, by an exception, or by a signal's
    ``KeyboardInterrupt``) stops the refresh thread and leaves the last frame on screen.
    """

    def __init__(
        self,
        stats: RunStats,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        console: Console | None = None,
        refresh_per_second: float = REFRESH_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stats = stats
        self._stream: TextIO = stream if stream is not None else sys.stderr
        self.enabled = (
            progress_enabled(self._stream, no_progress=False) if enabled is None else enabled
        )
        self._clock = clock
        self._rate = RateWindow()
        # The refresh thread and stop() both draw a frame; the window is not thread-safe.
        self._lock = threading.Lock()
        self._started = clock()
        self._live: Live | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._console = console
        self._refresh = refresh_per_second

    def current(self) -> Snapshot:
        """The frame as of now (also advances the request-rate window)."""
        with self._lock:
            now = self._clock()
            rate = self._rate.update(now, self._stats.requests)
            return snapshot(self._stats, elapsed=now - self._started, requests_per_s=rate)

    def _frame(self) -> RenderableType:
        return build_display(self.current())

    @property
    def log_stream(self) -> TextIO:
        """Where logs should go while the display is up: printed above it, not through it.

        Lines written straight to the terminal would land inside the display and be half
        overwritten at the next refresh; this proxy hands them to the display's console,
        which prints them above the live area. Disabled, it is the plain stream.
        """
        if self._live is None:
            return self._stream
        # FileProxy is a TextIOBase that writes lines through the console; typeshed's TextIO is
        # a nominal type it does not derive from, but it offers every method loggers use.
        return cast(TextIO, FileProxy(self._live.console, self._stream))

    def start(self) -> None:
        if not self.enabled or self._live is not None:
            return
        self._started = self._clock()
        console = self._console or Console(file=self._stream)
        # No redirection: the display touches only its own stream, never sys.stdout/stderr.
        # Our own refresh thread rather than rich's: rich's is not joined on stop, and nothing
        # may draw once stop() has returned (the command prints its result next).
        live = Live(
            get_renderable=self._frame,
            console=console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        live.start(refresh=True)
        self._live = live
        self._done.clear()
        self._thread = threading.Thread(
            target=self._run, args=(live,), name="collector-progress", daemon=True
        )
        self._thread.start()

    def _run(self, live: Live) -> None:
        while not self._done.wait(1 / self._refresh):
            live.refresh()

    def stop(self) -> None:
        """Stop the refresh thread, then draw the last frame; safe to call twice."""
        self._done.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
