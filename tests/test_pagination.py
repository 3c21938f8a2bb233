"""Pagination returns exactly the server's records, whatever its paging semantics.

The server here is a small independent model of the API's paging (page- or record-offset,
optional count, silent cap, a mutation after the k-th request); the truth is its own list.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.config import OffsetMode
from collector.errors import BadResponseError, PaginationError
from collector.pagination import ServerProfile, read_history


def _record(i: int) -> dict[str, Any]:
    return {"item_id": str(uuid.UUID(int=i + 1)), "status": "UpdateCompleted_Success", "n": i}


@dataclass
class ModelServer:
    records: list[dict[str, Any]]
    mode: str = "page"
    count: bool = True
    cap: int | None = None
    mutate_after: int | None = None
    mutation: str = "insert"
    mutate_index: int = 0
    requests: int = 0
    mutated: bool = False
    log: list[tuple[int, int]] = field(default_factory=list)

    async def fetch(self, offset: int, limit: int) -> dict[str, Any]:
        self.requests += 1
        self.log.append((offset, limit))
        eff = min(limit, self.cap) if self.cap else limit
        start = offset * eff if self.mode == "page" else offset
        body: dict[str, Any] = {"records": self.records[start : start + eff]}
        if self.count:
            body["count"] = len(self.records)
        if (
            self.mutate_after is not None
            and self.requests == self.mutate_after
            and not self.mutated
        ):
            self.mutated = True
            if self.mutation == "insert":
                self.records.insert(0, _record(10_000 + self.requests))
            elif self.records:
                del self.records[min(self.mutate_index, len(self.records) - 1)]
        return body


def _read(server: ModelServer, **kw: Any) -> list[dict[str, Any]]:
    profile = kw.pop("profile", ServerProfile())
    opts = {"page_size": 10, "max_pages": 1000, "max_rereads": 3} | kw

    async def go() -> list[dict[str, Any]]:
        history = await read_history(server.fetch, profile=profile, **opts)
        return history.records

    return anyio.run(go)


@pytest.mark.parametrize("mode", ["page", "record"])
@pytest.mark.parametrize("count", [True, False])
@pytest.mark.parametrize("cap", [None, 3, 7])
@pytest.mark.parametrize("n", [0, 1, 2, 9, 10, 11, 25, 30])
def test_every_record_exactly_once(mode: str, count: bool, cap: int | None, n: int) -> None:
    """Any offset semantics, count or not, capped or not: the exact list, in server order."""
    truth = [_record(i) for i in range(n)]
    server = ModelServer(records=list(truth), mode=mode, count=count, cap=cap)
    assert _read(server) == truth


def test_profile_learns_record_mode_and_cap_for_later_clusters() -> None:
    """A second cluster on the same endpoint pays no detection cost: offsets are record indexes."""
    profile = ServerProfile()
    first = ModelServer(records=[_record(i) for i in range(25)], mode="record", cap=5)
    assert _read(first, profile=profile) == first.records
    assert profile.mode is OffsetMode.RECORD
    assert profile.cap == 5
    second = ModelServer(records=[_record(i) for i in range(12)], mode="record", cap=5)
    assert _read(second, profile=profile) == second.records
    assert second.log == [(0, 5), (5, 5), (10, 5)]


def test_cap_learned_by_another_cluster_mid_read_is_not_mistaken_for_the_end() -> None:
    """A cap learned while this cluster's first page was in flight still means 'full page'."""
    profile = ServerProfile()
    server = ModelServer(records=[_record(i) for i in range(6)], count=False, cap=4)

    async def fetch(offset: int, limit: int) -> dict[str, Any]:
        body = await server.fetch(offset, limit)
        profile.cap = 4  # another cluster on this endpoint finished learning the cap
        return body

    async def go() -> list[dict[str, Any]]:
        history = await read_history(
            fetch, profile=profile, page_size=10, max_pages=100, max_rereads=0
        )
        return history.records

    assert anyio.run(go) == server.records


def test_page_mode_uses_one_request_per_page() -> None:
    """Doc semantics with count: 25 records in 3 requests, offsets 0,1,2."""
    server = ModelServer(records=[_record(i) for i in range(25)])
    _read(server)
    assert server.log == [(0, 10), (1, 10), (2, 10)]


@pytest.mark.parametrize("mode", ["page", "record"])
@pytest.mark.parametrize("count", [True, False])
@pytest.mark.parametrize("after", [1, 2, 3])
def test_insert_while_paging_is_reread(mode: str, count: bool, after: int) -> None:
    """A record added at the head while paging: a consistent snapshot, no repeats.

    A change after the last page was served leaves the earlier snapshot valid, so the result is
    the list either before or after the change, never a mix.
    """
    before = [_record(i) for i in range(25)]
    server = ModelServer(records=list(before), mode=mode, count=count, mutate_after=after)
    got = _read(server)
    assert got in (before, server.records)
    if after < 3:  # the change landed mid-paging: only the final list is consistent
        assert got == server.records
    assert len({r["item_id"] for r in got}) == len(got)


