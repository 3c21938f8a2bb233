"""Output files that are complete or absent, and a journal that lets a killed run resume.

While a run works, each finished cluster is appended to uncompressed *staging* files in a hidden
directory beside the outputs (``.collector-staging/``), and then one line naming the cluster and
the staging files' lengths is appended to a journal. Every 64 clusters or quarter second the
data files are flushed to the OS and then the journal, so a run killed at any moment (SIGKILL
included) leaves a journal whose entries all point at data that is there; ``--resume`` truncates
the staging files to the last entry and skips every cluster it names.

Publishing streams each staging file through the configured compression into a temporary file
in the output directory, fsyncs and renames it; the previous ``summary.json`` is removed first
and the new one is written last, so a ``summary.json`` always describes the files beside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from collector.compression import CompressedWriter, Compression, open_writer, suffix
from collector.errors import SinkError
from collector.outdir import fsync_dir

_BUFFER = 1024 * 1024
#: Staging is handed to the OS (which keeps it across a kill of this process) at least this
#: often; a kill loses at most this much work, which --resume then fetches again.
_FLUSH_EVERY = 64
_FLUSH_SECONDS = 0.25
_COPY_CHUNK = 1024 * 1024
STAGING = ".collector-staging"
SUMMARY = "summary.json"
KINDS = ("records", "clusters", "errors")


def _describe(exc: OSError, path: Path) -> str:
    return f"{exc.strerror or type(exc).__name__}: {path}"


def output_name(kind: str, compression: Compression) -> str:
    return f"{kind}{suffix(compression)}"


class AtomicFile:
    """A file that appears at ``final`` only once :meth:`publish` succeeds."""

    def __init__(
        self,
        final: Path,
        *,
        tag: str,
        compression: Compression = Compression.NONE,
        level: int | None = None,
    ) -> None:
        self.final = final
        self.temp = final.with_name(f".{final.name}.{tag}.tmp")
        try:
            self._fh: IO[bytes] | None = open(self.temp, "wb", buffering=_BUFFER)  # noqa: SIM115 - closed in publish/discard
            self._writer: CompressedWriter = open_writer(self._fh, compression, level=level)
        except OSError as exc:
            raise SinkError(f"cannot create output file: {_describe(exc, self.temp)}") from exc

    def write(self, data: bytes) -> None:
        assert self._fh is not None, "write after publish/discard"
        try:
            self._writer.write(data)
        except OSError as exc:
            self.discard()
            raise SinkError(f"cannot write output: {_describe(exc, self.temp)}") from exc

    def publish(self) -> None:
        fh, self._fh = self._fh, None
        assert fh is not None, "published twice"
        try:
            self._writer.finish()
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


class Sink(Protocol):
    """Where a run's results go."""

    completed: dict[str, str]

    def cluster_done(
        self,
        *,
        cluster_id: str,
        state: str,
        cluster: dict[str, Any],
        records: list[dict[str, Any]],
        error: dict[str, Any] | None,
    ) -> None: ...

    def add_error(self, error: dict[str, Any]) -> None: ...

    def add_inventory(self, cluster_id: str, info: bytes) -> None: ...


@dataclass(slots=True)
class Restored:
    """What the journal says earlier sessions of this run finished."""

    clusters_ok: int = 0
    clusters_failed: int = 0
    clusters_gone: int = 0
    records: int = 0
    entries: int = 0
    completed: dict[str, str] = field(default_factory=dict)


