"""The official Huawei Cloud SDK against the simulator: proof that it speaks the real API.

The SDK (huaweicloudsdkcore/dws/iam 3.1.219) builds, signs and parses every request itself, so a
simulator that satisfied only our own client could still be wrong; one that satisfies the SDK
and hands back exactly the fleet's ground truth is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials, GlobalCredentials
from huaweicloudsdkcore.exceptions.exceptions import (
    ClientRequestException,
    ServerResponseException,
)
from huaweicloudsdkcore.region.region import Region
from huaweicloudsdkdws.v2 import DwsClient, ListClustersRequest, ListUpdateRecordRequest
from huaweicloudsdkdws.v2.model import ClusterInfo
from huaweicloudsdkiam.v3 import (
    IamClient,
    KeystoneListAuthProjectsRequest,
    KeystoneListProjectsRequest,
)

from collector.simulator import Faults, Fleet, SimAccount, SimProject, SimulatorThread


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    fleet = Fleet.generate(seed=42, accounts=2, projects=2, clusters=3, records=12)
    with SimulatorThread(fleet, Faults()) as thread:
        yield thread


@pytest.fixture(autouse=True)
def clean_faults(sim: SimulatorThread) -> Iterator[None]:
    yield
    sim.faults.error_rates = {}
    sim.faults.page_cap = None


def dws_client(
    sim: SimulatorThread, account: SimAccount, project: SimProject, *, sk: str | None = None
) -> Any:
    credentials = BasicCredentials(account.ak, sk or account.sk, project.id)
    if account.security_token:
        credentials = credentials.with_security_token(account.security_token)
    return DwsClient.new_builder().with_credentials(credentials).with_endpoints([sim.url]).build()


def iam_client(sim: SimulatorThread, account: SimAccount, *, sk: str | None = None) -> Any:
    credentials = GlobalCredentials(account.ak, sk or account.sk)
    if account.security_token:
        credentials = credentials.with_security_token(account.security_token)
    return IamClient.new_builder().with_credentials(credentials).with_endpoints([sim.url]).build()


def page_all(client: Any, cluster_id: str, *, limit: int = 10) -> list[dict[str, Any]]:
    """What users write today: page with offset = page index until a short page."""
    records: list[dict[str, Any]] = []
    page = 0
    while True:
        response = client.list_update_record(
            ListUpdateRecordRequest(cluster_id=cluster_id, offset=page, limit=limit)
        )
        records += [record.to_dict() for record in response.records]
        if len(response.records) < limit:
            return records
        page += 1


@pytest.mark.parametrize("index", [0, 1], ids=["permanent-keys", "temporary-keys"])
def test_sdk_list_clusters_equals_the_fleet(sim: SimulatorThread, index: int) -> None:
    """DwsClient.list_clusters returns each project's clusters, field for field."""
    account = sim.fleet.accounts[index]
    assert (account.security_token is not None) == (index == 1)
    for project in account.projects:
        client = dws_client(sim, account, project)
        try:
            response = client.list_clusters(ListClustersRequest())
        finally:
            client.close()
        assert response.count == len(project.clusters)
        assert [cluster.to_dict() for cluster in response.clusters] == [
            {key: value for key, value in cluster.info.items() if key in ClusterInfo.attribute_map}
            for cluster in project.clusters
        ]


@pytest.mark.parametrize("index", [0, 1], ids=["permanent-keys", "temporary-keys"])
def test_sdk_paging_upgrade_records_equals_the_fleet(sim: SimulatorThread, index: int) -> None:
    """list_update_record paged by page index returns every record of every cluster, in order."""
    account = sim.fleet.accounts[index]
    seen_multi_page = False
    for project in account.projects:
        client = dws_client(sim, account, project)
        try:
            for cluster in project.clusters:
                truth = sim.fleet.records(project.id, cluster.id)
                assert page_all(client, cluster.id) == truth
                seen_multi_page |= len(truth) > 10
                count = client.list_update_record(
                    ListUpdateRecordRequest(cluster_id=cluster.id, offset=0, limit=10)
                ).count
                assert count == len(truth)
        finally:
            client.close()
    assert seen_multi_page


def test_sdk_naive_loop_loses_records_under_a_page_cap(sim: SimulatorThread) -> None:
    """With a silent page cap, stopping at the first short page drops the rest (why we don't)."""
    account = sim.fleet.accounts[0]
    project = account.projects[0]
    cluster = max(project.clusters, key=lambda c: sim.fleet.record_count(project.id, c.id))
    sim.faults.page_cap = 5
    client = dws_client(sim, account, project)
    try:
        got = page_all(client, cluster.id)
    finally:
        client.close()
    assert got == sim.fleet.records(project.id, cluster.id)[:5]


