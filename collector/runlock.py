"""The run lock: an output directory is one run's at a time.

:class:`RunLock` takes ``.collector.lock`` in the directory; the file names the holder (pid,
host, run id, start), and the holder keeps an ``flock`` on it while it lives. ``force``
(``--break-lock``) also takes a lock whose holder this host cannot prove dead.

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
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import orjson

from collector.errors import SinkError
from collector.outdir import MAX_SMALL_FILE, describe_os_error, ensure_dir, fsync_dir, utc_text

LOCK_NAME: Final = ".collector.lock"

#: Looks at an existing lock before giving up; with the wait below, about a second in all,
#: far longer than any creation or takeover takes.
_LOCK_ATTEMPTS = 50
#: Seconds to let a concurrent creation or takeover finish before looking again.
_TAKEOVER_WAIT = 0.02


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
        ensure_dir(directory)
        path = directory / LOCK_NAME
        me = LockHolder(
            pid=os.getpid(),
            host=socket.gethostname(),
            run_id=run_id,
            started_at=utc_text(started_at or datetime.now(UTC)),
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
            raise SinkError(
                f"cannot lock output directory: {describe_os_error(exc, path)}"
            ) from exc
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
    return LockHolder.from_json(os.pread(fd, MAX_SMALL_FILE, 0))


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
