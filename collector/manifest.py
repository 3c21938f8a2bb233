"""Which run an output directory already holds, and how a new run may start in it.

* :func:`write_manifest` marks a run as started (``.collector-run.json``);
  :func:`existing_run` tells what an earlier run left (manifest: unfinished, ``summary.json``:
  finished), and :func:`decide_start` turns that plus ``--resume`` / ``--overwrite`` into
  fresh, resume or overwrite, or a refusal that says which flag to use.
* :func:`find_unfinished` finds resumable runs in every directory an ``output.dir`` template
  can name.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import orjson

from collector.errors import ConfigError, SinkError
from collector.outdir import MAX_SMALL_FILE, describe_os_error, fsync_dir, glob_pattern, utc_text

MANIFEST_NAME: Final = ".collector-run.json"
SUMMARY_NAME: Final = "summary.json"


# -- small atomic files --------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp name beside ``path``, write, fsync, rename over it, fsync the directory."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise SinkError(f"cannot write {path.name}: {describe_os_error(exc, path)}") from exc


class _UnreadableError(Exception):
    """One of our small JSON files is there but unusable; the message says why."""


def _read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if it is absent."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_SMALL_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _UnreadableError(exc.strerror or str(exc)) from exc
    if len(data) > MAX_SMALL_FILE:
        raise _UnreadableError("too large")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _UnreadableError(f"not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise _UnreadableError("not a JSON object")
    return obj


# -- which run the directory holds ---------------------------------------------------------


def config_fingerprint(obj: Any) -> str:
    """SHA-256 (hex) of ``obj`` as canonical JSON: keys sorted at every level.

    Pass a description of what makes runs comparable (accounts, regions, shard, compression,
    ...) without secrets: the fingerprint is stored in clear in the manifest.
    """
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """A started run's identity, written before its first output."""

    run_id: str
    started_at: datetime
    fingerprint: str


