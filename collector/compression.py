"""Streaming compression for the JSONL outputs: ``none``, ``gzip`` or ``zstd``.

Writers wrap a file object the caller owns (the atomic temp file) and compress as bytes arrive,
so a file is never held in memory whole. :meth:`CompressedWriter.finish` writes the codec's
trailer but leaves the file object open: the caller still has to flush, fsync and rename it.

Readers stream too, line by line, and read concatenated gzip members and zstd frames as one
file, so a file appended to by a resumed run reads back as a whole.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO, Final, Protocol

import zstandard

from collector.errors import ConfigError, SinkError


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


_SUFFIXES: Final = {
    Compression.NONE: ".jsonl",
    Compression.GZIP: ".jsonl.gz",
    Compression.ZSTD: ".jsonl.zst",
}

#: gzip's own default is 9, which costs several times the CPU of 6 for a percent or two.
#: zstd's 3 is the library default: better than gzip -6 and much faster.
DEFAULT_LEVELS: Final = {Compression.GZIP: 6, Compression.ZSTD: 3}

#: Accepted levels per codec, for validating a config before any file is opened.
LEVEL_RANGES: Final = {Compression.GZIP: range(1, 10), Compression.ZSTD: range(1, 23)}

_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"

#: Compressed bytes fed to the zstd decoder per step. JSON lines compress ~10-30x, so one
#: step yields a few hundred KiB at most.
_ZSTD_FEED: Final = 16 * 1024


def suffix(compression: Compression) -> str:
    """The file name ending for a JSONL output written with ``compression``."""
    return _SUFFIXES[compression]


def detect(path: Path) -> Compression:
    """How ``path`` is compressed: by its name, else by its first bytes."""
    name = path.name
    if name.endswith(".gz"):
        return Compression.GZIP
    if name.endswith(".zst"):
        return Compression.ZSTD
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_ZSTD_MAGIC))
    except OSError as exc:
        raise SinkError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head.startswith(_GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(_ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


class CompressedWriter(Protocol):
    """A byte stream that compresses into a file object it does not own."""

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None:
        """Write what the codec still buffers and its trailer; the file object stays open."""


class _PlainWriter:
    __slots__ = ("_out",)

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def write(self, data: bytes) -> None:
        self._out.write(data)

    def finish(self) -> None:
        return


class _GzipWriter:
    __slots__ = ("_gz",)

    def __init__(self, out: IO[bytes], *, level: int) -> None:
        # filename="" and mtime=0: otherwise the header carries the temp file's name and the
        # clock, and the same records would compress to different bytes on every run.
        self._gz = gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=out, mtime=0)

    def write(self, data: bytes) -> None:
        self._gz.write(data)

    def finish(self) -> None:
        # GzipFile.close() writes the trailer and never closes a fileobj it was handed.
        self._gz.close()


class _ZstdWriter:
    __slots__ = ("_zst",)

    def __init__(self, out: IO[bytes], *, level: int) -> None:
        # write_checksum: a torn or bit-flipped file fails loudly on read instead of yielding
        # wrong lines. closefd=False: the caller fsyncs and renames the file after finish().
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._zst = compressor.stream_writer(out, closefd=False)

    def write(self, data: bytes) -> None:
        self._zst.write(data)

    def finish(self) -> None:
        # Ending the frame writes everything and the checksum; unlike close(), it cannot
        # touch the file object beyond write() and flush().
        self._zst.flush(zstandard.FLUSH_FRAME)


def open_writer(
    fileobj: IO[bytes], compression: Compression, *, level: int | None = None
) -> CompressedWriter:
    """A streaming writer compressing into ``fileobj``; ``level`` defaults per codec.

    OSErrors from ``fileobj`` (disk full, I/O error) propagate unchanged, so the caller can
    name the file in the :class:`SinkError` it raises.
    """
    if compression is Compression.NONE:
        return _PlainWriter(fileobj)
    chosen = DEFAULT_LEVELS[compression] if level is None else level
    allowed = LEVEL_RANGES[compression]
    if chosen not in allowed:
        raise ConfigError(
            f"{compression} compression level must be {allowed.start}..{allowed.stop - 1},"
            f" got {chosen}"
        )
    if compression is Compression.GZIP:
        return _GzipWriter(fileobj, level=chosen)
    return _ZstdWriter(fileobj, level=chosen)


def iter_lines(path: Path, *, compression: Compression | None = None) -> Iterator[bytes]:
    """Yield the lines of ``path`` (each with its ``\\n``), decompressing as it goes.

    ``compression`` defaults to :func:`detect`. A truncated or corrupt file raises
    :class:`SinkError` naming it, after the lines that could be read.
    """
    kind = detect(path) if compression is None else compression
    try:
        with path.open("rb") as raw:
            yield from _lines(raw, kind)
    except OSError as exc:  # includes gzip.BadGzipFile
        raise SinkError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (EOFError, zstandard.ZstdError) as exc:
        raise SinkError(f"cannot read {path}: corrupt or truncated ({exc})") from exc


def _lines(raw: IO[bytes], kind: Compression) -> Iterator[bytes]:
    if kind is Compression.NONE:
        yield from raw
    elif kind is Compression.GZIP:
        # GzipFile reads members one after another and raises EOFError on a cut-off one.
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            yield from gz
    else:
        yield from _split_lines(_zstd_chunks(raw))


def _zstd_chunks(raw: IO[bytes]) -> Iterator[bytes]:
    """Decompressed pieces of every zstd frame in ``raw``; EOFError if the last is cut off.

    zstandard's stream reader silently ends at a truncated frame, and a half-written file
    must not read as a short complete one; so frames are decoded one by one with
    ``decompressobj`` and each must reach its end (where its checksum is verified too).
    Input goes in small pieces so one step's output stays bounded.
    """
    dctx = zstandard.ZstdDecompressor()
    frame = dctx.decompressobj()
    in_frame = False
    while piece := raw.read(_ZSTD_FEED):
        while piece:
            in_frame = True
            out = frame.decompress(piece)
            if out:
                yield out
            if not frame.eof:
                break
            # The frame ended inside this piece: what follows it starts the next frame.
            piece = frame.unused_data
            frame = dctx.decompressobj()
            in_frame = False
    if in_frame:
        raise EOFError("zstd frame ended before its end mark")


def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Re-cut a stream of byte chunks into lines ending in ``\\n`` (the last may not)."""
    partial: list[bytes] = []
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            line = chunk[start : end + 1]
            if partial:
                partial.append(line)
                line = b"".join(partial)
                partial.clear()
            yield line
            start = end + 1
        if start < len(chunk):
            partial.append(chunk[start:])
    if partial:
        yield b"".join(partial)