class ExportSink:
    """The output directory of one run: staging, journal, and publishing."""

    def __init__(
        self,
        directory: Path,
        *,
        run_id: str,
        compression: Compression = Compression.NONE,
        level: int | None = None,
        resume: bool = False,
    ) -> None:
        self.directory = directory
        self.staging = directory / STAGING
        self.compression = compression
        self._level = level
        self._tag = run_id
        self._errors: list[dict[str, Any]] = []
        self._files: dict[str, IO[bytes]] = {}
        self._unflushed = 0
        self._flushed_at = time.monotonic()
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(
                f"cannot create output directory: {_describe(exc, self.staging)}"
            ) from exc
        self.restored = self._recover() if resume else self._start_clean()
        #: Cluster id -> state, for every cluster an earlier session of this run finished.
        self.completed = self.restored.completed
        try:
            # The inventory is written at discovery and re-listed by every session, so it
            # starts afresh each time; the journal says which clusters finished.
            with contextlib.suppress(FileNotFoundError):
                self._staged("inventory").unlink()
            for kind in (*KINDS, "journal", "inventory"):
                self._files[kind] = open(self._staged(kind), "ab", buffering=_BUFFER)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            self.close()
            raise SinkError(f"cannot open staging file: {_describe(exc, self.staging)}") from exc

    def _staged(self, kind: str) -> Path:
        return self.staging / f"{kind}.jsonl"

    def _start_clean(self) -> Restored:
        for kind in (*KINDS, "journal"):
            with contextlib.suppress(FileNotFoundError):
                self._staged(kind).unlink()
        return Restored()

    def _recover(self) -> Restored:
        """Keep the journal's valid prefix and cut every staging file back to it."""
        sizes = {
            kind: (self._staged(kind).stat().st_size if self._staged(kind).exists() else 0)
            for kind in KINDS
        }
        restored = Restored()
        ends = dict.fromkeys(KINDS, 0)
        valid = 0
        journal = self._staged("journal")
        data = journal.read_bytes() if journal.exists() else b""
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a line cut off by the kill
            try:
                entry = orjson.loads(line)
                offsets = {"records": entry["r"], "clusters": entry["k"], "errors": entry["e"]}
                state, cluster_id, count = entry["s"], entry["c"], entry["n"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                break
            if any(offsets[kind] > sizes[kind] for kind in KINDS):
                break  # points past what reached the disk
            ends, valid = offsets, valid + len(line)
            restored.completed[cluster_id] = state
            restored.entries += 1
            restored.records += count
            if state == "ok":
                restored.clusters_ok += 1
            elif state == "gone":
                restored.clusters_gone += 1
            else:
                restored.clusters_failed += 1
        try:
            for kind in KINDS:
                with open(self._staged(kind), "ab") as fh:
                    fh.truncate(ends[kind])
            with open(journal, "ab") as fh:
                fh.truncate(valid)
        except OSError as exc:
            raise SinkError(
                f"cannot recover staging files: {_describe(exc, self.staging)}"
            ) from exc
        return restored

    # -- while the run works -----------------------------------------------------------------

    def cluster_done(
        self,
        *,
        cluster_id: str,
        state: str,
        cluster: dict[str, Any],
        records: list[dict[str, Any]],
        error: dict[str, Any] | None,
    ) -> None:
        """A cluster's whole result, then its journal entry: a kill never splits the two."""
        dumps, nl = orjson.dumps, orjson.OPT_APPEND_NEWLINE
        files = self._files
        try:
            if records:
                files["records"].write(b"".join(dumps(r, option=nl) for r in records))
            files["clusters"].write(dumps(cluster, option=nl))
            if error is not None:
                files["errors"].write(dumps(error, option=nl))
            entry = {
                "c": cluster_id,
                "s": state,
                "n": len(records),
                "r": files["records"].tell(),
                "k": files["clusters"].tell(),
                "e": files["errors"].tell(),
            }
            files["journal"].write(dumps(entry, option=nl))
            self._unflushed += 1
            now = time.monotonic()
            if self._unflushed >= _FLUSH_EVERY or now - self._flushed_at >= _FLUSH_SECONDS:
                self._flush()
                self._flushed_at, self._unflushed = now, 0
        except OSError as exc:
            raise SinkError(f"cannot write output: {_describe(exc, self.staging)}") from exc
        # ``completed`` holds only what earlier sessions finished: this session lists each
        # project once, so remembering its own clusters would only cost memory.

    def _flush(self) -> None:
        """Data first, then the journal: a journal line never points past flushed data."""
        for kind in KINDS:
            self._files[kind].flush()
        self._files["journal"].flush()
        self._files["inventory"].flush()

    def add_inventory(self, cluster_id: str, info: bytes) -> None:
        """A listed cluster's ClusterInfo (the API's JSON bytes), joined at publish.

        Written when the cluster is listed, so that a cluster waiting to be paged costs the
        run its id, not its ClusterInfo.
        """
        line = orjson.dumps(
            {"cluster_id": cluster_id, "cluster": orjson.Fragment(info)},
            option=orjson.OPT_APPEND_NEWLINE,
        )
        try:
            self._files["inventory"].write(line)
        except OSError as exc:
            raise SinkError(f"cannot write output: {_describe(exc, self.staging)}") from exc

    def add_error(self, error: dict[str, Any]) -> None:
        """An account or project failure, or a unit not collected: written at publish."""
        self._errors.append(error)

    def flush(self) -> None:
        """Hand everything staged so far to the OS; SinkError if it cannot be written."""
        try:
            self._flush()
        except OSError as exc:
            raise SinkError(f"cannot write output: {_describe(exc, self.staging)}") from exc

    def close(self) -> None:
        """Best effort, for paths that are failing anyway; :meth:`publish` flushes strictly."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            self._flush()
        for fh in self._files.values():
            with contextlib.suppress(OSError):
                fh.close()
        self._files.clear()

    # -- the end -----------------------------------------------------------------------------

    def staged_path(self, kind: str) -> Path:
        return self._staged(kind)

    def publish(
        self,
        summary: dict[str, Any],
        *,
        keep_staging: bool,
        extra: Iterable[tuple[str, Iterable[bytes]]] = (),
    ) -> dict[str, str]:
        """Publish every output, then the summary; the file names published, by kind.

        ``extra`` adds (name, chunks) outputs written before the summary (the delta export).
        ``keep_staging``: an interrupted run keeps its journal so that ``--resume`` can finish it.
        """
        self.flush()  # a full disk must fail the publish, not truncate it silently
        self.close()
        stale = self.directory / SUMMARY
        try:
            stale.unlink(missing_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot replace the old summary: {_describe(exc, stale)}") from exc
        names = {kind: output_name(kind, self.compression) for kind in KINDS}
        self._publish_file(names["records"], self._chunks("records"))
        self._publish_file(names["clusters"], self._joined_clusters())
        errors = (orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in self._errors)
        self._publish_file(names["errors"], _chain(self._chunks("errors"), errors))
        for name, chunks in extra:
            kind = name.split(".", 1)[0]
            names[kind] = name
            self._publish_file(name, chunks)
        summary_file = AtomicFile(stale, tag=self._tag)
        summary_file.write(orjson.dumps({**summary, "files": names}, option=orjson.OPT_INDENT_2))
        summary_file.publish()
        try:
            fsync_dir(self.directory)
        except OSError as exc:
            raise SinkError(
                f"cannot sync output directory: {_describe(exc, self.directory)}"
            ) from exc
        if not keep_staging:
            shutil.rmtree(self.staging, ignore_errors=True)
        return names

    def _joined_clusters(self) -> Iterable[bytes]:
        """clusters.jsonl: each finished cluster's line with its ClusterInfo from the inventory.

        Memory: a file offset per finished cluster (the lines are read back from staging as
        they are joined), never the lines themselves nor the ClusterInfos.
        """
        path = self._staged("clusters")
        finished: dict[str, int] = {}
        try:
            with open(path, "rb") as fh:
                offset = 0
                for line in fh:
                    if line.strip():
                        finished[orjson.loads(line)["cluster_id"]] = offset
                    offset += len(line)
                nl = orjson.OPT_APPEND_NEWLINE

                def row_at(at: int) -> dict[str, Any]:
                    fh.seek(at)
                    row: dict[str, Any] = orjson.loads(fh.readline())
                    return row

                for chunk in _lines(self._chunks("inventory")):
                    listed = orjson.loads(chunk)
                    at = finished.pop(listed["cluster_id"], None)
                    if at is not None:
                        row = row_at(at)
                        row["cluster"] = listed["cluster"]
                        yield orjson.dumps(row, option=nl)
                for at in finished.values():
                    # Finished in an earlier session, but its project was not listed in this one.
                    row = row_at(at)
                    row["cluster"] = {"id": row["cluster_id"]}
                    yield orjson.dumps(row, option=nl)
        except OSError as exc:
            raise SinkError(f"cannot read staging file: {_describe(exc, path)}") from exc

    def _chunks(self, kind: str) -> Iterable[bytes]:
        path = self._staged(kind)
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(_COPY_CHUNK):
                    yield chunk
        except OSError as exc:
            raise SinkError(f"cannot read staging file: {_describe(exc, path)}") from exc

    def _publish_file(self, name: str, chunks: Iterable[bytes]) -> None:
        handle = AtomicFile(
            self.directory / name, tag=self._tag, compression=self.compression, level=self._level
        )
        try:
            for chunk in chunks:
                handle.write(chunk)
        except BaseException:
            handle.discard()
            raise
        handle.publish()


def _lines(chunks: Iterable[bytes]) -> Iterable[bytes]:
    """Whole lines (without the newline) from a stream of chunks."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        yield from (line for line in whole if line)
    if rest:
        yield rest


def _chain(*parts: Iterable[bytes]) -> Iterable[bytes]:
    for part in parts:
        yield from part
