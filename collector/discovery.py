"""Find what to collect: an account's projects (IAM, or the config) and each project's clusters.

Identifiers that come back from a server are checked before they are used in a URL or written
anywhere: a project id is 32 hex characters and a cluster id a UUID, nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from collector.auth import Signer
from collector.client import ApiClient
from collector.config import AccountConfig
from collector.endpoints import dws_endpoint, region_of_project_name
from collector.errors import BadResponseError
from collector.limits import Route

PROJECT_ID = re.compile(r"[0-9a-f]{32}")
CLUSTER_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Project:
    account: str
    id: str
    name: str
    region: str
    endpoint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SkippedProject:
    """A project IAM listed that has nothing to collect (not a region, disabled, no endpoint)."""

    account: str
    id: str
    name: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Discovered:
    projects: list[Project]
    skipped: list[SkippedProject]
    #: IAM entries refused because they are not a project object with a 32-hex id (shown
    #: escaped); never requested, and the account's other projects go on.
    rejected: list[str] = field(default_factory=list)


async def discover_projects(
    client: ApiClient, account: AccountConfig, signer: Signer, *, route: Route
) -> Discovered:
    """The account's projects to collect: explicit ones, plus IAM's unless only explicit ones
    were configured."""
    projects: dict[str, Project] = {}
    skipped: list[SkippedProject] = []
    for ref in account.projects:
        endpoint = dws_endpoint(ref.region, account.endpoints)
        assert endpoint is not None, "config validation guarantees an endpoint"
        projects[ref.id] = Project(
            account=account.name, id=ref.id, name=ref.region, region=ref.region, endpoint=endpoint
        )
    if account.projects and not account.regions:
        return Discovered(projects=list(projects.values()), skipped=skipped)

    body = await client.get_json(
        signer=signer,
        route=route,
        base_url=account.iam_endpoint,
        path="/v3/auth/projects",
        context={"account": account.name},
    )
    listed = body.get("projects")
    if not isinstance(listed, list):
        raise BadResponseError("IAM project list has no 'projects' array", transient=False)
    wanted = set(account.regions)
    rejected: list[str] = []
    for item in listed:
        project_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(project_id, str) or not PROJECT_ID.fullmatch(project_id):
            rejected.append(repr(project_id)[:80] if isinstance(item, dict) else "a non-object")
            continue
        project = _project_from_iam(item, project_id, account, skipped, wanted)
        if project is not None and project.id not in projects:
            projects[project.id] = project
    return Discovered(projects=list(projects.values()), skipped=skipped, rejected=rejected)


def _project_from_iam(
    item: dict[str, Any],
    project_id: str,
    account: AccountConfig,
    skipped: list[SkippedProject],
    wanted: set[str],
) -> Project | None:
    name = item.get("name")
    name = name if isinstance(name, str) else ""

    def skip(reason: str) -> None:
        skipped.append(
            SkippedProject(account=account.name, id=project_id, name=name, reason=reason)
        )

    region = region_of_project_name(name, account.endpoints)
    if region is None:
        skip("not a region (no DWS endpoint)")
        return None
    if wanted and region not in wanted:
        return None  # outside the configured regions: not ours to collect, not worth a note
    if item.get("enabled") is False:
        skip("disabled in IAM")
        return None
    endpoint = dws_endpoint(region, account.endpoints)
    if endpoint is None:
        skip(f"no DWS endpoint known for region {region}")
        return None
    return Project(account=account.name, id=project_id, name=name, region=region, endpoint=endpoint)


@dataclass(frozen=True, slots=True, kw_only=True)
class Listing:
    """A project's clusters, and the entries refused because their id is not a UUID."""

    clusters: list[dict[str, Any]]
    rejected: list[str]


async def list_clusters(
    client: ApiClient, project: Project, signer: Signer, *, route: Route
) -> Listing:
    """Every cluster of a project (the API does not page this list).

    An entry whose id is not a UUID is never requested nor written anywhere as a path: it is
    refused (and reported by the caller), and the project's other clusters go on.
    """
    body = await client.get_json(
        signer=signer,
        route=route,
        base_url=project.endpoint,
        path=f"/v1.0/{project.id}/clusters",
        project_id=project.id,
        context={"account": project.account, "region": project.region, "project_id": project.id},
    )
    clusters = body.get("clusters")
    if clusters is None:
        return Listing(clusters=[], rejected=[])
    if not isinstance(clusters, list):
        raise BadResponseError("cluster list 'clusters' is not an array", transient=False)
    good: list[dict[str, Any]] = []
    rejected: list[str] = []
    for cluster in clusters:
        cluster_id = cluster.get("id") if isinstance(cluster, dict) else None
        if isinstance(cluster_id, str) and CLUSTER_ID.fullmatch(cluster_id):
            good.append(cluster)
        else:
            # repr() keeps control characters visible and the message on one line.
            shown = repr(cluster_id)[:80] if isinstance(cluster, dict) else "a non-object entry"
            rejected.append(shown)
    return Listing(clusters=good, rejected=rejected)
