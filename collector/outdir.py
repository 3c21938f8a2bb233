"""The output directory: its name, who may write into it, and which run it already holds.

* :func:`render_dir` turns ``output.dir`` (``exports/{date}``) into this run's directory.
* :class:`RunLock` makes a directory one run's at a time: ``.collector.lock`` names the holder
  (pid, host, run id, start), and the holder keeps an ``flock`` on it while it lives.
* :func:`write_manifest` marks a run as started (``.collector-run.json``);
  :func:`existing_run` tells what an earlier run left (manifest: unfinished, ``summary.json``:
  finished), and :func:`decide_start` turns that plus ``--resume`` / ``--overwrite`` into
  fresh, resume or overwrite, or a refusal that says which flag to use.

Lock protocol, and why each step::

    create  O_CREAT|O_EXCL, then flock(LOCK_EX), then write the holder: exactly one creator.
    exists  open it and flock(LOCK_EX|LOCK_NB):
            busy      -> a live process holds it: refuse, naming the holder (if the file
                         is still empty, or names a dead pid, a creation or takeover is in
                         flight: look again shortly, so the message names the winner)
            acquired  -> check it is still the file at the path (a racer may have replaced it:
                         start over), then read the holder:
                         other host           -> refuse: we cannot see its processes
                         same host, pid alive -> refuse (the pid may hold it without flock,
                                                 e.g. on a filesystem where flock is a no-op)
                         same host, pid gone  -> stale: write our own under a temp name,
                                                 flock it, rename it over the old one
    release unlink (only if the path is still ours), then close (drops the flock).

A crashed holder's flock vanishes with its process, so a stale lock is told from a live one
without trusting pids alone; pids are still checked, for filesystems where ``flock`` does not
work and as a second opinion that errs on the side of refusing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import os
import socket
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import orjson

from collector.errors import ConfigError, SinkError

LOCK_NAME: Final = ".collector.lock"
MANIFEST_NAME: Final = ".collector-run.json"
SUMMARY_NAME: Final = "summary.json"

PLACEHOLDERS: Final = ("date", "time", "run_id", "shard")

#: A lock or manifest larger than this is not one of ours.
_MAX_SMALL_FILE = 64 * 1024
#: Looks at an existing lock before giving up; with the wait below, about a second in all,
#: far longer than any creation or takeover takes.
_LOCK_ATTEMPTS = 50
#: Seconds to let a concurrent creation or takeover finish before looking again.
_TAKEOVER_WAIT = 0.02


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


# -- small atomic files --------------------------------------------------------------------


def _describe(exc: OSError, path: Path) -> str:
    return f"{exc.strerror or type(exc).__name__}: {path}"


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise SinkError(f"output path is not a directory: {directory}") from exc
    except OSError as exc:
        raise SinkError(f"cannot create output directory: {_describe(exc, directory)}") from exc


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
        raise SinkError(f"cannot write {path.name}: {_describe(exc, path)}") from exc


class _UnreadableError(Exception):
    """One of our small JSON files is there but unusable; the message says why."""


def _read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if it is absent."""
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_SMALL_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _UnreadableError(exc.strerror or str(exc)) from exc
    if len(data) > _MAX_SMALL_FILE:
        raise _UnreadableError("too large")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _UnreadableError(f"not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise _UnreadableError("not a JSON object")
    return obj


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the lock ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LockHolder:
    """Who holds (or held) an output directory's lock."""

    pid: int
    host: str
    run_id: str
    started_at: str

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on host {self.host}, since {self.started_at})"

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "pid": self.pid,
                "host": self.host,
                "run_id": self.run_id,
                "started_at": self.started_at,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> LockHolder | None:
        """The holder recorded in ``data``; None when it is not a lock we wrote."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        pid, host, run_id, started_at = (
            obj.get(k) for k in ("pid", "host", "run_id", "started_at")
        )
        if not (type(pid) is int and pid > 0 and isinstance(host, str)):
            return None
        if not (isinstance(run_id, str) and isinstance(started_at, str)):
            return None
        return cls(pid=pid, host=host, run_id=run_id, started_at=started_at)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just belongs to someone else
    return True


def _try_flock(fd: int) -> bool:
    """Take an exclusive flock without waiting; False if another open file holds it.

    Filesystems that cannot lock (ENOLCK, EOPNOTSUPP) count as "taken": the pid check is
    then all we have, as before flock existed.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return True
        raise
    return True


def _is_current(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not unlinked or replaced since opened)."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (at_path.st_dev, at_path.st_ino) == (mine.st_dev, mine.st_ino)