@pytest.mark.parametrize("index", [0, 1], ids=["permanent-keys", "temporary-keys"])
def test_sdk_iam_lists_the_accounts_projects(sim: SimulatorThread, index: int) -> None:
    """IamClient.keystone_list_auth_projects returns the account's projects, MOS included."""
    account = sim.fleet.accounts[index]
    client = iam_client(sim, account)
    try:
        response = client.keystone_list_auth_projects(KeystoneListAuthProjectsRequest())
        by_name = client.keystone_list_projects(
            KeystoneListProjectsRequest(name=account.projects[0].name)
        )
    finally:
        client.close()
    assert [(p.id, p.name, p.domain_id, p.parent_id) for p in response.projects] == [
        (p.id, p.name, p.domain_id, p.parent_id) for p in account.iam_projects
    ]
    assert all(p.enabled and not p.is_domain for p in response.projects)
    assert response.links.to_dict() == {"_self": f"{sim.url}/v3/auth/projects"}
    assert [p.id for p in by_name.projects] == [account.projects[0].id]


def test_sdk_discovers_domain_and_project_ids(sim: SimulatorThread) -> None:
    """Without ids the SDK asks IAM: /v3/auth/domains for the domain, /v3/projects?name= for a
    region's project; both answers come from the simulator and match the fleet."""
    account = sim.fleet.accounts[1]
    project = account.projects[0]
    assert project.is_region
    global_credentials = (
        GlobalCredentials(account.ak, account.sk)
        .with_security_token(account.security_token)
        .with_iam_endpoint(sim.url)
    )
    iam = (
        IamClient.new_builder()
        .with_credentials(global_credentials)
        .with_region(Region("simulated", sim.url))
        .build()
    )
    basic = (
        BasicCredentials(account.ak, account.sk)
        .with_security_token(account.security_token)
        .with_iam_endpoint(sim.url)
    )
    dws = DwsClient.new_builder().with_credentials(basic).with_region(Region(project.name, sim.url))
    dws = dws.build()
    try:
        # The domain id now travels as a signed X-Domain-Id header on every IAM call.
        projects = iam.keystone_list_auth_projects(KeystoneListAuthProjectsRequest()).projects
        clusters = dws.list_clusters(ListClustersRequest()).clusters
    finally:
        iam.close()
        dws.close()
    assert global_credentials.domain_id == account.domain_id
    assert basic.project_id == project.id
    assert len(projects) == len(account.iam_projects)
    assert [c.id for c in clusters] == [c.id for c in project.clusters]


def test_sdk_wrong_secret_key_is_a_401(sim: SimulatorThread) -> None:
    """A wrong SK fails the signature: ClientRequestException 401, error_code APIG.0301."""
    account = sim.fleet.accounts[0]
    project = account.projects[0]
    client = dws_client(sim, account, project, sk="x" * 40)
    try:
        with pytest.raises(ClientRequestException) as caught:
            client.list_clusters(ListClustersRequest())
    finally:
        client.close()
    assert caught.value.status_code == 401
    assert caught.value.error_code == "APIG.0301"
    assert caught.value.request_id


def test_sdk_temporary_keys_without_token_are_a_401(sim: SimulatorThread) -> None:
    """Temporary AK/SK signed without their security token are refused."""
    account = sim.fleet.accounts[1]
    client = (
        IamClient.new_builder()
        .with_credentials(GlobalCredentials(account.ak, account.sk))
        .with_endpoints([sim.url])
        .build()
    )
    try:
        with pytest.raises(ClientRequestException) as caught:
            client.keystone_list_auth_projects(KeystoneListAuthProjectsRequest())
    finally:
        client.close()
    assert (caught.value.status_code, caught.value.error_code) == (401, "APIG.0301")


def test_sdk_reports_a_server_error_with_its_request_id(sim: SimulatorThread) -> None:
    """A 503 reaches the SDK as a ServerResponseException carrying X-Request-Id."""
    account = sim.fleet.accounts[0]
    project = account.projects[0]
    sim.faults.error_rates = {503: 1.0}
    client = dws_client(sim, account, project)
    try:
        with pytest.raises(ServerResponseException) as caught:
            client.list_clusters(ListClustersRequest())
    finally:
        client.close()
    assert caught.value.status_code == 503
    assert caught.value.error_code == "APIG.0202"
    assert len(caught.value.request_id) == 32


def test_sdk_turns_a_429_into_a_retry_error(sim: SimulatorThread) -> None:
    """The SDK's urllib3 Retry(total=0, status_forcelist=[429]) swallows the 429 body: the
    caller gets error_code "429" and "too many 429 error responses", not APIG.0308."""
    account = sim.fleet.accounts[0]
    project = account.projects[0]
    sim.faults.error_rates = {429: 1.0}
    client = dws_client(sim, account, project)
    try:
        with pytest.raises(ClientRequestException) as caught:
            client.list_clusters(ListClustersRequest())
    finally:
        client.close()
    assert caught.value.status_code == 429
    assert caught.value.error_code == "429"
    assert "too many 429 error responses" in caught.value.error_msg