def write_manifest(
    directory: Path, *, run_id: str, started_at: datetime, fingerprint: str
) -> Manifest:
    """Record (atomically) that run ``run_id`` owns ``directory``, for a later ``--resume``."""
    if started_at.tzinfo is None:
        raise ValueError("started_at must be timezone-aware")
    manifest = Manifest(
        run_id=run_id, started_at=started_at.astimezone(UTC), fingerprint=fingerprint
    )
    body = {
        "run_id": run_id,
        # Full precision: a resumed run restores its original start from here.
        "started_at": manifest.started_at.isoformat().replace("+00:00", "Z"),
        "fingerprint": fingerprint,
    }
    _write_atomic(directory / MANIFEST_NAME, orjson.dumps(body, option=orjson.OPT_INDENT_2))
    return manifest


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest in ``directory``; None if there is none; SinkError if it is unreadable."""
    path = directory / MANIFEST_NAME
    try:
        obj = _read_json_object(path)
        manifest = None if obj is None else _parse_manifest(obj)
    except _UnreadableError as exc:
        raise SinkError(f"unreadable run manifest {path}: {exc}") from exc
    return manifest


def _parse_manifest(obj: dict[str, Any]) -> Manifest:
    run_id, started, fingerprint = obj.get("run_id"), obj.get("started_at"), obj.get("fingerprint")
    if not (isinstance(run_id, str) and isinstance(started, str) and isinstance(fingerprint, str)):
        raise _UnreadableError("run_id, started_at and fingerprint must be strings")
    try:
        moment = datetime.fromisoformat(started)
    except ValueError as exc:
        raise _UnreadableError(f"started_at {started!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise _UnreadableError(f"started_at {started!r} has no time zone")
    return Manifest(run_id=run_id, started_at=moment.astimezone(UTC), fingerprint=fingerprint)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExistingRun:
    """What an earlier run left in a directory."""

    directory: Path
    #: None when neither summary.json nor the manifest could be read.
    run_id: str | None
    #: summary.json's status (ok, partial, interrupted); None when there is no summary.
    status: str | None
    started_at: str | None
    #: From the manifest; None without one.
    fingerprint: str | None
    has_summary: bool
    has_manifest: bool

    @property
    def resumable(self) -> bool:
        """Unfinished (no summary) or stopped by a signal, and its manifest says what it was."""
        return (
            self.has_manifest
            and self.fingerprint is not None
            and (not self.has_summary or self.status == "interrupted")
        )

    def describe(self) -> str:
        if self.run_id is None:
            return "the files of an earlier run whose summary or manifest cannot be read"
        if not self.has_summary:
            return f"unfinished run {self.run_id} (started {self.started_at})"
        return f"run {self.run_id} (status {self.status}, started {self.started_at})"


def existing_run(directory: Path) -> ExistingRun | None:
    """The run ``directory`` already holds, finished or not; None if it holds none.

    Unreadable files do not raise: they describe a run we cannot identify, which a caller
    must not mix a new run into either.
    """
    try:
        summary = _read_json_object(directory / SUMMARY_NAME)
        summary_ok = True
    except _UnreadableError:
        summary, summary_ok = None, False
    try:
        manifest = read_manifest(directory)
        manifest_ok = True
    except SinkError:
        manifest, manifest_ok = None, False
    has_summary = summary is not None or not summary_ok
    has_manifest = manifest is not None or not manifest_ok
    if not (has_summary or has_manifest):
        return None
    if manifest is not None and summary is not None and summary.get("run_id") != manifest.run_id:
        manifest = None  # left by an older run in the same place: the summary is the truth
    run_id: str | None = None
    status: str | None = None
    started: str | None = None
    if summary is not None:
        run_id = _str_or_none(summary.get("run_id"))
        status = _str_or_none(summary.get("status"))
        started = _str_or_none(summary.get("started_at"))
    elif summary_ok and manifest is not None:
        run_id, started = manifest.run_id, utc_text(manifest.started_at)
    return ExistingRun(
        directory=directory,
        run_id=run_id,
        status=status,
        started_at=started,
        fingerprint=manifest.fingerprint if manifest is not None else None,
        has_summary=has_summary,
        has_manifest=manifest is not None,
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


class StartMode(StrEnum):
    FRESH = "fresh"
    RESUME = "resume"
    OVERWRITE = "overwrite"


def decide_start(
    existing: ExistingRun | None, *, resume: bool, overwrite: bool, fingerprint: str
) -> StartMode:
    """How this run may use a directory that ``existing`` describes; ConfigError if it may not.

    ``--resume`` with nothing to resume starts fresh, so a retrying scheduler (cron, a
    Kubernetes Job's backoff) can always pass it.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite cannot be used together")
    if existing is None:
        return StartMode.FRESH
    where = existing.directory
    if overwrite:
        return StartMode.OVERWRITE
    if resume:
        if not existing.resumable:
            raise ConfigError(
                f"cannot resume: {where} holds {existing.describe()}, which cannot be resumed;"
                " use --overwrite to collect again"
            )
        if existing.fingerprint != fingerprint:
            raise ConfigError(
                f"cannot resume run {existing.run_id} in {where}: config changed since the"
                " interrupted run; restore it, or use --overwrite to start over"
            )
        return StartMode.RESUME
    if existing.resumable:
        advice = "pass --resume to continue it, or --overwrite to start over"
    else:
        advice = "pass --overwrite to replace it"
    raise ConfigError(f"output directory {where} already holds {existing.describe()}; {advice}")


def find_unfinished(template: str) -> list[ExistingRun]:
    """Resumable runs in every directory ``template`` can name, newest start first.

    What ``--resume`` needs when today's name is not the interrupted run's: ``{date}`` past
    midnight, or any ``{time}`` / ``{run_id}`` template.
    """
    found = []
    for name in glob.glob(glob_pattern(template)):
        directory = Path(name)
        if not directory.is_dir():
            continue
        run = existing_run(directory)
        if run is not None and run.resumable:
            found.append(run)
    found.sort(key=lambda run: run.started_at or "", reverse=True)
    return found
