"""What can go wrong, switched on by tests and benchmarks while the simulator runs.

:class:`Faults` is one mutable object shared with the server. Tests set plain attributes, from any
thread, at any time (an attribute assignment is atomic in CPython; the server reads each attribute
once per request). Counters and the random stream sit behind a lock because the server and the
test thread both touch them.

Count-based faults consume themselves, so a test can watch them run out: a
:class:`ClusterFailure` with ``times`` is replaced by one with ``times - 1`` after each use and
dropped at zero, and a :class:`Mutation` is removed from :attr:`Faults.mutations` once applied.

Hostile behaviours (:attr:`Faults.hostile`, :attr:`Faults.hostile_projects`,
:attr:`Faults.hostile_iam`) model a server that lies or breaks rather than one that fails: bodies
of the wrong shape, identifiers built to escape a URL or a path, pages that never end, bodies too
large, answers that never come. They are deterministic and never consume themselves.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Final, Literal, get_args

OffsetMode = Literal["page", "record"]
MutationAction = Literal["insert", "remove"]
#: What one request draws from the random faults; "ok" means none fired.
Outcome = Literal["ok", "error", "reset", "truncate", "html", "stall"]

#: What a hostile server does to one cluster's records responses (see :attr:`Faults.hostile`).
HostileRecords = Literal[
    "records_not_list",
    "record_not_object",
    "count_string",
    "missing_fields",
    "unknown_fields",
    "non_utf8",
    "deep_nesting",
    "oversized_page",
    "endless",
    "huge_body",
    "never_answer",
    "trickle",
]
#: What a hostile server does to one project's cluster list (see :attr:`Faults.hostile_projects`).
HostileListing = Literal[
    "traversal",
    "slash",
    "query",
    "fragment",
    "percent",
    "control",
    "newline",
    "not_uuid",
    "id_not_string",
    "entry_not_object",
    "bad_ids",
    "clusters_not_list",
]
#: What a hostile IAM does to one account's project list (see :attr:`Faults.hostile_iam`).
HostileIam = Literal["bad_project_id", "project_not_object", "projects_not_list"]

HOSTILE_RECORDS: Final[frozenset[str]] = frozenset(get_args(HostileRecords))
HOSTILE_LISTINGS: Final[frozenset[str]] = frozenset(get_args(HostileListing))
HOSTILE_IAM: Final[frozenset[str]] = frozenset(get_args(HostileIam))

#: Stats key for requests that got no HTTP response at all (connection reset).
NO_RESPONSE: Final = 0


@dataclass(frozen=True, slots=True)
class ClusterFailure:
    """A cluster's records requests answer ``status``: after ``skip`` that succeed, the next
    ``times`` of them (None: all of them)."""

    status: int
    times: int | None = None
    #: Requests let through before the failures start (page 1 works, page 2 fails, ...).
    skip: int = 0


@dataclass(frozen=True, slots=True)
class Mutation:
    """Once the ``after_requests``-th records request for a cluster is answered, edit its data."""

    after_requests: int
    action: MutationAction
    #: Which record "remove" deletes (0 = newest); "insert" always adds a new newest record.
    index: int = 0


@dataclass(frozen=True, slots=True)
class Draw:
    """The random fault one request gets; ``status`` is set when ``outcome`` is "error"."""

    outcome: Outcome
    status: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """A snapshot of the server's counters."""

    #: Requests by route kind: "iam", "clusters", "records" and "other" (unknown routes).
    by_kind: dict[str, int]
    #: Responses by status; :data:`NO_RESPONSE` (0) counts connection resets.
    by_status: dict[int, int]
    #: Records requests per cluster id, whatever their outcome.
    records_by_cluster: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


