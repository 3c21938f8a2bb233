"""Read one cluster's whole upgrade history, exactly once per record, whatever the server does.

The API's ``offset`` is documented as a page index, but servers exist that read it as a record
index; ``count`` may be missing; a server may silently return fewer records than ``limit``; and
records (newest first) may appear or vanish while we page, shifting every later page. So:

* The first cluster on an endpoint teaches us its semantics (:class:`ServerProfile`): the second
  request of a multi-page history asks ``offset=1``; a record server answers from record 1 (its
  first record equals the one we already hold at index 1), a page server from record ``limit``.
  Only a pass that ended consistent may teach the profile, so a change mid-paging cannot
  mislead every other cluster.
* A first page shorter than ``limit`` is either the end or a silent cap. ``count`` settles it;
  without ``count`` we probe once with ``limit`` lowered to what came back. A learned cap makes
  later clusters on that endpoint ask for exactly that many.
* A pass is *unstable* when it sees a repeated ``item_id``, a ``count`` that moves, a total
  that disagrees with ``count``, or (without ``count``) a first page that differs when re-read
  at the end. An unstable pass is discarded and the cluster read again, up to a bound.
* Every pass is bounded by ``max_pages`` requests, so a server that never ends cannot hang us.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from collector.config import OffsetMode
from collector.errors import BadResponseError, PaginationError

Record = dict[str, Any]
#: Fetch one page: (offset, limit) -> decoded response body.
Fetch = Callable[[int, int], Awaitable[Mapping[str, Any]]]


@dataclass(slots=True)
class ServerProfile:
    """What paging has taught us about one endpoint, shared by every cluster on it."""

    mode: OffsetMode = OffsetMode.AUTO
    #: The server returns at most this many records per page, whatever ``limit`` asks.
    cap: int | None = None
    #: A page of exactly the configured size came back: a shorter page is the last one.
    honours_page_size: bool = False


@dataclass(frozen=True, slots=True)
class History:
    records: list[Record]
    #: Requests made for this cluster, all passes included.
    requests: int
    #: Passes read; more than one means the data changed while we paged.
    passes: int


def record_key(record: Mapping[str, Any]) -> str | bytes:
    """Identity of a record: its ``item_id``, or its whole content if it has none."""
    item_id = record.get("item_id")
    if isinstance(item_id, str) and item_id:
        return item_id
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def parse_page(body: Mapping[str, Any], *, limit: int) -> tuple[list[Record], int | None]:
    """The records and (if present) the ``count`` of one page, or BadResponseError."""
    raw_records = body.get("records")
    if raw_records is None:
        raw_records = []
    if not isinstance(raw_records, list):
        raise BadResponseError(
            f"'records' is a {type(raw_records).__name__}, not a list", transient=False
        )
    for item in raw_records:
        if not isinstance(item, dict):
            raise BadResponseError(
                f"a record is a {type(item).__name__}, not an object", transient=False
            )
    if len(raw_records) > limit:
        raise BadResponseError(
            f"page has {len(raw_records)} records, more than the limit {limit} asked for",
            transient=False,
        )
    count = body.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise BadResponseError(f"'count' is {count!r}, not a non-negative integer", transient=False)
    return raw_records, count


@dataclass(slots=True)
class _Pass:
    """One front-to-back read of a cluster."""

    fetch: Fetch
    max_pages: int
    records: list[Record]
    seen: set[str | bytes]
    counts: set[int]
    requests: int = 0
    unstable: str | None = None
    mode: OffsetMode = OffsetMode.AUTO
    cap: int | None = None
    #: The first page came back exactly as long as the configured page size.
    full_first_page: bool = False
    #: The first page was short and count is absent: the end, or a cap we have yet to confirm.
    tentative_cap: bool = False

    def mark(self, reason: str) -> None:
        if self.unstable is None:
            self.unstable = reason

    async def get(self, offset: int, limit: int) -> tuple[list[Record], int | None]:
        if self.requests >= self.max_pages:
            raise PaginationError(
                f"gave up after {self.max_pages} pages: the server never reached the end"
            )
        self.requests += 1
        records, count = parse_page(await self.fetch(offset, limit), limit=limit)
        if count is not None:
            self.counts.add(count)
            if len(self.counts) > 1:
                self.mark("count changed between pages")
        return records, count

    def merge(self, page: list[Record], start: int) -> int:
        """Place ``page`` at record index ``start``; returns how many records were new."""
        held = len(self.records)
        if start > held:
            self.mark(f"gap: a page began at record {start} but only {held} are held")
            return 0
        overlap = min(held - start, len(page))
        for i in range(overlap):
            if record_key(page[i]) != record_key(self.records[start + i]):
                self.mark("records shifted between pages")
        added = 0
        for record in page[overlap:]:
            key = record_key(record)
            if key in self.seen:
                self.mark(f"record {key!r} came back twice")
                continue
            self.seen.add(key)
            self.records.append(record)
            added += 1
        return added


async def _first_page(state: _Pass, profile: ServerProfile, page_size: int) -> int | None:
    """Read page 0; the limit to page on with, or None when page 0 was the whole history."""
    limit = page_size if profile.cap is None else min(page_size, profile.cap)
    first, count = await state.get(0, limit)
    state.merge(first, 0)
    state.full_first_page = len(first) == page_size
    if not first or (count is not None and len(first) >= count):
        if count is not None and len(first) != count:
            state.mark(f"count says {count} records but the first page holds {len(first)}")
        return None
    if len(first) == limit:
        return limit
    # Short first page. Read the profile now, not before the request: another cluster on this
    # endpoint may have taught it something while our page was in flight.
    known_cap = profile.cap
    if count is not None:
        state.cap = len(first)  # count says there is more: a silent cap
    elif known_cap is not None and len(first) == known_cap:
        pass  # a full page under the cap we already know
    elif known_cap is not None or profile.honours_page_size:
        return None  # shorter than what this server gives: the last page
    else:
        state.tentative_cap = True  # the end, or a cap: the next page tells
    return len(first)


async def _later_pages(state: _Pass, limit: int) -> None:
    page_index = 0
    while True:
        page_index += 1
        # PAGE, or AUTO: ask for page 1 and read the answer to learn which semantics it is.
        offset = len(state.records) if state.mode is OffsetMode.RECORD else page_index
        page, count = await state.get(offset, limit)
        if state.mode is OffsetMode.AUTO and limit >= 2 and page_index == 1:
            # A record-offset server answers offset=1 from record 1, which we already hold.
            is_record = bool(page) and record_key(page[0]) == record_key(state.records[1])
            state.mode = OffsetMode.RECORD if is_record else OffsetMode.PAGE
        start = offset if state.mode is OffsetMode.RECORD else offset * limit
        added = state.merge(page, start)
        if state.tentative_cap and added:
            state.cap, state.tentative_cap = limit, False
        if len(page) < limit or (count is not None and len(state.records) >= count):
            return
        if added == 0:
            state.mark("a full page brought no new records")
            return


async def _verify(state: _Pass, limit: int) -> None:
    if len(state.counts) == 1:
        (count,) = state.counts
        if count != len(state.records):
            state.mark(f"count says {count} records but {len(state.records)} were returned")
    elif not state.counts and state.unstable is None:
        # An insertion at the head shows up as a repeated record; a removal at the head only
        # by reading the first page again (without count nothing else reveals it).
        head, _ = await state.get(0, limit)
        if [record_key(r) for r in head] != [record_key(r) for r in state.records[: len(head)]]:
            state.mark("the first page changed while paging")


async def _read_pass(
    fetch: Fetch, *, profile: ServerProfile, page_size: int, max_pages: int
) -> _Pass:
    state = _Pass(fetch=fetch, max_pages=max_pages, records=[], seen=set(), counts=set())
    state.mode = profile.mode
    limit = await _first_page(state, profile, page_size)
    if limit is not None:
        await _later_pages(state, limit)
        await _verify(state, limit)
    return state


async def read_history(
    fetch: Fetch,
    *,
    profile: ServerProfile,
    page_size: int,
    max_pages: int,
    max_rereads: int,
) -> History:
    """Every record of one cluster, newest first, each exactly once."""
    requests = 0
    reasons: list[str] = []
    for attempt in range(1, max_rereads + 2):
        state = await _read_pass(fetch, profile=profile, page_size=page_size, max_pages=max_pages)
        requests += state.requests
        if state.unstable is None:
            if profile.mode is OffsetMode.AUTO and state.mode is not OffsetMode.AUTO:
                profile.mode = state.mode
            if state.cap is not None and profile.cap is None:
                profile.cap = state.cap
            if state.full_first_page:
                profile.honours_page_size = True
            return History(records=state.records, requests=requests, passes=attempt)
        reasons.append(state.unstable)
    raise PaginationError(
        f"records kept changing while paging ({max_rereads + 1} passes: {'; '.join(reasons)})"
    )
