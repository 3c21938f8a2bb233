"""What a run with this configuration would do, in words, for ``collector validate``.

Only the access key's first characters are shown; the secret key and the security token are
never read here beyond "is there one".
"""

from __future__ import annotations

from collections.abc import Iterator

from collector.config import AccountConfig, Config
from collector.endpoints import dws_endpoint

#: How much of an access key to show: enough to tell two keys apart, not to reuse one.
_AK_SHOWN = 4


def mask_access_key(ak: str) -> str:
    """``AKIDEXAMPLE`` -> ``AKID…``; a key too short to mask is not shown at all."""
    return f"{ak[:_AK_SHOWN]}…" if len(ak) > 2 * _AK_SHOWN else "…"


def render_plan(config: Config) -> str:
    """The accounts, what will be discovered where, and the run's limits, as plain text.

    No trailing newline: the caller prints it.
    """
    lines: list[str] = []
    for account in config.accounts:
        lines.extend(_account(account))
        lines.append("")
    lines.extend(_settings(config))
    # config.warnings are not repeated here: the CLI prints them on stderr for every command.
    return "\n".join(lines)


def _account(account: AccountConfig) -> Iterator[str]:
    credentials = account.credentials
    yield f"Account {account.name}"
    yield f"  access key:     {mask_access_key(credentials.ak)}"
    yield "  secret key:     ***"
    yield f"  security token: {'set' if credentials.security_token else 'not set'}"
    yield f"  IAM endpoint:   {account.iam_endpoint}"
    if account.projects:
        yield "  projects given in the config:"
        for project in account.projects:
            endpoint = dws_endpoint(project.region, account.endpoints)
            yield f"    {project.id}  {project.region}  {endpoint}"
    if account.regions:
        yield "  projects IAM lists in these regions:"
        for region in account.regions:
            yield f"    {region}  {dws_endpoint(region, account.endpoints)}"
    elif not account.projects:
        yield "  discovery:      every project IAM lists"
        yield "                  (those with no DWS endpoint, such as MOS, are skipped)"
    if account.endpoints:
        yield "  endpoint overrides:"
        for region, url in sorted(account.endpoints.items()):
            yield f"    {region}  {url}"


def _settings(config: Config) -> Iterator[str]:
    http, retry, paging, limits = config.http, config.retry, config.paging, config.limits
    per_endpoint = limits.per_endpoint or limits.concurrency
    yield (
        f"Concurrency: {limits.concurrency} requests in flight,"
        f" {min(per_endpoint, limits.concurrency)} per endpoint"
    )
    if limits.adaptive:
        yield (
            f"Pacing:      from {limits.rate:g} requests/s per account and endpoint, adapting to"
            f" throttling, never above {limits.max_rate:g}/s"
        )
    else:
        yield "Pacing:      off"
    yield (
        f"HTTP:        connect timeout {http.connect_timeout:g}s,"
        f" read timeout {http.read_timeout:g}s"
    )
    yield (
        f"Retry:       up to {retry.max_attempts} attempts, backoff base {retry.backoff_base:g}s"
        f" capped at {retry.backoff_cap:g}s, Retry-After honoured up to {retry.retry_after_max:g}s"
    )
    yield (
        f"             retries within {retry.budget_ratio:.0%} of an endpoint's requests;"
        f" {retry.passes} later pass(es) after {retry.pass_delay:g}s for what is set aside;"
        f" circuit opens after {retry.breaker_threshold} failures in a row"
    )
    yield (
        f"Paging:      {paging.page_size} records a page, offset mode {paging.offset_mode.value},"
        f" at most {paging.max_pages} pages and {paging.max_rereads} re-reads a cluster"
    )
    yield f"Output:      {config.output.dir}"
