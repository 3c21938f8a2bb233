"""The run's numbers for Prometheus, as a file for node_exporter's textfile collector.

``--metrics-file /var/lib/node_exporter/textfile/collector.prom`` makes every run (finished,
partial or interrupted) leave its numbers there, written atomically so node_exporter never
scrapes half a file: a temporary name in the same directory (not ending in ``.prom``, which the
collector ignores), fsync, rename, fsync the directory.

Every series is a gauge: they describe the *last* run and start again from zero on the next,
which is what a gauge is; a ``_total`` counter would promise Prometheus a monotonic series.

``collector_last_success_timestamp_seconds`` is the alerting hook. A successful run sets it to
its end time; any other run carries over the value in the file it replaces, so::

    time() - collector_last_success_timestamp_seconds > 26 * 3600

fires when the nightly export has not succeeded for a day, however the runs in between ended.
With no earlier value it is 0, so a collector that has never succeeded alerts at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from collector.errors import ConfigError, SinkError

PREFIX: Final = "collector_"
LAST_SUCCESS: Final = "collector_last_success_timestamp_seconds"

#: Every run status, so each gets a series (1 for this run's, 0 for the others): an alert on
#: ``collector_run_status{status="ok"} == 0`` needs the 0, not a missing series.
#: ``failed`` is a run that ended without a summary (see :func:`crash_summary`).
STATUSES: Final = ("ok", "partial", "interrupted", "failed")

_CLUSTER_STATES: Final = (
    ("ok", "clusters_ok"),
    ("failed", "clusters_failed"),
    ("gone", "clusters_gone"),
)
_LAST_SUCCESS_LINE: Final = re.compile(
    rf"^{LAST_SUCCESS}(?:\{{\}})?[ \t]+(\S+)(?:[ \t]+\S+)?[ \t]*$", re.MULTILINE
)


def _number(value: float) -> str:
    """A sample value as the exposition format spells it."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Exposition:
    """Builds the text: a family's HELP and TYPE once, then its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def gauge(
        self,
        name: str,
        help_text: str,
        samples: Iterable[tuple[Mapping[str, str], float]],
    ) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            if labels:
                pairs = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
                self._lines.append(f"{name}{{{pairs}}} {_number(value)}")
            else:
                self._lines.append(f"{name} {_number(value)}")

    def single(self, name: str, help_text: str, value: float) -> None:
        self.gauge(name, help_text, [({}, value)])

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _epoch(text: object, key: str) -> float:
    if not isinstance(text, str):
        raise TypeError(f"summary {key} must be a YYYY-MM-DDTHH:MM:SSZ string, got {text!r}")
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"summary {key} {text!r} is not YYYY-MM-DDTHH:MM:SSZ") from exc
    return moment.timestamp()


def previous_last_success(previous_text: str | None) -> float | None:
    """The last-success timestamp a previous metrics file holds; None if it holds none.

    A hand-rolled reader rather than prometheus_client's parser: it needs one value, and the
    collector should not depend on a client library at run time for that.
    """
    if not previous_text:
        return None
    match = _LAST_SUCCESS_LINE.search(previous_text)
    if match is None:
        return None
    try:
        value = float(match.group(1))
    except ValueError:
        return None
    # A value we could not have written (negative, NaN, infinite) is no evidence of success.
    return value if math.isfinite(value) and value > 0 else None


def _int(counts: Mapping[str, Any], key: str) -> int:
    value = counts.get(key, 0)
    return value if isinstance(value, int) else 0


def render_metrics(summary: Mapping[str, Any], *, previous_text: str | None) -> str:
    """The exposition text for a run's ``summary`` (the dict ``summary.json`` holds).

    ``previous_text`` is the metrics file this one replaces (None if none): a run that did not
    succeed carries its last-success timestamp over. A summary without ``counts`` (a run that
    crashed, see :func:`crash_summary`) gets the status, exit code and timestamps only.
    """
    status = str(summary.get("status", "failed"))
    ended = _epoch(summary.get("ended_at"), "ended_at")
    # Only a fully successful run moves the alerting timestamp; any other carries it over.
    carried = previous_last_success(previous_text) or 0.0
    last_success = ended if status == "ok" else carried

    out = _Exposition()
    counts = summary.get("counts")
    if isinstance(counts, Mapping):
        out.single(
            "collector_run_records",
            "Upgrade records exported by the last run.",
            _int(counts, "records"),
        )
        states = [({"state": state}, _int(counts, key)) for state, key in _CLUSTER_STATES]
        out.gauge(
            "collector_run_clusters",
            "Clusters seen by the last run, by collection state (gone: deleted while collected).",
            states,
        )
        by_status = counts.get("responses_by_status") or {}
        out.gauge(
            "collector_run_requests",
            "HTTP requests made by the last run, by response status (error: no response).",
            [({"status": str(code)}, int(n)) for code, n in sorted(by_status.items())],
        )
        out.single(
            "collector_run_retries", "Requests the last run retried.", _int(counts, "retries")
        )
        out.single(
            "collector_run_throttled",
            "Throttled (HTTP 429) responses in the last run.",
            _int(counts, "throttled"),
        )
        failed_units = [
            ({"unit": unit}, _int(counts, key))
            for unit, key in (
                ("account", "accounts_failed"),
                ("project", "projects_failed"),
                ("cluster", "clusters_failed"),
            )
        ]
        failed_units.append(({"unit": "not_collected"}, _int(counts, "units_not_collected")))
        out.gauge(
            "collector_run_failed_units",
            "Units the last run failed to collect, by kind (see errors.jsonl).",
            failed_units,
        )
    duration = summary.get("duration_s")
    if isinstance(duration, int | float):
        out.single("collector_run_duration_seconds", "Wall time of the last run.", float(duration))
    known = STATUSES if status in STATUSES else (*STATUSES, status)
    out.gauge(
        "collector_run_status",
        "1 for the last run's status (ok, partial, interrupted, failed), 0 for the others.",
        [({"status": name}, int(name == status)) for name in known],
    )
    out.single(
        "collector_run_exit_code",
        "Exit code of the last run (0 ok, 1 partial, 3 fatal, 130/143 signal).",
        int(summary.get("exit_code", 0)),
    )
    out.single(
        "collector_last_run_timestamp_seconds", "When the last run ended (Unix time).", ended
    )
    out.single(
        LAST_SUCCESS,
        "When the last fully successful run ended (Unix time); 0 if none is known.",
        last_success,
    )
    return out.text()


def crash_summary(*, started_at: datetime, ended_at: datetime, exit_code: int) -> dict[str, Any]:
    """The least a metrics file needs when a run raised instead of returning its summary."""
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "started_at": started_at.astimezone(UTC).strftime(stamp),
        "ended_at": ended_at.astimezone(UTC).strftime(stamp),
        "duration_s": round((ended_at - started_at).total_seconds(), 3),
        "status": "failed",
        "exit_code": exit_code,
    }


def check_metrics_path(path: Path) -> None:
    """Fail before the run, not after it, when the metrics file could not be written."""
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"--metrics-file {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--metrics-file {path}: directory {parent} is not writable")
    if path.is_dir():
        raise ConfigError(f"--metrics-file {path} is a directory")


def _read_previous(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SinkError(
            f"cannot read the previous metrics file {path}: {exc.strerror or exc}"
        ) from exc
    # A damaged file still yields what it can; the value we need is plain ASCII.
    return data.decode("utf-8", errors="replace")


def write_metrics(path: Path, summary: Mapping[str, Any]) -> None:
    """Render ``summary`` and replace ``path`` with it atomically; SinkError on failure."""
    text = render_metrics(summary, previous_text=_read_previous(path))
    directory = path.parent
    try:
        fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise SinkError(f"cannot write metrics file {path}: {exc.strerror or exc}") from exc
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; node_exporter usually runs as another user and must read it.
        temp.chmod(0o644)
        temp.replace(path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise SinkError(f"cannot write metrics file {path}: {exc.strerror or exc}") from exc