@pytest.mark.parametrize("mode", ["page", "record"])
@pytest.mark.parametrize("after", [1, 2])
def test_remove_while_paging_with_count_is_reread(mode: str, after: int) -> None:
    """A record removed mid-paging (anywhere) is caught by the moving count."""
    server = ModelServer(
        records=[_record(i) for i in range(25)],
        mode=mode,
        mutate_after=after,
        mutation="remove",
        mutate_index=12,
    )
    assert _read(server) == server.records


@pytest.mark.parametrize("mode", ["page", "record"])
def test_head_removal_without_count_is_reread(mode: str) -> None:
    """Without count, a removal at the head shows when the first page is read again."""
    server = ModelServer(
        records=[_record(i) for i in range(25)],
        mode=mode,
        count=False,
        mutate_after=1,
        mutation="remove",
        mutate_index=0,
    )
    assert _read(server) == server.records


def test_server_that_never_ends_hits_the_page_bound() -> None:
    """Full pages forever stop at max_pages with a PaginationError."""

    async def endless(offset: int, limit: int) -> dict[str, Any]:
        return {"records": [_record(offset * limit + i) for i in range(limit)]}

    async def go() -> None:
        await read_history(
            endless, profile=ServerProfile(), page_size=10, max_pages=50, max_rereads=0
        )

    with pytest.raises(PaginationError, match="50 pages"):
        anyio.run(go)


def test_server_ignoring_offset_fails_instead_of_looping() -> None:
    """A server that returns the same full page for every offset is an error, not a loop."""

    async def same(offset: int, limit: int) -> dict[str, Any]:
        return {"records": [_record(i) for i in range(limit)], "count": 100}

    async def go() -> None:
        await read_history(same, profile=ServerProfile(), page_size=10, max_pages=50, max_rereads=1)

    with pytest.raises(PaginationError, match="kept changing"):
        anyio.run(go)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"records": {"a": 1}}, "not a list"),
        ({"records": [1]}, "not an object"),
        ({"records": [], "count": "3"}, "count"),
        ({"records": [_record(i) for i in range(11)]}, "more than the limit"),
    ],
)
def test_malformed_pages_are_bad_responses(body: dict[str, Any], match: str) -> None:
    """Wrong shapes fail the cluster with a clear error."""

    async def bad(offset: int, limit: int) -> dict[str, Any]:
        return body

    async def go() -> None:
        await read_history(bad, profile=ServerProfile(), page_size=10, max_pages=5, max_rereads=0)

    with pytest.raises(BadResponseError, match=match):
        anyio.run(go)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 60),
    mode=st.sampled_from(["page", "record"]),
    count=st.booleans(),
    cap=st.one_of(st.none(), st.integers(1, 15)),
    page_size=st.integers(1, 20),
    mutate_after=st.one_of(st.none(), st.integers(1, 6)),
    mutation=st.sampled_from(["insert", "remove"]),
    mutate_index=st.integers(0, 5),
    pinned=st.booleans(),
)
def test_property_exact_for_any_server(
    n: int,
    mode: str,
    count: bool,
    cap: int | None,
    page_size: int,
    mutate_after: int | None,
    mutation: str,
    mutate_index: int,
    pinned: bool,
) -> None:
    """Never skips nor repeats: the result is the server's list before or after the change."""
    if mutation == "remove" and not count:
        # Without count only head removals are detectable (documented limitation).
        mutate_index = 0
    before = [_record(i) for i in range(n)]
    server = ModelServer(
        records=list(before),
        mode=mode,
        count=count,
        cap=cap,
        mutate_after=mutate_after,
        mutation=mutation,
        mutate_index=mutate_index,
    )
    profile = ServerProfile(mode=OffsetMode(mode)) if pinned else ServerProfile()
    got = _read(server, profile=profile, page_size=page_size)
    assert got in (before, server.records)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=2, max_size=8),
    mode=st.sampled_from(["page", "record"]),
    count=st.booleans(),
    cap=st.one_of(st.none(), st.integers(1, 12)),
    page_size=st.integers(1, 15),
)
def test_property_clusters_sharing_a_profile_concurrently(
    sizes: list[int], mode: str, count: bool, cap: int | None, page_size: int
) -> None:
    """Clusters of one endpoint paged at once, teaching one profile: each is still exact."""
    profile = ServerProfile()
    servers = [
        ModelServer(
            records=[_record(1000 * k + i) for i in range(n)], mode=mode, count=count, cap=cap
        )
        for k, n in enumerate(sizes)
    ]
    results: dict[int, list[dict[str, Any]]] = {}

    async def one(k: int) -> None:
        async def fetch(offset: int, limit: int) -> dict[str, Any]:
            await anyio.sleep(0)  # let the other clusters interleave between pages
            return await servers[k].fetch(offset, limit)

        history = await read_history(
            fetch, profile=profile, page_size=page_size, max_pages=1000, max_rereads=0
        )
        results[k] = history.records

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            for k in range(len(servers)):
                tg.start_soon(one, k)

    anyio.run(go)
    for k, server in enumerate(servers):
        assert results[k] == server.records
