"""Output directory: template names, the run lock (against real processes), manifests, resume."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from collector.errors import ConfigError, SinkError
from collector.manifest import (
    MANIFEST_NAME,
    SUMMARY_NAME,
    ExistingRun,
    StartMode,
    config_fingerprint,
    decide_start,
    existing_run,
    find_unfinished,
    read_manifest,
    write_manifest,
)
from collector.outdir import glob_pattern, render_dir
from collector.runlock import LOCK_NAME, RunLock

# 2024-02-29 23:59:58 UTC, seen from UTC+05:30: the local date is already March 1st.
STARTED = datetime(2024, 3, 1, 5, 29, 58, tzinfo=timezone(timedelta(hours=5, minutes=30)))
HOST = socket.gethostname()


# -- templates -----------------------------------------------------------------------------


def test_template_placeholders_render_in_utc() -> None:
    """{date} and {time} are the UTC start, whatever zone the datetime carries."""
    rendered = render_dir("exports/{date}/{time}-{run_id}", started=STARTED, run_id="r1")
    assert rendered == Path("exports/2024-02-29/235958-r1")


def test_template_without_placeholders_and_with_literal_braces() -> None:
    """A plain path is itself; {{ and }} are literal braces."""
    assert render_dir("/srv/out", started=STARTED, run_id="r") == Path("/srv/out")
    assert render_dir("a/{{x}}/{date}", started=STARTED, run_id="r") == Path("a/{x}/2024-02-29")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("exports/{day}", r"unknown placeholder \{day\}"),
        ("exports/{}", r"unknown placeholder \{\}"),
        ("exports/{0}", r"unknown placeholder \{0\}"),
        ("exports/{date.year}", r"unknown placeholder \{date\.year\}"),
        ("exports/{date:%Y}", r"\{date:%Y\} takes no format"),
        ("exports/{date!r}", r"\{date!r\} takes no format"),
        ("exports/{date", "malformed braces"),
        ("exports/date}", "malformed braces"),
    ],
)
def test_bad_templates_are_config_errors_listing_the_valid_placeholders(
    template: str, message: str
) -> None:
    """Unknown names, formats and unbalanced braces name the problem and the valid set."""
    with pytest.raises(ConfigError, match=message) as info:
        render_dir(template, started=STARTED, run_id="r")
    assert "valid placeholders are {date}, {time}, {run_id}" in str(info.value)


def test_empty_template_is_a_config_error() -> None:
    """An empty output.dir is refused rather than writing into the current directory."""
    with pytest.raises(ConfigError, match=r"output\.dir is empty"):
        render_dir("", started=STARTED, run_id="r")


def test_glob_pattern_matches_every_rendering(tmp_path: Path) -> None:
    """The glob form of a template finds directories rendered from it, and escapes literals."""
    template = str(tmp_path / "x[1]" / "{date}-{run_id}")
    made = render_dir(template, started=STARTED, run_id="abc")
    made.mkdir(parents=True)
    (tmp_path / "x[1]" / "unrelated").mkdir()
    assert glob_pattern(template) == str(tmp_path / "x[[]1]" / "*-*")
    assert glob.glob(glob_pattern(template)) == [str(made)]


# -- the lock ------------------------------------------------------------------------------


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a real process that stays alive for the test."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped (so it is not a zombie)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(directory: Path, *, pid: int, host: str = HOST, run_id: str = "old") -> Path:
    path = directory / LOCK_NAME
    body = {"pid": pid, "host": host, "run_id": run_id, "started_at": "2024-02-29T23:00:00Z"}
    path.write_text(json.dumps(body))
    return path


def test_acquire_writes_the_holder_and_release_removes_it(tmp_path: Path) -> None:
    """The lock file holds pid, host, run id and start as JSON, and is gone after release."""
    directory = tmp_path / "new" / "dir"  # created on the way
    lock = RunLock.acquire(directory, run_id="r1", started_at=STARTED)
    written = json.loads((directory / LOCK_NAME).read_text())
    assert written == {
        "pid": os.getpid(),
        "host": HOST,
        "run_id": "r1",
        "started_at": "2024-02-29T23:59:58Z",
    }
    assert lock.taken_over is None
    lock.release()
    assert not (directory / LOCK_NAME).exists()
    lock.release()  # idempotent


def test_context_manager_releases(tmp_path: Path) -> None:
    """Leaving the with block removes the lock, even on an exception."""
    with pytest.raises(RuntimeError), RunLock.acquire(tmp_path, run_id="r"):
        raise RuntimeError
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_second_acquire_in_the_same_process_is_refused(tmp_path: Path) -> None:
    """The flock refuses a second holder even with the same pid; the first keeps its lock."""
    with RunLock.acquire(tmp_path, run_id="first", started_at=STARTED):
        with pytest.raises(SinkError) as info:
            RunLock.acquire(tmp_path, run_id="second")
        assert str(info.value) == (
            f"output directory {tmp_path} is in use by run first"
            f" (pid {os.getpid()} on host {HOST}, since 2024-02-29T23:59:58Z)"
        )
        assert json.loads((tmp_path / LOCK_NAME).read_text())["run_id"] == "first"


def test_a_lock_held_by_another_process_is_refused(tmp_path: Path) -> None:
    """A run in another process holding the lock makes acquire fail at once, naming it."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from collector.runlock import RunLock\n"
        "lock = RunLock.acquire(Path(sys.argv[1]), run_id='holder')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
        "lock.release()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],  # import this checkout's collector
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        try:
            assert holder.stdout.readline() == "locked\n"
            with pytest.raises(
                SinkError, match=rf"in use by run holder \(pid {holder.pid} on host"
            ):
                RunLock.acquire(tmp_path, run_id="second")
            holder.stdin.close()  # lets the holder release its lock and exit
            assert holder.wait(timeout=10) == 0
        finally:
            holder.kill()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_naming_a_live_pid_is_refused(tmp_path: Path, live_pid: int) -> None:
    """A lock file whose pid is alive on this host is not taken, and the message names it."""
    path = write_lock(tmp_path, pid=live_pid)
    with pytest.raises(SinkError) as info:
        RunLock.acquire(tmp_path, run_id="new")
    message = str(info.value)
    assert f"output directory {tmp_path} is in use by run old" in message
    assert f"pid {live_pid} on host {HOST}, since 2024-02-29T23:00:00Z" in message
    assert json.loads(path.read_text())["pid"] == live_pid  # untouched


