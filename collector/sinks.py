"""Output files that are either complete or absent.

Each file is written under a hidden temporary name in its final directory, then flushed,
fsynced, renamed into place and the directory fsynced. ``summary.json`` goes last, and the
previous run's ``summary.json`` is removed before anything is replaced: a ``summary.json`` on
disk therefore always describes the data files beside it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from collector.errors import SinkError

_BUFFER = 1024 * 1024


def _describe(exc: OSError, path: Path) -> str:
    return f"{exc.strerror or type(exc).__name__}: {path}"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A file that appears at ``final`` only once :meth:`publish` succeeds."""

    def __init__(self, final: Path, *, tag: str) -> None:
        self.final = final
        self.temp = final.with_name(f".{final.name}.{tag}.tmp")
        try:
            self._fh: IO[bytes] | None = open(self.temp, "wb", buffering=_BUFFER)  # noqa: SIM115 - closed in publish/discard
        except OSError as exc:
            raise SinkError(f"cannot create output file: {_describe(exc, self.temp)}") from exc

    def write(self, data: bytes) -> None:
        assert self._fh is not None, "write after publish/discard"
        try:
            self._fh.write(data)
        except OSError as exc:
            raise SinkError(f"cannot write output: {_describe(exc, self.temp)}") from exc

    def publish(self) -> None:
        fh, self._fh = self._fh, None
        assert fh is not None, "published twice"
        try:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(self.temp, self.final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                fh.close()
            self._unlink_temp()
            raise SinkError(f"cannot publish output: {_describe(exc, self.final)}") from exc

    def discard(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
        self._unlink_temp()

    def _unlink_temp(self) -> None:
        with contextlib.suppress(OSError):
            self.temp.unlink()


class JsonlFile(AtomicFile):
    """One JSON object per line, serialized by orjson."""

    def __init__(self, final: Path, *, tag: str) -> None:
        super().__init__(final, tag=tag)
        self.lines = 0

    def write_obj(self, obj: Any) -> None:
        self.write(orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE))
        self.lines += 1

    def write_many(self, objs: Iterable[Any]) -> None:
        dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        chunk = b"".join(dumps(obj, option=option) for obj in objs)
        before = self.lines
        self.write(chunk)
        self.lines = before + chunk.count(b"\n")


class Sink(Protocol):
    """Where a run's results go."""

    def add_cluster(self, cluster: dict[str, Any]) -> None: ...
    def add_records(self, records: list[dict[str, Any]]) -> None: ...
    def add_error(self, error: dict[str, Any]) -> None: ...
    def publish(self, summary: dict[str, Any]) -> None: ...
    def discard(self) -> None: ...


class DirectorySink:
    """``records.jsonl``, ``clusters.jsonl``, ``errors.jsonl`` and ``summary.json`` in one dir."""

    RECORDS = "records.jsonl"
    CLUSTERS = "clusters.jsonl"
    ERRORS = "errors.jsonl"
    SUMMARY = "summary.json"

    def __init__(self, directory: Path, *, run_id: str) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create output directory: {_describe(exc, directory)}") from exc
        if not directory.is_dir():
            raise SinkError(f"output path is not a directory: {directory}")
        self._tag = run_id
        self._files: list[JsonlFile] = []
        try:
            self.records = self._open(self.RECORDS)
            self.clusters = self._open(self.CLUSTERS)
            self.errors = self._open(self.ERRORS)
        except SinkError:
            self.discard()
            raise

    def _open(self, name: str) -> JsonlFile:
        handle = JsonlFile(self.directory / name, tag=self._tag)
        self._files.append(handle)
        return handle

    def add_cluster(self, cluster: dict[str, Any]) -> None:
        self.clusters.write_obj(cluster)

    def add_records(self, records: list[dict[str, Any]]) -> None:
        self.records.write_many(records)

    def add_error(self, error: dict[str, Any]) -> None:
        self.errors.write_obj(error)

    def publish(self, summary: dict[str, Any]) -> None:
        """Publish data files, then the summary: the summary's presence means all is there."""
        stale = self.directory / self.SUMMARY
        try:
            stale.unlink(missing_ok=True)
        except OSError as exc:
            self.discard()
            raise SinkError(f"cannot replace the old summary: {_describe(exc, stale)}") from exc
        try:
            for handle in self._files:
                handle.publish()
            summary_file = AtomicFile(stale, tag=self._tag)
            summary_file.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
            summary_file.publish()
            fsync_dir(self.directory)
        except SinkError:
            self.discard()
            raise
        except OSError as exc:
            raise SinkError(
                f"cannot sync output directory: {_describe(exc, self.directory)}"
            ) from exc

    def discard(self) -> None:
        for handle in self._files:
            handle.discard()
