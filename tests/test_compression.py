"""Streaming compression: bytes checked with the stdlib and zstandard's own one-shot decoders."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from collector.compression import (
    Compression,
    detect,
    iter_lines,
    open_writer,
    suffix,
)
from collector.errors import ConfigError, SinkError

LINES = [
    b'{"n": %d, "cluster_id": "c-%05d", "note": "\xc3\xa9t\xc3\xa9"}\n' % (i, i)
    for i in range(5000)
]
PAYLOAD = b"".join(LINES)


def compress_to_bytes(compression: Compression, lines: list[bytes], **kw: int) -> bytes:
    out = io.BytesIO()
    writer = open_writer(out, compression, **kw)
    for line in lines:
        writer.write(line)
    writer.finish()
    return out.getvalue()


def zstd_decompress(data: bytes) -> bytes:
    # The stream writer does not know the content size up front, so decode with a stream.
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()


def test_suffixes_are_the_documented_file_endings() -> None:
    """none, gzip and zstd files end .jsonl, .jsonl.gz and .jsonl.zst."""
    assert [suffix(c) for c in Compression] == [".jsonl", ".jsonl.gz", ".jsonl.zst"]
    assert [c.value for c in Compression] == ["none", "gzip", "zstd"]


def test_none_writes_the_bytes_unchanged() -> None:
    """Without compression the file holds exactly the lines written."""
    assert compress_to_bytes(Compression.NONE, LINES) == PAYLOAD


def test_gzip_output_decodes_with_the_stdlib() -> None:
    """gzip output is a standard gzip stream: gzip.decompress returns the lines written."""
    assert gzip.decompress(compress_to_bytes(Compression.GZIP, LINES)) == PAYLOAD


def test_zstd_output_decodes_with_zstandard() -> None:
    """zstd output is a standard zstd frame that zstandard's decoder reads back."""
    data = compress_to_bytes(Compression.ZSTD, LINES)
    assert data[:4] == b"\x28\xb5\x2f\xfd"
    assert zstd_decompress(data) == PAYLOAD


def test_gzip_default_level_is_6_and_bytes_are_reproducible(tmp_path: Path) -> None:
    """gzip at the default level deflates like zlib level 6; no name or time in the header."""
    target = tmp_path / ".records.jsonl.gz.run-1.tmp"
    with target.open("wb") as fh:  # a named file: its name must not leak into the header
        writer = open_writer(fh, Compression.GZIP)
        writer.write(PAYLOAD)
        writer.finish()
    data = target.read_bytes()
    flags, mtime = data[3], data[4:8]
    assert flags == 0  # no FNAME, no FCOMMENT, no FEXTRA
    assert mtime == b"\0\0\0\0"
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    expected_body = deflate.compress(PAYLOAD) + deflate.flush()
    assert data[10:-8] == expected_body
    assert compress_to_bytes(Compression.GZIP, LINES) == compress_to_bytes(Compression.GZIP, LINES)


def test_levels_are_configurable_and_checked() -> None:
    """A level changes the output; an out-of-range level is a ConfigError naming the range."""
    fast = compress_to_bytes(Compression.ZSTD, LINES, level=1)
    strong = compress_to_bytes(Compression.ZSTD, LINES, level=19)
    assert zstd_decompress(fast) == zstd_decompress(strong) == PAYLOAD
    assert len(strong) < len(fast)
    assert compress_to_bytes(Compression.ZSTD, LINES) == compress_to_bytes(
        Compression.ZSTD, LINES, level=3
    )
    with pytest.raises(ConfigError, match=r"gzip compression level must be 1\.\.9, got 10"):
        open_writer(io.BytesIO(), Compression.GZIP, level=10)
    with pytest.raises(ConfigError, match=r"zstd compression level must be 1\.\.22, got 0"):
        open_writer(io.BytesIO(), Compression.ZSTD, level=0)


@pytest.mark.parametrize("compression", list(Compression))
def test_finish_leaves_the_file_open_for_fsync_and_rename(
    compression: Compression, tmp_path: Path
) -> None:
    """After finish() the caller can still flush, fsync and rename the file it owns."""
    temp, final = tmp_path / ".out.tmp", tmp_path / f"out{suffix(compression)}"
    with temp.open("wb") as fh:
        writer = open_writer(fh, compression)
        writer.write(PAYLOAD)
        writer.finish()
        assert not fh.closed
        fh.flush()
        os.fsync(fh.fileno())
    temp.rename(final)
    assert b"".join(iter_lines(final)) == PAYLOAD