def test_a_stale_lock_is_taken_over(tmp_path: Path, dead_pid: int) -> None:
    """A lock whose pid has exited on this host is replaced, and the old holder reported."""
    write_lock(tmp_path, pid=dead_pid, run_id="crashed")
    with RunLock.acquire(tmp_path, run_id="new") as lock:
        assert lock.taken_over is not None
        assert (lock.taken_over.run_id, lock.taken_over.pid) == ("crashed", dead_pid)
        written = json.loads((tmp_path / LOCK_NAME).read_text())
        assert (written["run_id"], written["pid"]) == ("new", os.getpid())
        # and it is really held: another acquire is refused
        with pytest.raises(SinkError, match="in use by run new"):
            RunLock.acquire(tmp_path, run_id="third")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temp files left


RACER = """
import sys, time
from pathlib import Path
from collector.errors import SinkError
from collector.runlock import RunLock
directory, go = Path(sys.argv[1]), Path(sys.argv[2])
deadline = time.monotonic() + 10
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.001)
try:
    lock = RunLock.acquire(directory, run_id=sys.argv[3])
except SinkError as exc:
    print("refused", exc, flush=True)
else:
    print("won", flush=True)
    sys.stdin.read()  # hold the lock until every racer has tried
    lock.release()
"""


def race(directory: Path, racers: int = 8) -> list[str]:
    """Release ``racers`` processes on ``directory`` at once; what each said, in order."""
    go = directory.parent / f"{directory.name}.go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(directory), str(go), f"racer-{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        for i in range(racers)
    ]
    try:
        go.touch()
        # The winner holds on until its stdin closes, so every refusal comes while it holds.
        verdicts = [proc.stdout.readline() for proc in procs]  # type: ignore[union-attr]
        held = json.loads((directory / LOCK_NAME).read_text())["run_id"]
        assert verdicts[int(held.removeprefix("racer-"))].startswith("won"), verdicts
    finally:
        for proc in procs:
            proc.communicate(input="", timeout=10)
    return verdicts


