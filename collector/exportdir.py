"""Claim an output directory for one run: name it, lock it, and decide fresh, resume or overwrite.

Order matters: the lock is taken before anything is read or written, so two runs can never
decide about the same directory at once; the manifest is written before the first output, so
a run killed at any later moment can be resumed.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from collector.config import Config
from collector.errors import ConfigError, SinkError
from collector.manifest import (
    MANIFEST_NAME,
    StartMode,
    config_fingerprint,
    decide_start,
    existing_run,
    find_unfinished,
    read_manifest,
    write_manifest,
)
from collector.outdir import render_dir
from collector.runlock import RunLock
from collector.shards import Shard
from collector.sinks import KINDS, STAGING, SUMMARY

log = structlog.get_logger("collector.exportdir")

_OUTPUTS = (*KINDS, "changes")
_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")


@dataclass(frozen=True, slots=True)
class Claimed:
    directory: Path
    run_id: str
    started: datetime
    mode: StartMode
    lock: RunLock


def fingerprint(config: Config, shard: Shard | None) -> str:
    """What must not change between a run and its resumption (no secrets, no tuning)."""
    desc: dict[str, Any] = {
        "accounts": [
            {
                "name": a.name,
                "ak": a.credentials.ak,
                "regions": list(a.regions),
                "projects": [[p.id, p.region] for p in a.projects],
                "iam": a.iam_endpoint,
                "endpoints": dict(sorted(a.endpoints.items())),
            }
            for a in config.accounts
        ],
        "paging": [config.paging.page_size, config.paging.offset_mode.value],
        "output": [config.output.dir, config.output.compression.value],
        "shard": None if shard is None else str(shard),
    }
    return config_fingerprint(desc)


def claim(
    config: Config,
    *,
    output_dir: Path | None,
    started: datetime,
    run_id: str,
    resume: bool,
    overwrite: bool,
    break_lock: bool,
    shard: Shard | None,
) -> Claimed:
    """Lock the run's directory and make it ready; ConfigError/SinkError say why not."""
    template = config.output.dir
    shard_name = "all" if shard is None else f"{shard.index}-of-{shard.count}"
    directory = output_dir or render_dir(template, started=started, run_id=run_id, shard=shard_name)
    if resume and output_dir is None:
        here = existing_run(directory) if directory.is_dir() else None
        if here is None or not here.resumable:
            # {date} past midnight, or a {time}/{run_id} template: find the run to finish.
            unfinished = find_unfinished(template)
            if unfinished:
                directory = unfinished[0].directory
    lock = RunLock.acquire(directory, run_id=run_id, started_at=started, force=break_lock)
    if lock.taken_over is not None:
        log.warning("lock.taken_over", directory=str(directory), was=lock.taken_over.describe())
    try:
        print_ = fingerprint(config, shard)
        mode = decide_start(
            existing_run(directory), resume=resume, overwrite=overwrite, fingerprint=print_
        )
        if mode is StartMode.RESUME:
            manifest = read_manifest(directory)
            assert manifest is not None, "decide_start only resumes a run with a manifest"
            run_id, started = manifest.run_id, manifest.started_at
            log.info("run.resume", run_id=run_id, directory=str(directory))
        else:
            if mode is StartMode.OVERWRITE:
                _clear(directory)
            write_manifest(directory, run_id=run_id, started_at=started, fingerprint=print_)
    except BaseException:
        lock.release()
        raise
    return Claimed(directory=directory, run_id=run_id, started=started, mode=mode, lock=lock)


def _clear(directory: Path) -> None:
    """Remove an earlier run's files: its summary first, so nothing half-removed looks whole."""
    try:
        (directory / SUMMARY).unlink(missing_ok=True)
        for kind in _OUTPUTS:
            for ending in _SUFFIXES:
                (directory / f"{kind}{ending}").unlink(missing_ok=True)
        (directory / MANIFEST_NAME).unlink(missing_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot clear the earlier run in {directory}: {exc.strerror}") from exc
    with contextlib.suppress(OSError):
        shutil.rmtree(directory / STAGING)


__all__ = ["Claimed", "ConfigError", "claim", "fingerprint"]