class RunLock:
    """An output directory held by this process; release it, or leave a ``with`` block."""

    __slots__ = ("_fd", "holder", "path", "taken_over")

    def __init__(
        self, *, path: Path, holder: LockHolder, fd: int, taken_over: LockHolder | None
    ) -> None:
        self.path = path
        #: What the lock file says about us.
        self.holder = holder
        #: The dead run whose stale lock we replaced, for the caller to log; None if none.
        self.taken_over = taken_over
        self._fd: int | None = fd

    @classmethod
    def acquire(
        cls,
        directory: Path,
        *,
        run_id: str,
        started_at: datetime | None = None,
        force: bool = False,
    ) -> RunLock:
        """Take ``directory`` (created if missing) for run ``run_id``, or raise SinkError.

        ``force`` also takes a lock whose holder this host cannot prove dead (another host's,
        or a live pid that does not hold the flock); a lock that is flock-held is never taken.
        """
        _ensure_dir(directory)
        path = directory / LOCK_NAME
        me = LockHolder(
            pid=os.getpid(),
            host=socket.gethostname(),
            run_id=run_id,
            started_at=_utc_text(started_at or datetime.now(UTC)),
        )
        try:
            for attempt in range(_LOCK_ATTEMPTS):
                fd = _create(path, me)
                if fd is not None:
                    return cls(path=path, holder=me, fd=fd, taken_over=None)
                last = attempt == _LOCK_ATTEMPTS - 1
                lock = _take_existing(path, me, force=force, last=last)
                if lock is not None:
                    return lock
        except OSError as exc:
            raise SinkError(f"cannot lock output directory: {_describe(exc, path)}") from exc
        raise SinkError(f"cannot lock output directory {directory}: its lock kept changing")

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and drop the flock. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # A lock left behind by a failed unlink is stale (our flock goes with the fd) and the
        # next run takes it over, so errors here are not worth failing a finished run for.
        try:
            with contextlib.suppress(OSError):
                # Unlink while still holding the flock, so nobody can lock this inode and then
                # find it gone; skip it if a forced takeover has replaced our file.
                if _is_current(fd, self.path):
                    self.path.unlink()
                    fsync_dir(self.path.parent)
        finally:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _create(path: Path, me: LockHolder) -> int | None:
    """Create the lock file exclusively and hold it; None if it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    except FileExistsError:
        return None
    try:
        # Blocking: a contender may hold the new inode for the instant it takes to read it.
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, me.to_json())
        os.fsync(fd)
        fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return fd


def _take_existing(path: Path, me: LockHolder, *, force: bool, last: bool) -> RunLock | None:
    """Take over a stale lock at ``path``; None to look again; SinkError if it is live.

    ``last``: no more looks are coming, so a lock still unreadable is reported as such.
    """
    try:
        # Read-write: over NFS, flock is emulated with fcntl locks, whose exclusive kind
        # needs a file open for writing.
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None  # released meanwhile: try to create it
    try:
        if not _try_flock(fd):
            holder = _read_holder(fd)
            settling = holder is None or (holder.pid != me.pid and _provably_dead(holder, me))
            if settling and not last:
                # Held, but not yet written (its creator is writing it) or naming a dead run
                # (someone is taking it over right now): look again shortly, to name the real
                # holder. Held and naming our own pid is another lock in this very process.
                time.sleep(_TAKEOVER_WAIT)
                return None
            raise SinkError(_in_use(path, holder))
        if not _is_current(fd, path):
            return None  # replaced or removed after we opened it
        holder = _read_holder(fd)
        if holder is None and not last:
            # Most likely its creator has not written it yet (it waits for our flock to go).
            time.sleep(_TAKEOVER_WAIT)
            return None
        if holder is None:
            raise SinkError(
                f"output directory {path.parent} has an unreadable lock file {path};"
                " remove it if no run is using this directory"
            )
        if not force:
            _refuse_unless_stale(path, holder, me)
        new_fd = _replace(path, me)
        return RunLock(path=path, holder=me, fd=new_fd, taken_over=holder)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> LockHolder | None:
    return LockHolder.from_json(os.pread(fd, _MAX_SMALL_FILE, 0))


def _in_use(path: Path, holder: LockHolder | None) -> str:
    who = holder.describe() if holder else f"another run (its lock file {path} is held)"
    return f"output directory {path.parent} is in use by {who}"


def _refuse_unless_stale(path: Path, holder: LockHolder, me: LockHolder) -> None:
    if holder.host != me.host:
        raise SinkError(
            f"output directory {path.parent} is locked by {holder.describe()}; this host cannot"
            f" tell whether it is still running: if host {holder.host} is no longer running it,"
            f" remove {path}"
        )
    if not _provably_dead(holder, me):
        raise SinkError(
            f"{_in_use(path, holder)}; if pid {holder.pid} is not a collector run, remove {path}"
        )


def _provably_dead(holder: LockHolder, me: LockHolder) -> bool:
    """Whether the process a lock names is gone (only knowable on this host).

    Our own pid in a lock file whose flock we could not be holding is a previous life of
    this pid (a restarted container reuses pids and hostnames), so it counts as gone.
    """
    if holder.host != me.host:
        return False
    return holder.pid == me.pid or not _pid_alive(holder.pid)


def _replace(path: Path, me: LockHolder) -> int:
    """Put our lock file in place of a stale one, atomically, already flock-held."""
    temp = path.with_name(f"{LOCK_NAME}.{me.pid}.tmp")
    fd = os.open(temp, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, me.to_json())
        os.fsync(fd)
        os.replace(temp, path)
        fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return fd


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
        run_id, started = manifest.run_id, _utc_text(manifest.started_at)
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