def assert_one_winner(verdicts: list[str]) -> None:
    winners = [v for v in verdicts if v.startswith("won")]
    assert len(winners) == 1, verdicts
    losers = [v for v in verdicts if not v.startswith("won")]
    assert all("in use by run racer-" in v for v in losers), verdicts


def test_racing_takeovers_of_a_stale_lock_leave_one_winner(tmp_path: Path, dead_pid: int) -> None:
    """Eight processes at once on a stale lock: one holds it, the rest name that one."""
    write_lock(tmp_path, pid=dead_pid)
    assert_one_winner(race(tmp_path))
    assert list(tmp_path.iterdir()) == []  # released, no temp files left


def test_racing_creators_leave_one_winner(tmp_path: Path) -> None:
    """Eight processes at once on a free directory: one holds it, the rest name that one."""
    assert_one_winner(race(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_stale_lock_with_our_own_pid_is_taken_over(tmp_path: Path) -> None:
    """Our pid in a lock we do not hold is a previous life of this pid (restarted container)."""
    write_lock(tmp_path, pid=os.getpid(), run_id="previous-life")
    with RunLock.acquire(tmp_path, run_id="new") as lock:
        assert lock.taken_over is not None
        assert lock.taken_over.run_id == "previous-life"


def test_another_hosts_lock_is_refused_unless_forced(tmp_path: Path) -> None:
    """We cannot see another host's processes: refuse and say how to clear it; force takes it."""
    path = write_lock(tmp_path, pid=1234, host="other-node")
    with pytest.raises(SinkError) as info:
        RunLock.acquire(tmp_path, run_id="new")
    message = str(info.value)
    assert "locked by run old (pid 1234 on host other-node" in message
    assert f"if host other-node is no longer running it, remove {path}" in message
    with RunLock.acquire(tmp_path, run_id="new", force=True) as lock:
        assert lock.taken_over is not None
        assert lock.taken_over.host == "other-node"


def test_an_unreadable_lock_is_refused(tmp_path: Path) -> None:
    """A lock file that is not ours (or half-written) is never silently taken."""
    (tmp_path / LOCK_NAME).write_text("garbage")
    with pytest.raises(SinkError, match="unreadable lock file"):
        RunLock.acquire(tmp_path, run_id="new")


def test_release_leaves_a_lock_that_replaced_ours(tmp_path: Path) -> None:
    """After a forced takeover, the old holder's release does not delete the new lock."""
    first = RunLock.acquire(tmp_path, run_id="first")
    (tmp_path / LOCK_NAME).unlink()  # e.g. an operator removed it...
    with RunLock.acquire(tmp_path, run_id="second"):  # ...and another run started
        first.release()
        assert json.loads((tmp_path / LOCK_NAME).read_text())["run_id"] == "second"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_an_unwritable_directory_is_a_sink_error(tmp_path: Path) -> None:
    """No permission to create the lock: SinkError naming the path."""
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(SinkError, match="cannot lock output directory: Permission denied"):
            RunLock.acquire(tmp_path, run_id="r")
    finally:
        tmp_path.chmod(0o755)


def test_a_read_only_filesystem_is_a_sink_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EROFS when creating the lock: SinkError with the OS's words and the path (runs as root)."""
    real_open = os.open

    def read_only(path: str | os.PathLike[str], flags: int, *args: int, **kw: int) -> int:
        if str(path).endswith(LOCK_NAME):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(SinkError) as info:
        RunLock.acquire(tmp_path, run_id="r")
    assert str(info.value) == (
        f"cannot lock output directory: Read-only file system: {tmp_path / LOCK_NAME}"
    )


def test_an_output_path_that_is_a_file_is_a_sink_error(tmp_path: Path) -> None:
    """A file where the directory should be is reported as such."""
    (tmp_path / "out").write_text("")
    with pytest.raises(SinkError, match="output path is not a directory"):
        RunLock.acquire(tmp_path / "out", run_id="r")


# -- manifests, fingerprints and existing runs ---------------------------------------------


def test_manifest_round_trip(tmp_path: Path) -> None:
    """What write_manifest stores, read_manifest returns; the file is plain JSON."""
    started = datetime(2024, 3, 1, 1, 2, 3, 456789, tzinfo=UTC)
    written = write_manifest(tmp_path, run_id="r1", started_at=started, fingerprint="f" * 64)
    assert read_manifest(tmp_path) == written
    assert json.loads((tmp_path / MANIFEST_NAME).read_text()) == {
        "run_id": "r1",
        "started_at": "2024-03-01T01:02:03.456789Z",
        "fingerprint": "f" * 64,
    }
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]  # no temp left


def test_missing_and_broken_manifests(tmp_path: Path) -> None:
    """No manifest is None; a broken one is a SinkError naming it."""
    assert read_manifest(tmp_path) is None
    (tmp_path / MANIFEST_NAME).write_text('{"run_id": 1}')
    with pytest.raises(SinkError, match=r"unreadable run manifest .*must be strings"):
        read_manifest(tmp_path)


def test_fingerprint_is_sha256_of_sorted_json_and_ignores_key_order() -> None:
    """Key order at any depth does not matter; values do; the hash is the documented one."""
    a = {"accounts": [{"name": "prod", "regions": ["x"]}], "compression": "gzip"}
    b = {"compression": "gzip", "accounts": [{"regions": ["x"], "name": "prod"}]}
    expected = hashlib.sha256(
        b'{"accounts":[{"name":"prod","regions":["x"]}],"compression":"gzip"}'
    ).hexdigest()
    assert config_fingerprint(a) == config_fingerprint(b) == expected
    assert config_fingerprint({**a, "compression": "zstd"}) != expected


def summary(directory: Path, *, run_id: str, status: str) -> None:
    body = {"run_id": run_id, "status": status, "started_at": "2024-02-29T22:00:00Z"}
    (directory / SUMMARY_NAME).write_text(json.dumps(body))


def test_an_empty_directory_holds_no_run(tmp_path: Path) -> None:
    """No summary, no manifest: nothing there; a fresh run may start."""
    assert existing_run(tmp_path) is None
    assert decide_start(None, resume=False, overwrite=False, fingerprint="f") is StartMode.FRESH
    assert decide_start(None, resume=True, overwrite=False, fingerprint="f") is StartMode.FRESH


def test_an_unfinished_run_is_found_from_its_manifest(tmp_path: Path) -> None:
    """A manifest without summary is an unfinished run: resumable with the same config."""
    write_manifest(tmp_path, run_id="r1", started_at=STARTED, fingerprint="f1")
    run = existing_run(tmp_path)
    assert run is not None
    assert (run.run_id, run.started_at, run.fingerprint) == ("r1", "2024-02-29T23:59:58Z", "f1")
    assert run.resumable
    assert decide_start(run, resume=True, overwrite=False, fingerprint="f1") is StartMode.RESUME
    with pytest.raises(ConfigError, match="config changed since the interrupted run"):
        decide_start(run, resume=True, overwrite=False, fingerprint="f2")
    with pytest.raises(ConfigError, match=r"unfinished run r1 .*pass --resume to continue it"):
        decide_start(run, resume=False, overwrite=False, fingerprint="f1")
    assert decide_start(run, resume=False, overwrite=True, fingerprint="f2") is StartMode.OVERWRITE


def test_a_finished_run_is_found_from_its_summary(tmp_path: Path) -> None:
    """A summary means a finished run: refused unless --overwrite, and not resumable."""
    write_manifest(tmp_path, run_id="r1", started_at=STARTED, fingerprint="f1")
    summary(tmp_path, run_id="r1", status="ok")
    run = existing_run(tmp_path)
    assert run is not None
    assert (run.run_id, run.status, run.resumable) == ("r1", "ok", False)
    with pytest.raises(ConfigError, match=r"run r1 \(status ok.*pass --overwrite to replace it"):
        decide_start(run, resume=False, overwrite=False, fingerprint="f1")
    with pytest.raises(ConfigError, match="cannot resume"):
        decide_start(run, resume=True, overwrite=False, fingerprint="f1")


def test_a_run_stopped_by_a_signal_can_be_resumed(tmp_path: Path) -> None:
    """summary status interrupted plus its manifest: --resume continues it."""
    write_manifest(tmp_path, run_id="r1", started_at=STARTED, fingerprint="f1")
    summary(tmp_path, run_id="r1", status="interrupted")
    run = existing_run(tmp_path)
    assert run is not None
    assert run.resumable
    assert decide_start(run, resume=True, overwrite=False, fingerprint="f1") is StartMode.RESUME


def test_a_summary_from_an_older_run_without_manifest_is_finished(tmp_path: Path) -> None:
    """A directory from before manifests existed still counts as holding a run."""
    summary(tmp_path, run_id="old", status="partial")
    run = existing_run(tmp_path)
    assert run == ExistingRun(
        directory=tmp_path,
        run_id="old",
        status="partial",
        started_at="2024-02-29T22:00:00Z",
        fingerprint=None,
        has_summary=True,
        has_manifest=False,
    )


def test_unreadable_state_files_still_block_a_new_run(tmp_path: Path) -> None:
    """A corrupt summary is a run we cannot identify: refused without --overwrite, no crash."""
    (tmp_path / SUMMARY_NAME).write_text("{not json")
    run = existing_run(tmp_path)
    assert run is not None
    assert run.run_id is None
    assert not run.resumable
    with pytest.raises(ConfigError, match="cannot be read; pass --overwrite"):
        decide_start(run, resume=False, overwrite=False, fingerprint="f")


def test_resume_and_overwrite_together_are_refused() -> None:
    """The two flags contradict each other."""
    with pytest.raises(ConfigError, match="cannot be used together"):
        decide_start(None, resume=True, overwrite=True, fingerprint="f")


def test_find_unfinished_looks_past_todays_name(tmp_path: Path) -> None:
    """--resume after midnight finds yesterday's unfinished run; finished ones are skipped."""
    template = str(tmp_path / "{date}")
    day1 = render_dir(template, started=STARTED, run_id="a")
    day2 = render_dir(template, started=STARTED + timedelta(days=1), run_id="b")
    day0 = render_dir(template, started=STARTED - timedelta(days=1), run_id="c")
    for directory in (day0, day1, day2):
        directory.mkdir()
    write_manifest(day0, run_id="c", started_at=STARTED - timedelta(days=1), fingerprint="f")
    write_manifest(day1, run_id="a", started_at=STARTED, fingerprint="f")
    write_manifest(day2, run_id="b", started_at=STARTED + timedelta(days=1), fingerprint="f")
    summary(day2, run_id="b", status="ok")
    assert [run.run_id for run in find_unfinished(template)] == ["a", "c"]
    assert find_unfinished(template)[0].directory == tmp_path / "2024-02-29"


def test_shard_placeholder_names_the_slice() -> None:
    """{shard} renders as K-of-N (or all), so each shard of a Job gets its own directory."""
    started = datetime(2026, 11, 24, 2, 15, 0, tzinfo=UTC)
    assert render_dir(
        "exports/{date}/{shard}", started=started, run_id="r", shard="1-of-4"
    ) == Path("exports/2026-11-24/1-of-4")
    assert render_dir("exports/{shard}", started=started, run_id="r") == Path("exports/all")
