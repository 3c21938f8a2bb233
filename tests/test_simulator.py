"""The simulator: its ground truth, and every fault checked over real loopback HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
import requests  # installed with the official SDK, a test dependency
from yarl import URL

from collector.auth import Credentials, Secret, Signer
from collector.simulator import (
    ClusterFailure,
    Faults,
    Fleet,
    Mutation,
    SimAccount,
    SimProject,
    SimulatorThread,
    describe,
    serve,
)
from collector.simulator.fleet import MOS_PROJECT, REGIONS, VERSIONS

pytestmark = pytest.mark.anyio

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
HEX32 = re.compile(r"[0-9a-f]{32}")
RECORD_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
RECORD_FIELDS = {
    "item_id",
    "status",
    "record_type",
    "from_version",
    "to_version",
    "start_time",
    "end_time",
    "job_id",
    "failed_reason",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def small_fleet(**overrides: Any) -> Fleet:
    options: dict[str, Any] = {
        "seed": 5,
        "accounts": 2,
        "projects": 2,
        "clusters": 3,
        "records": 12,
    }
    return Fleet.generate(**(options | overrides))


def deep_cluster(fleet: Fleet, at_least: int = 21) -> tuple[SimAccount, SimProject, str]:
    for account, project, cluster in fleet.iter_clusters():
        if fleet.record_count(project.id, cluster.id) >= at_least:
            return account, project, cluster.id
    raise AssertionError(f"no cluster with {at_least} records")


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Client:
    """Signs each request with collector.auth.Signer, as the collector does, and sends it."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.host = URL(url).raw_authority

    async def get(
        self,
        account: SimAccount,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        credentials: Credentials | None = None,
        now: datetime | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,
    ) -> Reply:
        signer = Signer(credentials or account.credentials())
        signed = signer.sign(
            method="GET", host=self.host, path=path, query=query, headers=headers, now=now
        )
        target = URL(f"{self.url}{path}?{signed.query_string}", encoded=True)
        async with self.session.get(
            target, headers=signed.headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    async def records(
        self, account: SimAccount, project_id: str, cluster_id: str, *, offset: int, limit: int
    ) -> Reply:
        path = f"/v1/{project_id}/clusters/{cluster_id}/upgrade-management/records"
        return await self.get(account, path, [("offset", str(offset)), ("limit", str(limit))])


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


# -- ground truth -------------------------------------------------------------------------------


def test_same_seed_gives_the_same_fleet() -> None:
    """Two fleets from one seed are identical, down to every record; another seed differs."""
    first, second = small_fleet(), small_fleet()
    assert first.accounts == second.accounts
    for _account, project, cluster in first.iter_clusters():
        assert first.records(project.id, cluster.id) == second.records(project.id, cluster.id)
        twin = second.cluster(project.id, cluster.id)
        assert twin is not None
        assert cluster.info == twin.info
    assert small_fleet(seed=6).accounts != first.accounts


def test_fleet_has_the_requested_shape() -> None:
    """Accounts, region projects plus MOS, exact clusters per project, counts in [0, 2r]."""
    fleet = small_fleet(accounts=3, projects=4, clusters=5, records=6)
    assert [a.name for a in fleet.accounts] == ["acct-0", "acct-1", "acct-2"]
    counts = []
    for index, account in enumerate(fleet.accounts):
        assert re.fullmatch(r"[A-Z0-9]{20}", account.ak)
        assert re.fullmatch(r"[A-Za-z0-9]{40}", account.sk)
        assert HEX32.fullmatch(account.domain_id)
        assert (account.security_token is None) == (index % 2 == 0)
        names = [p.name for p in account.iam_projects]
        assert len(names) == len(set(names)) == 5
        assert names[-1] == MOS_PROJECT
        assert not account.mos.is_region
        assert account.mos.clusters == ()
        assert fleet.project(account.mos.id) == account.mos
        assert len(account.projects) == 4
        for project in account.projects:
            assert project.is_region
            assert HEX32.fullmatch(project.id)
            assert project.region == project.name.partition("_")[0]
            assert project.region in REGIONS
            assert len(project.clusters) == 5
            for cluster in project.clusters:
                assert UUID4.fullmatch(cluster.id)
                counts.append(fleet.record_count(project.id, cluster.id))
    assert fleet.total_clusters == 3 * 4 * 5
    assert fleet.total_records == sum(counts)
    assert min(counts) == 0
    assert max(counts) == 12
    assert all(0 <= count <= 12 for count in counts)
    fixed = small_fleet(records=7, fixed_records=True)
    assert {len(fixed.records(p.id, c.id)) for _a, p, c in fixed.iter_clusters()} == {7}


def test_records_look_like_the_documented_example() -> None:
    """Documented fields only, newest first, versions climbing the ladder, failures explained."""
    fleet = small_fleet(clusters=10, records=15)
    statuses: set[str] = set()
    for _account, project, cluster in fleet.iter_clusters():
        records = fleet.records(project.id, cluster.id)
        starts = [r["start_time"] for r in records]
        assert starts == sorted(starts, reverse=True)
        for position, record in enumerate(records):
            assert set(record) == RECORD_FIELDS
            assert UUID4.fullmatch(record["item_id"])
            assert HEX32.fullmatch(record["job_id"])
            assert RECORD_TIME.fullmatch(record["start_time"])
            assert VERSIONS.index(record["from_version"]) <= VERSIONS.index(record["to_version"])
            assert record["record_type"] in {"update-kernel", "update-patch", "hot-patch"}
            assert (record["failed_reason"] is not None) == (record["status"] == "UpdateFailed")
            if record["status"] == "Updating":
                assert position == 0
                assert record["end_time"] is None
            else:
                assert RECORD_TIME.fullmatch(record["end_time"])
            statuses.add(record["status"])
        successes = [r for r in records if r["status"] == "UpdateCompleted_Success"]
        if successes:
            assert successes[0]["to_version"] == cluster.version
    assert {"UpdateCompleted_Success", "UpdateFailed"} <= statuses


def test_mutations_change_the_truth() -> None:
    """insert_record adds a newest record, remove_record deletes one; totals follow."""
    fleet = small_fleet()
    _account, project, cluster_id = deep_cluster(fleet)
    before = fleet.records(project.id, cluster_id)
    total = fleet.total_records
    added = fleet.insert_record(project.id, cluster_id)
    after = fleet.records(project.id, cluster_id)
    assert after == [added, *before]
    assert added["start_time"] > before[0]["start_time"]
    removed = fleet.remove_record(project.id, cluster_id, 3)
    assert removed == before[2]
    assert fleet.records(project.id, cluster_id) == [added, *before[:2], *before[3:]]
    assert fleet.total_records == total
    fleet.records(project.id, cluster_id)[0]["status"] = "edited"
    assert fleet.records(project.id, cluster_id)[0] == added


def test_large_fleets_generate_quickly() -> None:
    """100,000 clusters in well under the few seconds benchmarks can afford."""
    started = time.perf_counter()
    fleet = Fleet.generate(seed=1, accounts=10, projects=10, clusters=1000, records=3)
    elapsed = time.perf_counter() - started
    assert fleet.total_clusters == 100_000
    assert elapsed < 6.0


def test_describe_lists_every_account_and_its_keys() -> None:
    """The text a person reads to configure a client: address, IAM endpoint, keys, counts."""
    fleet = small_fleet()
    text = describe(fleet, "http://127.0.0.1:9999")
    assert "http://127.0.0.1:9999" in text
    assert "IAM endpoint" in text
    for account in fleet.accounts:
        assert account.name in text
        assert account.ak in text
        assert account.sk in text
    assert fleet.accounts[1].security_token in text


# -- paging semantics ---------------------------------------------------------------------------


async def test_page_offset_is_a_page_index(session: aiohttp.ClientSession) -> None:
    """Default (documented) mode: offset=1&limit=10 is records 10..19, with count."""
    fleet = small_fleet()
    account, project, cluster_id = deep_cluster(fleet)
    truth = fleet.records(project.id, cluster_id)
    async with serve(fleet, Faults()) as url:
        client = Client(session, url)
        reply = await client.records(account, project.id, cluster_id, offset=1, limit=10)
        past = await client.records(account, project.id, cluster_id, offset=9, limit=10)
        default = await client.get(
            account, f"/v1/{project.id}/clusters/{cluster_id}/upgrade-management/records"
        )
    assert reply.status == 200
    assert reply.json() == {"count": len(truth), "records": truth[10:20]}
    assert past.json() == {"count": len(truth), "records": []}
    assert default.json()["records"] == truth[:10]


async def test_record_offset_mode_starts_at_a_record(session: aiohttp.ClientSession) -> None:
    """offset_mode="record": offset=1 is records 1..10."""
    fleet = small_fleet()
    account, project, cluster_id = deep_cluster(fleet)
    async with serve(fleet, Faults(offset_mode="record")) as url:
        reply = await Client(session, url).records(
            account, project.id, cluster_id, offset=1, limit=10
        )
    assert reply.json()["records"] == fleet.records(project.id, cluster_id)[1:11]


async def test_page_cap_silently_shortens_pages(session: aiohttp.ClientSession) -> None:
    """page_cap=4: limit=10 yields 4 records, and page 1 starts at record 4."""
    fleet = small_fleet()
    account, project, cluster_id = deep_cluster(fleet)
    async with serve(fleet, Faults(page_cap=4)) as url:
        reply = await Client(session, url).records(
            account, project.id, cluster_id, offset=1, limit=10
        )
    assert reply.json()["records"] == fleet.records(project.id, cluster_id)[4:8]


async def test_count_can_be_omitted(session: aiohttp.ClientSession) -> None:
    """include_count=False answers like the doc's example: records only."""
    fleet = small_fleet()
    account, project, cluster_id = deep_cluster(fleet)
    async with serve(fleet, Faults(include_count=False)) as url:
        reply = await Client(session, url).records(
            account, project.id, cluster_id, offset=0, limit=10
        )
    assert reply.json() == {"records": fleet.records(project.id, cluster_id)[:10]}


@pytest.mark.parametrize(
    ("offset", "limit"), [("-1", "10"), ("0", "0"), ("x", "10"), ("0", "1.5"), ("0", "101")]
)
async def test_invalid_paging_is_a_400(
    session: aiohttp.ClientSession, offset: str, limit: str
) -> None:
    """Negative offset, limit <= 0, non-integers and a limit over max_limit answer 400."""
    fleet = small_fleet()
    account, project, cluster_id = deep_cluster(fleet)
    path = f"/v1/{project.id}/clusters/{cluster_id}/upgrade-management/records"
    async with serve(fleet, Faults(max_limit=100)) as url:
        reply = await Client(session, url).get(
            account, path, [("offset", offset), ("limit", limit)]
        )
    assert reply.status == 400
    assert reply.json()["error_code"] == "DWS.0001"


async def test_mutation_applies_after_the_kth_request(session: aiohttp.ClientSession) -> None:
    """A record inserted after page 0 shifts page 1 by one: the client sees a repeat."""
    fleet = small_fleet()
    account, project, cluster_id = deep_cluster(fleet)
    before = fleet.records(project.id, cluster_id)
    faults = Faults(mutations={cluster_id: Mutation(after_requests=1, action="insert")})
    async with serve(fleet, faults) as url:
        client = Client(session, url)
        first = await client.records(account, project.id, cluster_id, offset=0, limit=10)
        second = await client.records(account, project.id, cluster_id, offset=1, limit=10)
    after = fleet.records(project.id, cluster_id)
    assert first.json()["records"] == before[:10]
    assert after[1:] == before
    assert second.json() == {"count": len(before) + 1, "records": after[10:20]}
    assert second.json()["records"][0] == before[9]
    assert faults.mutations == {}


async def test_remove_mutation_hides_a_record(session: aiohttp.ClientSession) -> None:
    """A record removed after page 0 shifts page 1 back by one: the client skips one."""
    fleet = small_fleet()
    account, project, cluster_id = deep_cluster(fleet)
    before = fleet.records(project.id, cluster_id)
    faults = Faults(mutations={cluster_id: Mutation(after_requests=1, action="remove", index=0)})
    async with serve(fleet, faults) as url:
        client = Client(session, url)
        await client.records(account, project.id, cluster_id, offset=0, limit=10)
        second = await client.records(account, project.id, cluster_id, offset=1, limit=10)
    assert second.json()["records"] == before[11:21]


# -- errors the service answers -----------------------------------------------------------------


async def test_cluster_failures_run_out(session: aiohttp.ClientSession) -> None:
    """ClusterFailure(503, times=2, skip=1): ok, 503, 503, then ok again."""
    fleet = small_fleet()
    account, project, cluster_id = deep_cluster(fleet)
    faults = Faults(cluster_failures={cluster_id: ClusterFailure(503, times=2, skip=1)})
    async with serve(fleet, faults) as url:
        client = Client(session, url)
        statuses = [
            (await client.records(account, project.id, cluster_id, offset=0, limit=10)).status
            for _ in range(4)
        ]
    assert statuses == [200, 503, 503, 200]
    assert faults.cluster_failures == {}
    assert faults.stats.records_by_cluster[cluster_id] == 4


async def test_forbidden_and_foreign_projects_are_403(session: aiohttp.ClientSession) -> None:
    """A forbidden project, or another account's project, answers 403 on clusters and records."""
    fleet = small_fleet()
    owner, other = fleet.accounts
    project = owner.projects[0]
    cluster_id = project.clusters[0].id
    records = f"/v1/{project.id}/clusters/{cluster_id}/upgrade-management/records"
    clusters = f"/v1.0/{project.id}/clusters"
    async with serve(fleet, Faults(forbidden_projects={project.id})) as url:
        client = Client(session, url)
        forbidden = [await client.get(owner, path) for path in (clusters, records)]
        foreign = [await client.get(other, path) for path in (clusters, records)]
        allowed = await client.get(owner, f"/v1.0/{owner.projects[1].id}/clusters")
    assert [r.status for r in forbidden + foreign] == [403] * 4
    assert all(r.json()["error_code"] == "DWS.0004" for r in forbidden + foreign)
    assert allowed.status == 200


async def test_unknown_project_cluster_and_api_are_404(session: aiohttp.ClientSession) -> None:
    """Unknown project or cluster: DWS 404; MOS has no DWS; an unknown API: APIG.0101."""
    fleet = small_fleet()
    account = fleet.accounts[0]
    project = account.projects[0]
    mos = account.mos
    async with serve(fleet) as url:
        client = Client(session, url)
        replies = [
            await client.get(account, f"/v1.0/{uuid.uuid4().hex}/clusters"),
            await client.get(account, f"/v1.0/{mos.id}/clusters"),
            await client.get(
                account,
                f"/v1/{project.id}/clusters/{uuid.uuid4()}/upgrade-management/records",
            ),
            await client.get(account, "/v2/nothing/here"),
        ]
    assert [r.status for r in replies] == [404] * 4
    assert [r.json()["error_code"] for r in replies] == [
        "DWS.0014",
        "DWS.0014",
        "DWS.0015",
        "APIG.0101",
    ]
    assert all(r.headers["X-Request-Id"] for r in replies)


async def test_gone_cluster_is_listed_but_its_records_are_404(
    session: aiohttp.ClientSession,
) -> None:
    """mark_gone: list-clusters still shows it, its records answer 404."""
    fleet = small_fleet()
    account = fleet.accounts[0]
    project = account.projects[0]
    gone = project.clusters[1]
    fleet.mark_gone(project.id, gone.id)
    async with serve(fleet) as url:
        client = Client(session, url)
        listed = await client.get(account, f"/v1.0/{project.id}/clusters")
        records = await client.records(account, project.id, gone.id, offset=0, limit=10)
    assert gone.id in [c["id"] for c in listed.json()["clusters"]]
    assert records.status == 404
    assert records.json()["error_code"] == "DWS.0015"


async def test_list_clusters_returns_the_fleets_clusters(session: aiohttp.ClientSession) -> None:
    """GET /v1.0/{project}/clusters: every ClusterInfo, count, and the enterprise filter."""
    fleet = small_fleet()
    account = fleet.accounts[1]
    project = account.projects[0]
    async with serve(fleet) as url:
        client = Client(session, url)
        reply = await client.get(account, f"/v1.0/{project.id}/clusters")
        other_eps = await client.get(
            account, f"/v1.0/{project.id}/clusters", [("enterprise_project_id", "123")]
        )
    assert reply.json() == {
        "clusters": [cluster.info for cluster in project.clusters],
        "count": len(project.clusters),
    }
    assert reply.headers["Content-Type"].startswith("application/json")
    assert other_eps.json() == {"clusters": [], "count": 0}


# -- the gateway: signatures and throttling ----------------------------------------------------


async def test_rate_limit_is_a_429_per_access_key(session: aiohttp.ClientSession) -> None:
    """rate_limit=2: a burst of 5 gets APIG.0308 stating the limit; another AK is not held back."""
    fleet = small_fleet()
    first, second = fleet.accounts
    async with serve(fleet, Faults(rate_limit=2, retry_after=1)) as url:
        client = Client(session, url)
        burst = [await client.get(first, "/v3/auth/projects") for _ in range(5)]
        other = await client.get(second, "/v3/auth/projects")
    statuses = [reply.status for reply in burst]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses
    throttled = next(reply for reply in burst if reply.status == 429)
    assert throttled.json()["error_code"] == "APIG.0308"
    assert "The throttling threshold has been reached" in throttled.json()["error_msg"]
    assert "limit:2," in throttled.json()["error_msg"]
    assert throttled.headers["Retry-After"] == "1"
    assert other.status == 200


def test_slow_rate_limit_still_admits_one_request() -> None:
    """Under 1 request/s the bucket still holds one request, then refuses the next."""
    faults = Faults(rate_limit=0.5)
    assert faults.take_token("AK")
    assert not faults.take_token("AK")
    assert faults.take_token("OTHER")


@pytest.mark.parametrize(
    "mistake",
    ["stale date", "future date", "wrong sk", "unknown ak", "no token", "wrong token", "no auth"],
)
async def test_bad_credentials_are_a_401(session: aiohttp.ClientSession, mistake: str) -> None:
    """Every way a signature can be wrong answers 401 APIG.0301."""
    fleet = small_fleet()
    permanent, temporary = fleet.accounts
    assert temporary.security_token is not None
    account, credentials, now = permanent, permanent.credentials(), None
    if mistake == "stale date":
        now = datetime.now(UTC) - timedelta(minutes=16)
    elif mistake == "future date":
        now = datetime.now(UTC) + timedelta(minutes=16)
    elif mistake == "wrong sk":
        credentials = Credentials(ak=permanent.ak, sk=Secret("x" * 40))
    elif mistake == "unknown ak":
        credentials = Credentials(ak="A" * 20, sk=Secret(permanent.sk))
    elif mistake == "no token":
        account = temporary
        credentials = Credentials(ak=temporary.ak, sk=Secret(temporary.sk))
    elif mistake == "wrong token":
        account = temporary
        credentials = Credentials(
            ak=temporary.ak, sk=Secret(temporary.sk), security_token=Secret("forged")
        )
    async with serve(fleet) as url:
        if mistake == "no auth":
            async with session.get(f"{url}/v3/auth/projects") as response:
                reply = Reply(response.status, response.headers, await response.read())
        else:
            reply = await Client(session, url).get(
                account, "/v3/auth/projects", credentials=credentials, now=now
            )
    assert reply.status == 401
    assert reply.json()["error_code"] == "APIG.0301"
    assert reply.json()["error_msg"].startswith("Incorrect IAM authentication information: ")


async def test_date_within_fifteen_minutes_is_accepted(session: aiohttp.ClientSession) -> None:
    """A clock 14 minutes off still signs valid requests; temporary keys with their token too."""
    fleet = small_fleet()
    permanent, temporary = fleet.accounts
    async with serve(fleet) as url:
        client = Client(session, url)
        skewed = await client.get(
            permanent, "/v3/auth/projects", now=datetime.now(UTC) - timedelta(minutes=14)
        )
        temp = await client.get(temporary, "/v3/auth/projects")
    assert skewed.status == temp.status == 200


async def test_unsigned_host_is_refused(session: aiohttp.ClientSession) -> None:
    """A signature that leaves Host out is a 401, even when otherwise correct."""
    fleet = small_fleet()
    account = fleet.accounts[0]
    async with serve(fleet) as url:
        host = URL(url).raw_authority
        signed = Signer(account.credentials()).sign(
            method="GET", host=host, path="/v3/auth/projects"
        )
        headers = dict(signed.headers)
        headers["Authorization"] = headers["Authorization"].replace("host;", "")
        async with session.get(f"{url}/v3/auth/projects", headers=headers) as response:
            status, body = response.status, await response.read()
    assert status == 401
    assert b"APIG.0301" in body


# -- IAM ----------------------------------------------------------------------------------------


async def test_iam_lists_the_callers_projects(session: aiohttp.ClientSession) -> None:
    """/v3/auth/projects: the account's projects (MOS included), with links; /v3/auth/domains."""
    fleet = small_fleet()
    account = fleet.accounts[1]
    async with serve(fleet) as url:
        client = Client(session, url)
        projects = (await client.get(account, "/v3/auth/projects")).json()
        domains = await client.get(account, "/v3/auth/domains")
    assert [(p["id"], p["name"]) for p in projects["projects"]] == [
        (p.id, p.name) for p in account.iam_projects
    ]
    assert all(p["domain_id"] == account.domain_id for p in projects["projects"])
    assert all(p["enabled"] and not p["is_domain"] for p in projects["projects"])
    assert projects["links"]["self"] == f"{url}/v3/auth/projects"
    assert domains.json()["domains"][0]["id"] == account.domain_id
    assert domains.headers["X-IAM-Trace-Id"] == domains.headers["X-Request-Id"]


async def test_iam_filters_and_pages_projects(session: aiohttp.ClientSession) -> None:
    """/v3/projects: name filter (how the SDK finds a region's project), page and per_page."""
    fleet = small_fleet(projects=5)
    account = fleet.accounts[0]
    wanted = account.iam_projects[2]
    async with serve(fleet) as url:
        client = Client(session, url)
        by_name = (await client.get(account, "/v3/projects", [("name", wanted.name)])).json()
        page2 = (
            await client.get(account, "/v3/projects", [("page", "2"), ("per_page", "2")])
        ).json()
        last = (
            await client.get(account, "/v3/projects", [("page", "3"), ("per_page", "2")])
        ).json()
        bad = await client.get(account, "/v3/projects", [("page", "0"), ("per_page", "2")])
    assert [p["id"] for p in by_name["projects"]] == [wanted.id]
    assert [p["id"] for p in page2["projects"]] == [p.id for p in account.iam_projects[2:4]]
    assert page2["links"]["next"] is not None
    assert page2["links"]["previous"] is not None
    assert [p["id"] for p in last["projects"]] == [p.id for p in account.iam_projects[4:6]]
    assert last["links"]["next"] is None
    assert bad.status == 400


# -- random faults ------------------------------------------------------------------------------


async def test_error_rates_answer_their_status(session: aiohttp.ClientSession) -> None:
    """error_rates at 1.0: 503 JSON, 502 as a proxy's HTML page, 429 with Retry-After."""
    fleet = small_fleet()
    account = fleet.accounts[0]
    faults = Faults(retry_after=3)
    async with serve(fleet, faults) as url:
        client = Client(session, url)
        faults.error_rates = {503: 1.0}
        unavailable = await client.get(account, "/v3/auth/projects")
        faults.error_rates = {502: 1.0}
        bad_gateway = await client.get(account, "/v3/auth/projects")
        faults.error_rates = {429: 1.0}
        throttled = await client.get(account, "/v3/auth/projects")
        faults.error_rates = {}
        fine = await client.get(account, "/v3/auth/projects")
    assert unavailable.status == 503
    assert unavailable.json()["error_code"].startswith("APIG.")
    assert bad_gateway.status == 502
    assert bad_gateway.headers["Content-Type"].startswith("text/html")
    assert throttled.status == 429
    assert throttled.headers["Retry-After"] == "3"
    assert "limit:50,time:1 second" in throttled.json()["error_msg"]
    assert fine.status == 200
    assert faults.stats.by_status == {503: 1, 502: 1, 429: 1, 200: 1}


async def test_reset_and_down_region_drop_the_connection() -> None:
    """reset_rate=1 and a down region close the connection without an HTTP response."""
    fleet = small_fleet()
    account = fleet.accounts[0]
    down, up = account.projects
    faults = Faults(down_regions={down.region})
    async with serve(fleet, faults) as url, aiohttp.ClientSession() as session:
        client = Client(session, url)
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.get(account, f"/v1.0/{down.id}/clusters")
        assert (await client.get(account, f"/v1.0/{up.id}/clusters")).status == 200
        faults.reset_rate = 1.0
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.get(account, f"/v1.0/{up.id}/clusters")
    # aiohttp (3.14) silently resends an idempotent request once after a reset, so each failed
    # call may have cost the server two connections.
    by_status = faults.stats.by_status
    assert by_status[200] == 1
    assert 2 <= by_status[0] <= 4


async def test_truncated_and_html_bodies(session: aiohttp.ClientSession) -> None:
    """truncate_rate: the body stops short of Content-Length; html_rate: a 200 with HTML."""
    fleet = small_fleet()
    account = fleet.accounts[0]
    faults = Faults(truncate_rate=1.0)
    async with serve(fleet, faults) as url:
        client = Client(session, url)
        with pytest.raises(aiohttp.ClientPayloadError):
            await client.get(account, "/v3/auth/projects")
        faults.truncate_rate, faults.html_rate = 0.0, 1.0
        html = await client.get(account, "/v3/auth/projects")
    assert html.status == 200
    assert html.headers["Content-Type"].startswith("text/html")
    assert html.body.lstrip().startswith(b"<!DOCTYPE html>")


async def test_stall_outlasts_a_client_timeout(session: aiohttp.ClientSession) -> None:
    """stall_rate=1: headers arrive, the body does not within the client's patience."""
    fleet = small_fleet()
    account = fleet.accounts[0]
    async with serve(fleet, Faults(stall_rate=1.0, stall_seconds=30)) as url:
        with pytest.raises(TimeoutError):
            await Client(session, url).get(account, "/v3/auth/projects", timeout=0.3)


async def test_latency_delays_every_answer(session: aiohttp.ClientSession) -> None:
    """latency=0.2: no answer comes sooner."""
    fleet = small_fleet()
    async with serve(fleet, Faults(latency=0.2, latency_jitter=0.05)) as url:
        started = time.perf_counter()
        reply = await Client(session, url).get(fleet.accounts[0], "/v3/auth/projects")
    assert reply.status == 200
    assert time.perf_counter() - started >= 0.2


async def test_stats_count_by_route_and_reset(session: aiohttp.ClientSession) -> None:
    """Counters by route kind, status and cluster; reset_stats zeroes them."""
    fleet = small_fleet()
    account = fleet.accounts[0]
    project = account.projects[0]
    cluster = project.clusters[0]
    faults = Faults()
    async with serve(fleet, faults) as url:
        client = Client(session, url)
        await client.get(account, "/v3/auth/projects")
        await client.get(account, f"/v1.0/{project.id}/clusters")
        await client.records(account, project.id, cluster.id, offset=0, limit=10)
        await client.get(account, "/nowhere")
    stats = faults.stats
    assert stats.by_kind == {"iam": 1, "clusters": 1, "records": 1, "other": 1}
    assert stats.by_status == {200: 3, 404: 1}
    assert stats.records_by_cluster == {cluster.id: 1}
    assert stats.total == 4
    faults.reset_stats()
    assert faults.stats.total == 0


# -- ways to run it -----------------------------------------------------------------------------


def test_simulator_thread_serves_sync_callers() -> None:
    """SimulatorThread: a URL that answers while inside the block, nothing after it."""
    fleet = small_fleet()
    with SimulatorThread(fleet) as sim:
        url = sim.url
        assert sim.fleet is fleet
        reply = requests.get(f"{url}/v3/auth/projects", timeout=5)
        assert reply.status_code == 401
        assert reply.headers["X-Request-Id"]
    with pytest.raises(RuntimeError):
        _ = sim.url
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/v3/auth/projects", timeout=5)


def test_run_forever_serves_until_sigterm() -> None:
    """run_forever reports its URL, serves, and exits cleanly on SIGTERM."""
    code = (
        "from collector.simulator import Fleet, Faults, run_forever\n"
        "fleet = Fleet.generate(seed=1, accounts=1, projects=1, clusters=1, records=1)\n"
        "run_forever(fleet, Faults(), host='127.0.0.1', port=0,"
        " on_ready=lambda url: print(url, flush=True))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/v3/auth/projects", timeout=5).status_code == 401
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
