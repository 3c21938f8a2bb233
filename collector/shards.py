"""Splitting the fleet between N cooperating runs: ``--shard K/N`` and ``--shard auto``.

Shards are numbered from 0, as Kubernetes numbers an Indexed Job's pods
(``JOB_COMPLETION_INDEX`` runs 0..completions-1), so ``--shard auto`` and an explicit
``--shard K/N`` name the same slice. A cluster belongs to exactly one shard, chosen from a
SHA-256 of its id: the same on every machine, process and Python version (unlike ``hash()``,
which is salted per process), and it does not depend on discovery order, so shards that list
the fleet at different moments still agree on who owns what.

Whole accounts and projects are not split: every shard discovers them all and keeps only the
clusters it owns.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from collector.errors import ConfigError

#: The variable Kubernetes sets in each pod of an Indexed Job.
INDEX_VARIABLE: Final = "JOB_COMPLETION_INDEX"

# ASCII digits only: \d would also accept other scripts' digits, and int() would take "+1".
_EXPLICIT = re.compile(r"([0-9]+)/([0-9]+)", re.ASCII)


def shard_of(cluster_id: str, count: int) -> int:
    """The shard (0..count-1) that owns ``cluster_id``.

    The id is lower-cased first (the API's UUIDs are lower case; an upper-case spelling of the
    same id must not move it), hashed with SHA-256, and the first 8 bytes read as a big-endian
    unsigned integer are taken modulo ``count``. 2**64 is so much larger than any shard count
    that the modulo's bias is negligible.
    """
    if count < 1:
        raise ValueError(f"shard count must be at least 1, got {count}")
    digest = hashlib.sha256(cluster_id.lower().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Slice ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"invalid shard {self.index}/{self.count}")

    def owns(self, cluster_id: str) -> bool:
        return shard_of(cluster_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def as_dict(self) -> dict[str, int]:
        """For summary.json: ``{"index": K, "count": N}``."""
        return {"index": self.index, "count": self.count}


def parse_shard(
    text: str | None, *, shards: int | None, environ: Mapping[str, str]
) -> Shard | None:
    """The shard a run owns from ``--shard`` and ``--shards``; None when not sharded.

    ``text`` is ``"K/N"`` (0 <= K < N) or ``"auto"``: K from ``JOB_COMPLETION_INDEX``, N from
    ``shards``. Every inconsistency is a :class:`ConfigError` saying which flag to fix.
    """
    if text is None:
        if shards is not None:
            raise ConfigError("--shards N is only used with --shard auto")
        return None
    spec = text.strip()
    if shards is not None and shards < 1:
        raise ConfigError(f"--shards must be at least 1, got {shards}")
    if spec == "auto":
        return _auto(shards, environ)
    match = _EXPLICIT.fullmatch(spec)
    if match is None:
        raise ConfigError(
            f"--shard must be K/N (0-based, e.g. 0/4 for the first of four) or auto, got {text!r}"
        )
    index, count = int(match[1]), int(match[2])
    if count < 1:
        raise ConfigError(f"--shard {spec}: the shard count must be at least 1")
    if index >= count:
        raise ConfigError(
            f"--shard {spec}: shards are numbered from 0, so K must be 0..{count - 1}"
        )
    if shards is not None and shards != count:
        raise ConfigError(f"--shard {spec} disagrees with --shards {shards}")
    return Shard(index, count)


def _auto(shards: int | None, environ: Mapping[str, str]) -> Shard:
    if shards is None:
        raise ConfigError(
            "--shard auto needs --shards N (the Indexed Job's completions) to know the count"
        )
    raw = environ.get(INDEX_VARIABLE)
    if raw is None or not raw.strip():
        raise ConfigError(
            f"--shard auto reads {INDEX_VARIABLE}, which is not set:"
            " run it as a Kubernetes Indexed Job or pass --shard K/N"
        )
    if not raw.strip().isascii() or not raw.strip().isdigit():
        raise ConfigError(f"{INDEX_VARIABLE}={raw!r} is not a non-negative integer")
    index = int(raw)
    if index >= shards:
        raise ConfigError(
            f"{INDEX_VARIABLE}={index} is out of range for --shards {shards}"
            f" (0..{shards - 1}): does --shards match the job's completions?"
        )
    return Shard(index, shards)
