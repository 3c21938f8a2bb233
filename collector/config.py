"""Configuration: the typed, frozen model every other module reads.

Plain data and its defaults, nothing else: the modules that only read settings (the scheduler,
pagination, the run) depend on these types, not on YAML, msgspec or the validation rules, and a
test or the demo can build a :class:`Config` directly. Reading one from a file is
:mod:`collector.configload`'s concern.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from collector.auth import Credentials
from collector.compression import Compression

DEFAULT_IAM_ENDPOINT = "https://iam.myhuaweicloud.com"


class OffsetMode(StrEnum):
    """How the server reads ``offset``: a page index (the doc) or a record index."""

    AUTO = "auto"
    PAGE = "page"
    RECORD = "record"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectRef:
    id: str
    region: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountConfig:
    name: str
    credentials: Credentials
    #: Restrict IAM discovery to projects in these regions; empty means no restriction.
    regions: tuple[str, ...] = ()
    #: Explicit projects; when given (and no ``regions``) IAM is not asked at all.
    projects: tuple[ProjectRef, ...] = ()
    iam_endpoint: str = DEFAULT_IAM_ENDPOINT
    #: Region -> DWS base URL overrides, already merged (the account's entries win).
    endpoints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    #: Requests in flight at once, across the whole run.
    concurrency: int = 32
    #: Requests in flight at once to one endpoint (a DWS region, or IAM); None: no extra bound.
    per_endpoint: int | None = None
    #: Starting pace per account and endpoint, requests per second; adapted to throttling.
    rate: float = 20.0
    #: The pace never probes above this.
    max_rate: float = 1000.0
    #: False: no pacing at all (for servers known not to throttle).
    adaptive: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    connect_timeout: float = 10.0
    #: Longest silence while reading a response.
    read_timeout: float = 30.0
    #: Longest one attempt may take in all, so a server trickling a byte a second is cut off.
    request_timeout: float = 120.0
    #: A response body larger than this is cut off and reported.
    max_body_bytes: int = 8 * 1024 * 1024
    #: A PEM bundle of CAs to trust instead of the system's (a private cloud's CA).
    ca_bundle: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_max: float = 120.0
    #: Retries per endpoint stay under this share of its requests over the last minute...
    budget_ratio: float = 0.1
    #: ...plus this many (0: strictly the ratio; what the budget refuses waits for a later pass).
    budget_minimum: int = 0
    #: Units that failed transiently are tried again in up to this many later passes.
    passes: int = 5
    #: Seconds to wait before each later pass.
    pass_delay: float = 5.0
    #: Consecutive failures that open an endpoint's circuit breaker.
    breaker_threshold: int = 20
    #: Seconds an open breaker waits before letting one probe request through.
    breaker_cooldown: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PagingConfig:
    page_size: int = 10
    offset_mode: OffsetMode = OffsetMode.AUTO
    max_pages: int = 1000
    #: How many times a cluster whose data changed while paging is read again.
    max_rereads: int = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputConfig:
    #: A template: {date} (UTC run start, YYYY-MM-DD), {time} (HHMMSS), {run_id}.
    dir: str = "./exports/{date}"
    compression: Compression = Compression.NONE
    #: None: the codec's default (gzip 6, zstd 3).
    compression_level: int | None = None
    #: An earlier run's output directory: also write changes.jsonl against it.
    since_run: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    accounts: tuple[AccountConfig, ...]
    limits: LimitsConfig = LimitsConfig()
    http: HttpConfig = HttpConfig()
    retry: RetryConfig = RetryConfig()
    paging: PagingConfig = PagingConfig()
    output: OutputConfig = OutputConfig()
    #: Things that load but should be fixed (a secret written in plain text), for the CLI to show.
    warnings: tuple[str, ...] = ()
