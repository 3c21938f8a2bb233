"""Sharding: stable hashes checked by hand, exact partition, balance, and the flags' errors."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import Counter

import pytest

from collector.errors import ConfigError
from collector.shards import Shard, parse_shard, shard_of

KNOWN_ID = "7f0ba6a1-2c5e-4d0a-9a5b-3c1b0e6f2d11"


def test_shard_of_a_known_id_matches_a_hand_computed_sha256() -> None:
    """The shard is the first 8 digest bytes, big-endian, modulo N: computed here by hand."""
    hex_digest = hashlib.sha256(KNOWN_ID.encode("ascii")).hexdigest()
    first_eight = int(hex_digest[:16], 16)
    for count in (1, 2, 3, 7, 8, 1000):
        assert shard_of(KNOWN_ID, count) == first_eight % count


def test_shard_of_is_pinned_to_fixed_values() -> None:
    """Frozen expectations: a change in the hash would silently reshuffle running fleets."""
    # sha256(KNOWN_ID) = 78d9e05c65f73af0aeda...; its first 8 bytes, 0x78d9e05c65f73af0, are
    # 8708238041949879024, which is 4 mod 5, 4 mod 7, 4 mod 10 and 24 mod 1000.
    assert 0x78D9E05C65F73AF0 == 8708238041949879024
    assert [shard_of(KNOWN_ID, n) for n in (5, 7, 10, 1000)] == [4, 4, 4, 24]


def test_shard_of_ignores_case() -> None:
    """An upper-case spelling of the same UUID lands in the same shard."""
    assert all(shard_of(KNOWN_ID.upper(), n) == shard_of(KNOWN_ID, n) for n in range(1, 50))


def random_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_every_id_belongs_to_exactly_one_shard(count: int) -> None:
    """The N shards partition the fleet: each id is owned once, none twice, none never."""
    shards = [Shard(i, count) for i in range(count)]
    for cluster_id in random_ids(2000, seed=count):
        assert sum(shard.owns(cluster_id) for shard in shards) == 1


@pytest.mark.parametrize("count", [2, 3, 8])
def test_shards_are_balanced_within_a_few_percent(count: int) -> None:
    """Over 100k random UUIDs every shard holds within 3% of an even share."""
    sizes = Counter(shard_of(cluster_id, count) for cluster_id in random_ids(100_000, seed=42))
    even = 100_000 / count
    assert sorted(sizes) == list(range(count))
    assert all(abs(size - even) / even < 0.03 for size in sizes.values()), sizes


def test_explicit_shard_is_zero_based() -> None:
    """K/N parses to index K of N; 0/1 is the whole fleet."""
    assert parse_shard("2/8", shards=None, environ={}) == Shard(2, 8)
    assert parse_shard(" 0/1 ", shards=None, environ={}) == Shard(0, 1)
    assert parse_shard("3/4", shards=4, environ={}) == Shard(3, 4)
    assert str(Shard(3, 4)) == "3/4"
    assert Shard(3, 4).as_dict() == {"index": 3, "count": 4}


def test_no_shard_flag_means_the_whole_fleet() -> None:
    """Without --shard the run is not sharded."""
    assert parse_shard(None, shards=None, environ={"JOB_COMPLETION_INDEX": "1"}) is None


def test_auto_reads_the_indexed_job_variable() -> None:
    """--shard auto takes K from JOB_COMPLETION_INDEX and N from --shards."""
    assert parse_shard("auto", shards=5, environ={"JOB_COMPLETION_INDEX": "4"}) == Shard(4, 5)


@pytest.mark.parametrize(
    ("text", "shards", "environ", "message"),
    [
        ("4/4", None, {}, r"numbered from 0, so K must be 0\.\.3"),
        ("1/0", None, {}, "count must be at least 1"),
        ("1-4", None, {}, "must be K/N"),
        ("+1/4", None, {}, "must be K/N"),
        ("\u0661/\u0664", None, {}, "must be K/N"),  # Arabic-Indic digits
        ("", None, {}, "must be K/N"),
        ("1/4", 3, {}, "disagrees with --shards 3"),
        ("auto", None, {"JOB_COMPLETION_INDEX": "0"}, "needs --shards N"),
        ("auto", 4, {}, "JOB_COMPLETION_INDEX, which is not set"),
        ("auto", 4, {"JOB_COMPLETION_INDEX": ""}, "which is not set"),
        ("auto", 4, {"JOB_COMPLETION_INDEX": "x"}, "not a non-negative integer"),
        ("auto", 4, {"JOB_COMPLETION_INDEX": "-1"}, "not a non-negative integer"),
        ("auto", 4, {"JOB_COMPLETION_INDEX": "4"}, r"out of range for --shards 4 \(0\.\.3\)"),
        ("auto", 0, {"JOB_COMPLETION_INDEX": "0"}, "--shards must be at least 1"),
        (None, 4, {}, "only used with --shard auto"),
    ],
)
def test_bad_shard_flags_are_config_errors(
    text: str | None, shards: int | None, environ: dict[str, str], message: str
) -> None:
    """Each inconsistent --shard/--shards/environment combination names what to fix."""
    with pytest.raises(ConfigError, match=message):
        parse_shard(text, shards=shards, environ=environ)


def test_shard_constructor_rejects_impossible_values() -> None:
    """A Shard outside 0 <= K < N cannot be built, even by code that skips parsing."""
    with pytest.raises(ValueError, match="invalid shard"):
        Shard(2, 2)
    with pytest.raises(ValueError, match="at least 1"):
        shard_of(KNOWN_ID, 0)