class FullDisk(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def write_incompressible(compression: Compression) -> None:
    # gzip writes its header at once, the others on the first write or at finish.
    writer = open_writer(FullDisk(), compression)  # type: ignore[arg-type]
    writer.write(os.urandom(1 << 20))  # incompressible: the codec must write through
    writer.finish()


@pytest.mark.parametrize("compression", list(Compression))
def test_a_full_disk_surfaces_as_the_os_error(compression: Compression) -> None:
    """ENOSPC from the file reaches the caller as OSError, for it to name the file."""
    with pytest.raises(OSError, match="No space left") as info:
        write_incompressible(compression)
    assert info.value.errno == errno.ENOSPC


def test_iter_lines_reads_files_other_tools_wrote(tmp_path: Path) -> None:
    """Plain, gzip.open and zstandard one-shot files read back line for line."""
    plain = tmp_path / "a.jsonl"
    plain.write_bytes(PAYLOAD)
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(PAYLOAD)
    zst = tmp_path / "a.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(PAYLOAD))
    for path in (plain, gz, zst):
        assert list(iter_lines(path)) == LINES, path


def test_iter_lines_reads_appended_members_and_frames(tmp_path: Path) -> None:
    """Concatenated gzip members and zstd frames read as one file; a last line may lack \\n."""
    gz = tmp_path / "b.jsonl.gz"
    gz.write_bytes(gzip.compress(b"one\ntw") + gzip.compress(b"o\nthree"))
    zst = tmp_path / "b.jsonl.zst"
    cctx = zstandard.ZstdCompressor()
    zst.write_bytes(cctx.compress(b"one\ntw") + cctx.compress(b"o\nthree"))
    for path in (gz, zst):
        assert list(iter_lines(path)) == [b"one\n", b"two\n", b"three"]


def test_compression_is_detected_by_magic_when_the_name_says_nothing(tmp_path: Path) -> None:
    """A gzip or zstd file without its suffix is still recognized and decoded."""
    gz, zst, plain = tmp_path / "g.jsonl", tmp_path / "z.jsonl", tmp_path / "p.jsonl"
    gz.write_bytes(gzip.compress(PAYLOAD))
    zst.write_bytes(zstandard.ZstdCompressor().compress(PAYLOAD))
    plain.write_bytes(PAYLOAD)
    assert [detect(p) for p in (gz, zst, plain)] == [
        Compression.GZIP,
        Compression.ZSTD,
        Compression.NONE,
    ]
    assert list(iter_lines(gz)) == list(iter_lines(zst)) == LINES


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
@pytest.mark.parametrize("cut", [1, 4, 1000])
def test_a_truncated_file_is_an_error_not_a_short_file(
    compression: Compression, cut: int, tmp_path: Path
) -> None:
    """A file cut short (a torn write) raises SinkError naming it instead of reading as complete."""
    path = tmp_path / f"t{suffix(compression)}"
    path.write_bytes(compress_to_bytes(compression, LINES)[:-cut])
    with pytest.raises(SinkError, match=f"cannot read {path}"):
        for _ in iter_lines(path):
            pass


def test_a_corrupt_zstd_file_fails_its_checksum(tmp_path: Path) -> None:
    """A flipped byte in zstd's checksum is detected (the writer stores one)."""
    data = bytearray(compress_to_bytes(Compression.ZSTD, LINES))
    data[-1] ^= 0xFF
    path = tmp_path / "c.jsonl.zst"
    path.write_bytes(bytes(data))
    with pytest.raises(SinkError, match="corrupt or truncated"):
        list(iter_lines(path))


# -- memory --------------------------------------------------------------------------------

TOTAL = 50 * 1024 * 1024
MEMORY_CEILING = 4 * 1024 * 1024


def chunk_pool() -> list[bytes]:
    """16 distinct chunks of ~600-byte record-like lines (~3 MB), built before tracing starts.

    Cycling a pool keeps the test fast (no line building under tracemalloc) while the data
    still varies enough that the codecs do real work.
    """
    pool = []
    for c in range(16):
        lines = []
        for i in range(c * 320, (c + 1) * 320):
            pad = bytes(((i * 2654435761) >> s) & 0xFF for s in range(0, 32, 8)).hex()
            lines.append(b'{"n":%d,"cluster_id":"%s","raw":"%s"}\n' % (i, pad.encode(), b"x" * 540))
        pool.append(b"".join(lines))
    return pool


def fifty_megabytes(pool: list[bytes]) -> Iterator[bytes]:
    written, turn = 0, 0
    while written < TOTAL:
        chunk = pool[turn % len(pool)]
        turn += 1
        written += len(chunk)
        yield chunk


class CountingSink(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        size = len(data)  # type: ignore[arg-type]
        self.size += size
        return size


@pytest.mark.parametrize("compression", list(Compression))
def test_writing_50_mb_keeps_memory_bounded(compression: Compression) -> None:
    """Compressing 50 MB of lines never holds more than a few MB in Python memory."""
    sink, pool = CountingSink(), chunk_pool()
    tracemalloc.start()
    try:
        writer = open_writer(sink, compression)  # type: ignore[arg-type]
        for chunk in fifty_megabytes(pool):
            writer.write(chunk)
        writer.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size > 0
    assert peak < MEMORY_CEILING, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("compression", list(Compression))
def test_reading_50_mb_keeps_memory_bounded(compression: Compression, tmp_path: Path) -> None:
    """iter_lines streams a 50 MB file: every line comes back, memory stays small."""
    path = tmp_path / f"big{suffix(compression)}"
    written = hashlib.sha256()
    with path.open("wb") as fh:
        writer = open_writer(fh, compression)
        for chunk in fifty_megabytes(chunk_pool()):
            writer.write(chunk)
            written.update(chunk)
        writer.finish()
    read = hashlib.sha256()
    tracemalloc.start()
    try:
        for line in iter_lines(path):
            assert line.endswith(b"\n")
            read.update(line)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read.hexdigest() == written.hexdigest()
    assert peak < MEMORY_CEILING, f"peak {peak / 2**20:.1f} MiB"
