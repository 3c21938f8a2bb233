"""The simulated Huawei Cloud: IAM and GaussDB(DWS) behind one aiohttp application.

Every region and IAM share one listener, so a client points each regional endpoint (and the IAM
endpoint) at the same URL; the project id in the path says which region a DWS request is for.

Each request goes through the same steps, gateway first, service last:

1. count it and hold it for the configured latency;
2. a region in ``faults.down_regions`` resets the connection (its endpoint is unreachable);
3. verify the SDK-HMAC-SHA256 signature with :mod:`collector.auth`'s own canonical helpers
   (401 ``APIG.0301``);
4. the per-access-key rate limit (429 ``APIG.0308``);
5. the random faults (error statuses, resets, HTML pages, stalls, truncated bodies);
6. the API itself, answered from the :class:`~collector.simulator.fleet.Fleet` ground truth:
   a DWS project must be a region project of the signing account (else 404 / 403), and a signed
   ``X-Project-Id``, when sent, must name the project in the path (else 403);
7. after a records response is built, any :class:`~collector.simulator.faults.Mutation` due;
8. the hostile behaviours: a records, cluster list or IAM project list body rewritten to lie
   (wrong shapes, bad identifiers, endless pages), or a records answer delivered so as to hurt
   (a huge chunked body, no answer at all, a trickle).

This module is the pipeline and the well-behaved API. What the server sends when it misbehaves
(a fault's answer, a damaged delivery, a hostile behaviour) is built and delivered by
:mod:`~collector.simulator.misbehave`; the body shapes both share (JSON, the gateway's errors,
an IAM project) are in :mod:`~collector.simulator.responses`.

The error codes the documentation names (``APIG.0301``, ``APIG.0308``) are the real ones; the
``DWS.xxxx`` codes are plausible stand-ins, since clients must key on the HTTP status.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from collector.auth import (
    DATE_FORMAT,
    canonical_request,
    parse_authorization,
    signature,
    string_to_sign,
)
from collector.simulator.faults import NO_RESPONSE, Faults
from collector.simulator.fleet import Fleet, SimAccount, SimProject
from collector.simulator.misbehave import (
    HOSTILE_DELIVERIES,
    fault_response,
    hostile_iam,
    hostile_listing,
    hostile_records,
    proxy_page,
    reset_connection,
    send_hostile,
    send_stalled,
    send_truncated,
)
from collector.simulator.responses import (
    gateway_error,
    iam_project,
    json_response,
    service_error,
    throttled,
)

RouteKind = Literal["iam", "clusters", "records", "other"]
Delivery = Literal["normal", "truncate", "stall", "reset"]
ApiHandler = Callable[[web.Request, SimAccount], Awaitable[web.Response]]
RawHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FLEET_KEY: Final = web.AppKey("fleet", Fleet)
FAULTS_KEY: Final = web.AppKey("faults", Faults)

#: The gateway rejects a signature whose X-Sdk-Date is further than this from its clock.
MAX_CLOCK_SKEW: Final = timedelta(minutes=15)
_DEFAULT_LIMIT: Final = 10
_IAM_MAX_PER_PAGE: Final = 5000
_INTEGER: Final = re.compile(r"-?[0-9]+")
_NO_SUCH_API: Final = "The API does not exist or has not been published in the environment"
_DELIVERIES: Final[dict[str, Delivery]] = {"ok": "normal", "truncate": "truncate", "stall": "stall"}


def build_app(fleet: Fleet, faults: Faults) -> web.Application:
    """The whole simulated cloud as one application: IAM routes, DWS routes, a 404 catch-all."""
    simulator = _Simulator(fleet, faults)
    app = web.Application()
    app[FLEET_KEY] = fleet
    app[FAULTS_KEY] = faults
    routes: tuple[tuple[str, RouteKind, ApiHandler], ...] = (
        ("/v3/auth/projects", "iam", simulator.auth_projects),
        ("/v3/projects", "iam", simulator.projects),
        ("/v3/auth/domains", "iam", simulator.auth_domains),
        ("/v1.0/{project_id}/clusters", "clusters", simulator.clusters),
        (
            "/v1/{project_id}/clusters/{cluster_id}/upgrade-management/records",
            "records",
            simulator.records,
        ),
    )
    for path, kind, handler in routes:
        app.router.add_get(path, simulator.route(kind, handler), allow_head=False)
    # Registered last so it only sees what no API matched, whatever the method: APIG answers
    # an unknown API with APIG.0101, not with aiohttp's text/plain 404.
    app.router.add_route("*", "/{tail:.*}", simulator.route("other", None))
    return app


@dataclass(frozen=True, slots=True)
class _Reply:
    response: web.Response
    delivery: Delivery = "normal"


class _Simulator:
    __slots__ = ("faults", "fleet")

    def __init__(self, fleet: Fleet, faults: Faults) -> None:
        self.fleet = fleet
        self.faults = faults

    def route(self, kind: RouteKind, handler: ApiHandler | None) -> RawHandler:
        """The aiohttp handler for one route; ``handler`` None answers "no such API"."""

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, kind, handler)

        return handle

    # -- the request pipeline -------------------------------------------------------------------

    async def _serve(
        self, request: web.Request, kind: RouteKind, handler: ApiHandler | None
    ) -> web.StreamResponse:
        faults = self.faults
        cluster_id = request.match_info.get("cluster_id") if kind == "records" else None
        seen = faults.count_request(kind, cluster_id=cluster_id)
        delay = faults.delay()
        if delay > 0:
            await asyncio.sleep(delay)
        reply = await self._answer(request, kind, handler)
        if cluster_id is not None:
            # The body is already serialised: the change shows from the next request on.
            self._mutate(request.match_info["project_id"], cluster_id, seen)
        if reply.delivery == "reset":
            faults.count_status(NO_RESPONSE)
            reset_connection(request)
            # aiohttp's attempt to send this on the dead connection is dropped quietly.
            return reply.response
        response = reply.response
        request_id = uuid.uuid4().hex
        response.headers["X-Request-Id"] = request_id
        if kind == "iam":
            response.headers["X-IAM-Trace-Id"] = request_id
        hostile = None if cluster_id is None else faults.hostile.get(cluster_id)
        if hostile in HOSTILE_DELIVERIES and reply.delivery == "normal" and response.status == 200:
            return await send_hostile(request, response, hostile, faults)
        faults.count_status(response.status)
        if reply.delivery == "truncate":
            return await send_truncated(request, response)
        if reply.delivery == "stall":
            return await send_stalled(request, response, faults.stall_seconds)
        return response

    async def _answer(
        self, request: web.Request, kind: RouteKind, handler: ApiHandler | None
    ) -> _Reply:
        if handler is None:
            return _Reply(gateway_error(404, "APIG.0101", _NO_SUCH_API))
        try:
            account = await self._admit(request)
            draw = self.faults.draw()
            if draw.outcome in ("ok", "truncate", "stall"):
                # Truncation and stalls damage the delivery of a real answer, not the answer.
                return _Reply(await handler(request, account), _DELIVERIES[draw.outcome])
        except _Refused as refused:
            return _Reply(refused.response, refused.delivery)
        if draw.outcome == "error":
            assert draw.status is not None
            return _Reply(self._fault_status(draw.status, kind))
        if draw.outcome == "reset":
            return _Reply(gateway_error(503, "APIG.0202", "Connection reset"), "reset")
        return _Reply(proxy_page())

    async def _admit(self, request: web.Request) -> SimAccount:
        """What the gateway checks before the service sees a request: region, signature, rate."""
        project_id = request.match_info.get("project_id")
        project = None if project_id is None else self.fleet.project(project_id)
        region = None if project is None else project.region
        if region is not None and self.faults.region_is_down(region):
            raise _Refused(gateway_error(503, "APIG.0202", "Region down"), "reset")
        account = await self._authenticate(request)
        # Huawei Cloud throttles per user and per API; each region is its own gateway.
        if not self.faults.take_token(account.ak if region is None else f"{account.ak}@{region}"):
            raise _Refused(throttled(self.faults.rate_limit, self.faults.retry_after))
        status = None if region is None else self.faults.region_status.get(region)
        if status is not None:
            raise _Refused(self._fault_status(status, "records"))
        return account

    async def _authenticate(self, request: web.Request) -> SimAccount:
        """The account whose key signed this request; raises :class:`_Refused` (401) if none."""
        header = request.headers.get("Authorization")
        if not header:
            raise _unauthorized("the Authorization header is missing")
        parsed = parse_authorization(header)
        if parsed is None:
            raise _unauthorized("the Authorization header is not SDK-HMAC-SHA256")
        account = self.fleet.account_by_ak(parsed.access_key)
        if account is None:
            raise _unauthorized(f"access key {parsed.access_key} does not exist")
        signed = parsed.signed_headers
        if "host" not in signed or "x-sdk-date" not in signed:
            raise _unauthorized("Host and X-Sdk-Date must be signed")
        missing = [name for name in signed if name not in request.headers]
        if missing:
            raise _unauthorized(f"signed headers missing from the request: {', '.join(missing)}")
        sdk_date = request.headers["X-Sdk-Date"]
        _check_date(sdk_date)
        _check_token(account, request.headers.get("X-Security-Token"), signed)
        raw_path, _, raw_query = request.raw_path.partition("?")
        canonical = canonical_request(
            method=request.method,
            path=raw_path,
            query=parse_qsl(raw_query, keep_blank_values=True),
            headers={name: ",".join(request.headers.getall(name)) for name in signed},
            signed=signed,
            body=await request.read(),
        )
        expected = signature(account.sk, string_to_sign(sdk_date, canonical))
        if not hmac.compare_digest(expected, parsed.signature):
            raise _unauthorized("verify aksk signature fail")
        return account

    def _mutate(self, project_id: str, cluster_id: str, seen: int) -> None:
        mutation = self.faults.take_mutation(cluster_id, seen)
        if mutation is None or self.fleet.cluster(project_id, cluster_id) is None:
            return
        if mutation.action == "insert":
            self.fleet.insert_record(project_id, cluster_id)
        elif self.fleet.record_count(project_id, cluster_id) > mutation.index:
            self.fleet.remove_record(project_id, cluster_id, mutation.index)

    def _fault_status(self, status: int, kind: RouteKind) -> web.Response:
        service = "IAM" if kind == "iam" else "DWS"
        return fault_response(status, service, self.faults.retry_after)

    # -- IAM ------------------------------------------------------------------------------------

    async def auth_projects(self, request: web.Request, account: SimAccount) -> web.Response:
        base = _base_url(request)
        projects: list[object] = [iam_project(project, base) for project in account.iam_projects]
        body: dict[str, object] = {
            "projects": projects,
            "links": {"self": f"{base}/v3/auth/projects"},
        }
        hostile = self.faults.hostile_iam.get(account.name)
        if hostile is not None:
            hostile_iam(hostile, body, account, base)
        return json_response(body)

    async def projects(self, request: web.Request, account: SimAccount) -> web.Response:
        query = request.query
        base = _base_url(request)
        selected = [
            project
            for project in account.iam_projects
            if query.get("name", project.name) == project.name
            and query.get("domain_id", project.domain_id) == project.domain_id
            and query.get("parent_id", project.parent_id) == project.parent_id
            and query.get("enabled", "true") == "true"
            and query.get("is_domain", "false") == "false"
        ]
        links: dict[str, str | None] = {"self": f"{base}{request.rel_url}", "previous": None}
        if "page" in query or "per_page" in query:
            page = _positive(query.get("page", "1"))
            per_page = _positive(query.get("per_page", str(_IAM_MAX_PER_PAGE)))
            if page is None or per_page is None or per_page > _IAM_MAX_PER_PAGE:
                return _keystone_error(
                    400, f"page must be >= 1 and per_page in [1, {_IAM_MAX_PER_PAGE}]"
                )
            start = (page - 1) * per_page
            more = len(selected) > start + per_page
            selected = selected[start : start + per_page]
            params = {key: value for key, value in query.items() if key != "page"}
            if page > 1:
                links["previous"] = f"{base}/v3/projects?{urlencode({**params, 'page': page - 1})}"
            links["next"] = (
                f"{base}/v3/projects?{urlencode({**params, 'page': page + 1})}" if more else None
            )
        else:
            links["next"] = None
        return json_response({"projects": [iam_project(p, base) for p in selected], "links": links})

    async def auth_domains(self, request: web.Request, account: SimAccount) -> web.Response:
        base = _base_url(request)
        domain = {
            "enabled": True,
            "id": account.domain_id,
            "name": account.name,
            "links": {"self": f"{base}/v3/domains/{account.domain_id}"},
            "description": "",
        }
        return json_response({"domains": [domain], "links": {"self": f"{base}/v3/auth/domains"}})

    # -- DWS ------------------------------------------------------------------------------------

    async def clusters(self, request: web.Request, account: SimAccount) -> web.Response:
        project = self._project(request, account)
        wanted = request.query.get("enterprise_project_id")
        # Every simulated cluster lives in the default enterprise project "0".
        if wanted in (None, "", "0", "all_granted_eps"):
            clusters = [cluster.info for cluster in project.clusters]
        else:
            clusters = []
        hostile = self.faults.hostile_projects.get(project.id)
        if hostile is not None:
            return json_response(hostile_listing(hostile, project.id, clusters))
        return json_response({"clusters": clusters, "count": len(clusters)})

    async def records(self, request: web.Request, account: SimAccount) -> web.Response:
        project = self._project(request, account)
        cluster_id = request.match_info["cluster_id"]
        if self.fleet.cluster(project.id, cluster_id) is None:
            return service_error(404, "DWS.0015", f"The cluster {cluster_id} does not exist.")
        failure = self.faults.take_cluster_failure(cluster_id)
        if failure is not None:
            return self._fault_status(failure, "records")
        if self.fleet.is_gone(project.id, cluster_id):
            return service_error(404, "DWS.0015", f"The cluster {cluster_id} does not exist.")
        offset, limit = self._paging(request)
        page_cap = self.faults.page_cap
        size = min(limit, page_cap) if page_cap is not None else limit
        start = offset * size if self.faults.offset_mode == "page" else offset
        history = self.fleet.history(project.id, cluster_id)
        page = history[start : start + size]
        hostile = self.faults.hostile.get(cluster_id)
        if hostile is not None and hostile not in HOSTILE_DELIVERIES:
            return hostile_records(hostile, cluster_id, history, start=start, size=size)
        if self.faults.include_count:
            return json_response({"count": len(history), "records": page})
        return json_response({"records": page})

    def _paging(self, request: web.Request) -> tuple[int, int]:
        """offset and limit from the query; raises :class:`_Refused` (400) when invalid."""
        offset = _integer(request.query.get("offset", "0"))
        limit = _integer(request.query.get("limit", str(_DEFAULT_LIMIT)))
        max_limit = self.faults.max_limit
        if offset is None or offset < 0:
            raise _Refused(
                service_error(400, "DWS.0001", "Invalid parameter: offset must be an integer >= 0.")
            )
        if limit is None or limit <= 0 or (max_limit is not None and limit > max_limit):
            bound = "" if max_limit is None else f" and <= {max_limit}"
            raise _Refused(
                service_error(
                    400, "DWS.0001", f"Invalid parameter: limit must be an integer > 0{bound}."
                )
            )
        return offset, limit

    def _project(self, request: web.Request, account: SimAccount) -> SimProject:
        """The path's project if this account may use DWS in it; else raises :class:`_Refused`."""
        project_id = request.match_info["project_id"]
        project = self.fleet.project(project_id)
        if project is None or not project.is_region:
            raise _Refused(
                service_error(404, "DWS.0014", f"The project {project_id} does not exist.")
            )
        owner = self.fleet.owner(project_id)
        if owner is None or owner.ak != account.ak:
            raise _forbidden("the project belongs to another account.")
        scoped = request.headers.get("X-Project-Id")
        if scoped is not None and scoped != project_id:
            raise _forbidden("X-Project-Id differs from the project in the URL.")
        if project_id in self.faults.forbidden_projects:
            raise _forbidden("no DWS permission in this project, or the project is frozen.")
        return project