class Faults:
    """Server behaviour switches; every default is the documented, fault-free API."""

    __slots__ = (
        "_buckets",
        "_by_kind",
        "_by_status",
        "_down_periods",
        "_lock",
        "_records_by_cluster",
        "_rng",
        "_started",
        "cluster_failures",
        "down_regions",
        "error_rates",
        "forbidden_projects",
        "hostile",
        "hostile_body_bytes",
        "hostile_iam",
        "hostile_projects",
        "hostile_seconds",
        "html_rate",
        "include_count",
        "latency",
        "latency_jitter",
        "max_limit",
        "mutations",
        "offset_mode",
        "page_cap",
        "rate_limit",
        "region_status",
        "reset_rate",
        "retry_after",
        "stall_rate",
        "stall_seconds",
        "trickle_interval",
        "truncate_rate",
    )

    def __init__(
        self,
        *,
        seed: int = 0,
        offset_mode: OffsetMode = "page",
        include_count: bool = True,
        page_cap: int | None = None,
        max_limit: int | None = None,
        latency: float = 0.0,
        latency_jitter: float = 0.0,
        error_rates: dict[int, float] | None = None,
        retry_after: int | None = None,
        reset_rate: float = 0.0,
        truncate_rate: float = 0.0,
        html_rate: float = 0.0,
        stall_rate: float = 0.0,
        stall_seconds: float = 30.0,
        rate_limit: float | None = None,
        forbidden_projects: set[str] | None = None,
        cluster_failures: dict[str, ClusterFailure] | None = None,
        mutations: dict[str, Mutation] | None = None,
        down_regions: set[str] | None = None,
        region_status: dict[str, int] | None = None,
        down_periods: dict[str, tuple[float, float]] | None = None,
        hostile: dict[str, HostileRecords] | None = None,
        hostile_projects: dict[str, HostileListing] | None = None,
        hostile_iam: dict[str, HostileIam] | None = None,
        hostile_seconds: float = 30.0,
        hostile_body_bytes: int = 20 * 1024 * 1024,
        trickle_interval: float = 1.0,
    ) -> None:
        #: "page": offset is a page index, start = offset * limit, as documented;
        #: "record": offset is a record index, start = offset.
        self.offset_mode: OffsetMode = offset_mode
        #: False: records responses omit "count", as the doc's own example does.
        self.include_count = include_count
        #: The server silently returns at most this many records per page.
        self.page_cap = page_cap
        #: A limit above this answers 400; None: any positive limit is accepted.
        self.max_limit = max_limit
        #: Seconds added to every request, plus a uniform extra in [0, latency_jitter).
        self.latency = latency
        self.latency_jitter = latency_jitter
        #: Status -> probability per request (429, 500, 502, 503, 504; 502 comes as HTML).
        self.error_rates: dict[int, float] = dict(error_rates or {})
        #: Whole seconds sent as Retry-After with every 429 (random or rate limit); None: no
        #: header. Whole seconds because HTTP (and urllib3, under the SDK) accept nothing else.
        self.retry_after = retry_after
        #: Probability of closing the connection without a response.
        self.reset_rate = reset_rate
        #: Probability of a 200 whose body stops short of its Content-Length.
        self.truncate_rate = truncate_rate
        #: Probability of a 200 carrying an HTML page, as a captive proxy sends.
        self.html_rate = html_rate
        #: Probability of sending the headers, then waiting ``stall_seconds`` before the body.
        self.stall_rate = stall_rate
        self.stall_seconds = stall_seconds
        #: Requests per second per access key (burst = one second's worth, at least 1);
        #: None: unlimited.
        self.rate_limit = rate_limit
        #: Project ids whose clusters and records answer 403.
        self.forbidden_projects: set[str] = set(forbidden_projects or ())
        #: Cluster id -> failure for its next records requests.
        self.cluster_failures: dict[str, ClusterFailure] = dict(cluster_failures or {})
        #: Cluster id -> a data change applied after its k-th records request.
        self.mutations: dict[str, Mutation] = dict(mutations or {})
        #: Regions whose every request gets its connection reset.
        self.down_regions: set[str] = set(down_regions or ())
        #: Region -> the status every request for that region answers (e.g. 503 all run long).
        self.region_status: dict[str, int] = dict(region_status or {})
        #: Region -> (start, end) seconds after the Faults were made: down (reset) in between.
        self._down_periods: dict[str, tuple[float, float]] = dict(down_periods or {})
        #: Cluster id -> how its records responses lie or break, on every request:
        #: "records_not_list" ('records' is an object), "record_not_object" (one record is a
        #: string), "count_string" ('count' is a numeric string), "missing_fields" (records keep
        #: only item_id), "unknown_fields" (records carry extra fields), "non_utf8" (invalid
        #: UTF-8 inside a string), "deep_nesting" (100,000 nested arrays), "oversized_page"
        #: (more records than limit), "endless" (full pages of fresh records forever, count
        #: always a page ahead), "huge_body" (a chunked body of ``hostile_body_bytes``, no
        #: Content-Length), "never_answer" (read the request, stay silent ``hostile_seconds``),
        #: "trickle" (headers, then one byte per ``trickle_interval`` for ``hostile_seconds``).
        self.hostile: dict[str, HostileRecords] = dict(hostile or {})
        #: Project id -> how its cluster list lies: one extra entry whose id is "traversal"
        #: ("../../etc/passwd"), "slash" ("a/b"), "query" ("x?y"), "fragment" ("x#y"), "percent"
        #: ("%2e%2e"), "control" (a NUL and a BEL), "newline" (a real UUID plus "\n"),
        #: "not_uuid", "id_not_string" (a number), "entry_not_object" (a string); "bad_ids"
        #: (every bad id above at once); or "clusters_not_list" ('clusters' is an object).
        self.hostile_projects: dict[str, HostileListing] = dict(hostile_projects or {})
        #: Account name -> how IAM's project list lies: "bad_project_id" (an extra project "../x"
        #: named like one of the account's regions), "project_not_object", "projects_not_list".
        self.hostile_iam: dict[str, HostileIam] = dict(hostile_iam or {})
        #: How long "never_answer" stays silent and "trickle" keeps trickling.
        self.hostile_seconds = hostile_seconds
        #: Size of the "huge_body" body.
        self.hostile_body_bytes = hostile_body_bytes
        #: Seconds between the bytes of a "trickle" body.
        self.trickle_interval = trickle_interval
        self._started = time.monotonic()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._by_kind: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        self._records_by_cluster: Counter[str] = Counter()

    # -- stats ----------------------------------------------------------------------------------

    @property
    def stats(self) -> Stats:
        with self._lock:
            return Stats(
                by_kind=dict(self._by_kind),
                by_status=dict(self._by_status),
                records_by_cluster=dict(self._records_by_cluster),
            )

    def reset_stats(self) -> None:
        """Zero the counters (faults and their remaining uses are left as they are)."""
        with self._lock:
            self._by_kind.clear()
            self._by_status.clear()
            self._records_by_cluster.clear()

    def count_request(self, kind: str, *, cluster_id: str | None = None) -> int:
        """Count a request; for records requests return how many that cluster has had so far."""
        with self._lock:
            self._by_kind[kind] += 1
            if cluster_id is None:
                return 0
            self._records_by_cluster[cluster_id] += 1
            return self._records_by_cluster[cluster_id]

    def count_status(self, status: int) -> None:
        with self._lock:
            self._by_status[status] += 1

    # -- decisions the server asks for ----------------------------------------------------------

    def delay(self) -> float:
        """Seconds to hold this request before answering."""
        base, jitter = self.latency, self.latency_jitter
        if jitter <= 0:
            return max(base, 0.0)
        with self._lock:
            return max(base + self._rng.uniform(0.0, jitter), 0.0)

    def draw(self) -> Draw:
        """Pick this request's random fault; the probabilities add up along one draw."""
        error_rates = sorted(self.error_rates.items())
        others: tuple[tuple[Outcome, float], ...] = (
            ("reset", self.reset_rate),
            ("html", self.html_rate),
            ("stall", self.stall_rate),
            ("truncate", self.truncate_rate),
        )
        if not error_rates and not any(rate > 0 for _, rate in others):
            return Draw("ok")
        with self._lock:
            point = self._rng.random()
        edge = 0.0
        for status, rate in error_rates:
            edge += rate
            if point < edge:
                return Draw("error", status)
        for outcome, rate in others:
            edge += rate
            if point < edge:
                return Draw(outcome)
        return Draw("ok")

    def region_is_down(self, region: str) -> bool:
        """True while a region is down, for good or for its configured period."""
        if region in self.down_regions:
            return True
        period = self._down_periods.get(region)
        if period is None:
            return False
        elapsed = time.monotonic() - self._started
        return period[0] <= elapsed < period[1]

    def take_token(self, ak: str) -> bool:
        """Spend one request from the access key's bucket; False when it is empty."""
        rate = self.rate_limit
        if rate is None:
            return True
        # A bucket holds one second's worth, but at least one request, or a rate under 1/s
        # would refuse everything.
        capacity = max(rate, 1.0)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(ak, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[ak] = (tokens, now)
                return False
            self._buckets[ak] = (tokens - 1.0, now)
            return True

    def take_cluster_failure(self, cluster_id: str) -> int | None:
        """The status to answer for this cluster's records request, using one of its failures."""
        with self._lock:
            failure = self.cluster_failures.get(cluster_id)
            if failure is None:
                return None
            if failure.skip > 0:
                self.cluster_failures[cluster_id] = replace(failure, skip=failure.skip - 1)
                return None
            if failure.times is not None:
                if failure.times <= 1:
                    del self.cluster_failures[cluster_id]
                else:
                    self.cluster_failures[cluster_id] = replace(failure, times=failure.times - 1)
                if failure.times <= 0:
                    return None
            return failure.status

    def take_mutation(self, cluster_id: str, answered: int) -> Mutation | None:
        """The mutation due after this cluster's ``answered``-th request, removed once taken."""
        with self._lock:
            mutation = self.mutations.get(cluster_id)
            if mutation is None or answered < mutation.after_requests:
                return None
            del self.mutations[cluster_id]
            return mutation
