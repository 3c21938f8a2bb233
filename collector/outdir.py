"""The output directory: what it is called, and the filesystem basics of writing into it.

* :func:`render_dir` turns ``output.dir`` (``exports/{date}``) into this run's directory;
  :func:`glob_pattern` matches every directory a template can name.
* :func:`ensure_dir`, :func:`fsync_dir` and the helpers beside them are shared by everything that
  writes there: the run lock (:mod:`collector.runlock`), the run manifest
  (:mod:`collector.manifest`) and the sinks.
"""

from __future__ import annotations

import glob
import os
import string
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from collector.errors import ConfigError, SinkError

PLACEHOLDERS: Final = ("date", "time", "run_id", "shard")

#: A lock or manifest larger than this is not one of ours.
MAX_SMALL_FILE = 64 * 1024


# -- the directory's name ------------------------------------------------------------------


def _fields(template: str) -> list[tuple[str, str | None]]:
    """(literal text, placeholder or None) pairs; ConfigError for anything but our names."""
    valid = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
    hint = f"valid placeholders are {valid} (write {{{{ and }}}} for literal braces)"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"output.dir {template!r}: malformed braces ({exc}); {hint}") from exc
    pieces: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            pieces.append((literal, None))
            continue
        shown = (
            "{"
            + name
            + (f"!{conversion}" if conversion else "")
            + (f":{spec}" if spec else "")
            + "}"
        )
        if name not in PLACEHOLDERS:
            raise ConfigError(f"output.dir {template!r}: unknown placeholder {shown}; {hint}")
        if spec or conversion:
            raise ConfigError(
                f"output.dir {template!r}: {shown} takes no format or conversion; {hint}"
            )
        pieces.append((literal, name))
    return pieces


def render_dir(template: str, *, started: datetime, run_id: str, shard: str = "all") -> Path:
    """This run's output directory from the ``output.dir`` template.

    ``{date}`` is the UTC start date (YYYY-MM-DD), ``{time}`` the UTC start time (HHMMSS),
    ``{run_id}`` the run id, ``{shard}`` the shard (``K-of-N``, or ``all``). UTC so that the
    name does not depend on the machine's zone.
    """
    if started.tzinfo is None:
        raise ValueError("started must be timezone-aware")
    moment = started.astimezone(UTC)
    values = {
        "date": f"{moment:%Y-%m-%d}",
        "time": f"{moment:%H%M%S}",
        "run_id": run_id,
        "shard": shard,
    }
    rendered = "".join(
        literal + (values[name] if name else "") for literal, name in _fields(template)
    )
    if not rendered.strip():
        raise ConfigError("output.dir is empty")
    return Path(rendered)


def glob_pattern(template: str) -> str:
    """A glob matching every directory ``template`` can render to (placeholders become ``*``)."""
    return "".join(
        glob.escape(literal) + ("*" if name else "") for literal, name in _fields(template)
    )


# -- the basics of writing into it ---------------------------------------------------------


def describe_os_error(exc: OSError, path: Path) -> str:
    """``exc`` in a few words, and the path it concerns, for a SinkError's message."""
    return f"{exc.strerror or type(exc).__name__}: {path}"


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents) if missing; SinkError if it cannot be one."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise SinkError(f"output path is not a directory: {directory}") from exc
    except OSError as exc:
        raise SinkError(
            f"cannot create output directory: {describe_os_error(exc, directory)}"
        ) from exc


def utc_text(moment: datetime) -> str:
    """``moment`` as UTC to the second: ``2024-02-29T23:59:58Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