# -- helpers ------------------------------------------------------------------------------------


class _Refused(Exception):
    """Raised inside the pipeline to answer at once with ``response``, delivered as said."""

    def __init__(self, response: web.Response, delivery: Delivery = "normal") -> None:
        super().__init__(response.status)
        self.response = response
        self.delivery: Delivery = delivery


def _unauthorized(reason: str) -> _Refused:
    return _Refused(
        gateway_error(401, "APIG.0301", f"Incorrect IAM authentication information: {reason}")
    )


def _forbidden(reason: str) -> _Refused:
    return _Refused(service_error(403, "DWS.0004", f"Permission denied: {reason}"))


def _check_date(sdk_date: str) -> None:
    try:
        moment = datetime.strptime(sdk_date, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise _unauthorized(
            f"X-Sdk-Date {sdk_date!r} is not in the form YYYYMMDDTHHMMSSZ"
        ) from None
    if abs(datetime.now(UTC) - moment) > MAX_CLOCK_SKEW:
        raise _unauthorized(f"X-Sdk-Date {sdk_date} is more than 15 minutes from the server time")


def _check_token(account: SimAccount, token: str | None, signed: tuple[str, ...]) -> None:
    if account.security_token is None:
        if token is not None:
            raise _unauthorized("a security token was sent with a permanent access key")
        return
    if "x-security-token" not in signed or token is None:
        raise _unauthorized("temporary credentials need a signed X-Security-Token header")
    if not hmac.compare_digest(token, account.security_token):
        raise _unauthorized("the security token does not belong to this access key")


def _keystone_error(status: int, message: str) -> web.Response:
    # IAM's own (Keystone) error shape; the SDK digs error.code/error.message out of it.
    title = "Bad Request" if status == 400 else "Error"
    return json_response({"error": {"code": status, "message": message, "title": title}}, status)


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _integer(text: str) -> int | None:
    return int(text) if _INTEGER.fullmatch(text) else None


def _positive(text: str) -> int | None:
    value = _integer(text)
    return value if value is not None and value >= 1 else None
