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

The error codes the documentation names (``APIG.0301``, ``APIG.0308``) are the real ones; the
``DWS.xxxx`` codes are plausible stand-ins, since clients must key on the HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
import socket
import struct
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlencode

import orjson
from aiohttp import web

from collector.auth import (
    DATE_FORMAT,
    canonical_request,
    parse_authorization,
    signature,
    string_to_sign,
)
from collector.simulator.faults import (
    NO_RESPONSE,
    Faults,
    HostileIam,
    HostileListing,
    HostileRecords,
)
from collector.simulator.fleet import Fleet, SimAccount, SimProject

RouteKind = Literal["iam", "clusters", "records", "other"]
Delivery = Literal["normal", "truncate", "stall", "reset"]
ApiHandler = Callable[[web.Request, SimAccount], Awaitable[web.Response]]
RawHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FLEET_KEY: Final = web.AppKey("fleet", Fleet)
FAULTS_KEY: Final = web.AppKey("faults", Faults)

#: The gateway rejects a signature whose X-Sdk-Date is further than this from its clock.
MAX_CLOCK_SKEW: Final = timedelta(minutes=15)
#: The limit the doc's throttling message quotes when a random 429 fires.
_RANDOM_THROTTLE_LIMIT: Final = 50
_DEFAULT_LIMIT: Final = 10
_IAM_MAX_PER_PAGE: Final = 5000
_INTEGER: Final = re.compile(r"-?[0-9]+")
_NO_SUCH_API: Final = "The API does not exist or has not been published in the environment"
_DELIVERIES: Final[dict[str, Delivery]] = {"ok": "normal", "truncate": "truncate", "stall": "stall"}
#: Hostile records behaviours that hurt through the delivery, not the body.
_HOSTILE_DELIVERIES: Final = frozenset({"huge_body", "never_answer", "trickle"})
#: The "deep_nesting" depth: far beyond any JSON parser's recursion limit.
_HOSTILE_DEPTH: Final = 100_000
#: The extra cluster ids of the hostile cluster lists ("newline" and "not_uuid" are built).
_BAD_CLUSTER_IDS: Final[dict[str, object]] = {
    "traversal": "../../etc/passwd",
    "slash": "a/b",
    "query": "x?y",
    "fragment": "x#y",
    "percent": "%2e%2e",
    "control": "ab\x00cd\x07",
    "id_not_string": 12345,
}
#: Error code suffix and message for statuses a fault makes the service itself answer.
_SERVICE_ERRORS: Final = {
    400: ("0001", "Invalid request parameter."),
    403: ("0004", "Permission denied."),
    404: ("0015", "The resource does not exist."),
}

_BAD_GATEWAY_HTML: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_PROXY_PAGE_HTML: Final = (
    b"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Access Verification</title>"
    b"</head><body><h1>Please wait while we verify your request</h1>"
    b"<p>This page was served by a proxy, not by the API.</p></body></html>\n"
)


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
            _reset_connection(request)
            # aiohttp's attempt to send this on the dead connection is dropped quietly.
            return reply.response
        response = reply.response
        request_id = uuid.uuid4().hex
        response.headers["X-Request-Id"] = request_id
        if kind == "iam":
            response.headers["X-IAM-Trace-Id"] = request_id
        hostile = None if cluster_id is None else faults.hostile.get(cluster_id)
        if hostile in _HOSTILE_DELIVERIES and reply.delivery == "normal" and response.status == 200:
            return await _send_hostile(request, response, hostile, faults)
        faults.count_status(response.status)
        if reply.delivery == "truncate":
            return await _send_truncated(request, response)
        if reply.delivery == "stall":
            return await _send_stalled(request, response, faults.stall_seconds)
        return response

    async def _answer(
        self, request: web.Request, kind: RouteKind, handler: ApiHandler | None
    ) -> _Reply:
        if handler is None:
            return _Reply(_gateway_error(404, "APIG.0101", _NO_SUCH_API))
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
            return _Reply(_gateway_error(503, "APIG.0202", "Connection reset"), "reset")
        return _Reply(web.Response(body=_PROXY_PAGE_HTML, content_type="text/html"))

    async def _admit(self, request: web.Request) -> SimAccount:
        """What the gateway checks before the service sees a request: region, signature, rate."""
        project_id = request.match_info.get("project_id")
        project = None if project_id is None else self.fleet.project(project_id)
        region = None if project is None else project.region
        if region is not None and self.faults.region_is_down(region):
            raise _Refused(_gateway_error(503, "APIG.0202", "Region down"), "reset")
        account = await self._authenticate(request)
        # Huawei Cloud throttles per user and per API; each region is its own gateway.
        if not self.faults.take_token(account.ak if region is None else f"{account.ak}@{region}"):
            raise _Refused(self._throttled(self.faults.rate_limit))
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

    def _throttled(self, limit: float | None) -> web.Response:
        shown = _RANDOM_THROTTLE_LIMIT if limit is None else f"{limit:g}"
        response = _gateway_error(
            429,
            "APIG.0308",
            "The throttling threshold has been reached: "
            f"policy user over ratelimit,limit:{shown},time:1 second",
        )
        if self.faults.retry_after is not None:
            response.headers["Retry-After"] = str(self.faults.retry_after)
        return response

    def _fault_status(self, status: int, kind: RouteKind) -> web.Response:
        if status == 429:
            return self._throttled(None)
        if status == 502:
            # A proxy in front of the gateway answers, in its own format.
            return web.Response(status=502, body=_BAD_GATEWAY_HTML, content_type="text/html")
        if status == 503:
            return _gateway_error(503, "APIG.0202", "Backend unavailable")
        if status == 504:
            return _gateway_error(504, "APIG.0203", "Backend timeout")
        if status == 401:
            return _gateway_error(401, "APIG.0301", "Incorrect IAM authentication information")
        service = "IAM" if kind == "iam" else "DWS"
        code, message = _SERVICE_ERRORS.get(status, ("0000", "Internal server error."))
        return _service_error(status, f"{service}.{code}", message)

    # -- IAM ------------------------------------------------------------------------------------

    async def auth_projects(self, request: web.Request, account: SimAccount) -> web.Response:
        base = _base_url(request)
        projects: list[object] = [_iam_project(project, base) for project in account.iam_projects]
        body: dict[str, object] = {
            "projects": projects,
            "links": {"self": f"{base}/v3/auth/projects"},
        }
        hostile = self.faults.hostile_iam.get(account.name)
        if hostile is not None:
            _hostile_iam(hostile, body, account, base)
        return _json(body)

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
        return _json({"projects": [_iam_project(p, base) for p in selected], "links": links})

    async def auth_domains(self, request: web.Request, account: SimAccount) -> web.Response:
        base = _base_url(request)
        domain = {
            "enabled": True,
            "id": account.domain_id,
            "name": account.name,
            "links": {"self": f"{base}/v3/domains/{account.domain_id}"},
            "description": "",
        }
        return _json({"domains": [domain], "links": {"self": f"{base}/v3/auth/domains"}})

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
            return _json(_hostile_listing(hostile, project.id, clusters))
        return _json({"clusters": clusters, "count": len(clusters)})

    async def records(self, request: web.Request, account: SimAccount) -> web.Response:
        project = self._project(request, account)
        cluster_id = request.match_info["cluster_id"]
        if self.fleet.cluster(project.id, cluster_id) is None:
            return _service_error(404, "DWS.0015", f"The cluster {cluster_id} does not exist.")
        failure = self.faults.take_cluster_failure(cluster_id)
        if failure is not None:
            return self._fault_status(failure, "records")
        if self.fleet.is_gone(project.id, cluster_id):
            return _service_error(404, "DWS.0015", f"The cluster {cluster_id} does not exist.")
        offset, limit = self._paging(request)
        page_cap = self.faults.page_cap
        size = min(limit, page_cap) if page_cap is not None else limit
        start = offset * size if self.faults.offset_mode == "page" else offset
        history = self.fleet.history(project.id, cluster_id)
        page = history[start : start + size]
        hostile = self.faults.hostile.get(cluster_id)
        if hostile is not None and hostile not in _HOSTILE_DELIVERIES:
            return _hostile_records(hostile, cluster_id, history, start=start, size=size)
        if self.faults.include_count:
            return _json({"count": len(history), "records": page})
        return _json({"records": page})

    def _paging(self, request: web.Request) -> tuple[int, int]:
        """offset and limit from the query; raises :class:`_Refused` (400) when invalid."""
        offset = _integer(request.query.get("offset", "0"))
        limit = _integer(request.query.get("limit", str(_DEFAULT_LIMIT)))
        max_limit = self.faults.max_limit
        if offset is None or offset < 0:
            raise _Refused(
                _service_error(
                    400, "DWS.0001", "Invalid parameter: offset must be an integer >= 0."
                )
            )
        if limit is None or limit <= 0 or (max_limit is not None and limit > max_limit):
            bound = "" if max_limit is None else f" and <= {max_limit}"
            raise _Refused(
                _service_error(
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
                _service_error(404, "DWS.0014", f"The project {project_id} does not exist.")
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
        _gateway_error(401, "APIG.0301", f"Incorrect IAM authentication information: {reason}")
    )


def _forbidden(reason: str) -> _Refused:
    return _Refused(_service_error(403, "DWS.0004", f"Permission denied: {reason}"))


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


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", charset="utf-8"
    )


def _gateway_error(status: int, code: str, message: str) -> web.Response:
    # The gateway's own errors carry a request_id field besides the header.
    return _json({"error_code": code, "error_msg": message, "request_id": uuid.uuid4().hex}, status)


def _service_error(status: int, code: str, message: str) -> web.Response:
    return _json({"error_code": code, "error_msg": message}, status)


def _keystone_error(status: int, message: str) -> web.Response:
    # IAM's own (Keystone) error shape; the SDK digs error.code/error.message out of it.
    title = "Bad Request" if status == 400 else "Error"
    return _json({"error": {"code": status, "message": message, "title": title}}, status)


def _iam_project(project: SimProject, base: str) -> dict[str, Any]:
    return {
        "domain_id": project.domain_id,
        "is_domain": False,
        "parent_id": project.parent_id,
        "name": project.name,
        "description": "",
        "links": {"self": f"{base}/v3/projects/{project.id}"},
        "id": project.id,
        "enabled": True,
    }


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _integer(text: str) -> int | None:
    return int(text) if _INTEGER.fullmatch(text) else None


def _positive(text: str) -> int | None:
    value = _integer(text)
    return value if value is not None and value >= 1 else None


def _reset_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 makes close() send RST: the client sees "connection reset by peer", not EOF.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _send_truncated(request: web.Request, response: web.Response) -> web.StreamResponse:
    body = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
    stream = _stream_like(response, len(body))
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    if request.transport is not None:
        # A graceful close after half the promised bytes: the client reads a short body.
        request.transport.close()
    return stream


async def _send_stalled(
    request: web.Request, response: web.Response, seconds: float
) -> web.StreamResponse:
    body = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
    stream = _stream_like(response, len(body))
    await stream.prepare(request)
    await asyncio.sleep(seconds)
    # The client may have given up waiting, which is the point of a stall.
    with contextlib.suppress(ConnectionError):
        await stream.write(body)
    return stream


def _hostile_records(
    behaviour: HostileRecords,
    cluster_id: str,
    history: list[dict[str, Any]],
    *,
    start: int,
    size: int,
) -> web.Response:
    """A records page rewritten to lie in the way ``behaviour`` names."""
    page = history[start : start + size]
    count: object = len(history)
    records: object = page
    extra: dict[str, object] = {}
    if behaviour == "records_not_list":
        records = {"item_id": "not-a-list"}
    elif behaviour == "record_not_object":
        records = [*page[:-1], "not an object"] if page else ["not an object"]
    elif behaviour == "count_string":
        count = str(len(history))
    elif behaviour == "missing_fields":
        records = [{"item_id": record["item_id"]} for record in page]
    elif behaviour == "unknown_fields":
        records = [{**record, "x_hostile": {"nested": [1, 2]}} for record in page]
        extra = {"x_unknown_top_level": True}
    elif behaviour == "oversized_page":
        wanted = size + 5
        records = history[start : start + wanted]
        records += _filler(cluster_id, start + len(records), wanted - len(records))
    elif behaviour == "endless":
        # Always one page more than served so far, and never the same record twice.
        records, count = _filler(cluster_id, start, size), start + 2 * size
    elif behaviour == "non_utf8":
        body = b'{"count": 1, "records": [{"item_id": "\xff\xfe\xc3\x28"}]}'
        return web.Response(body=body, content_type="application/json")
    elif behaviour == "deep_nesting":
        nested = b"[" * _HOSTILE_DEPTH + b"]" * _HOSTILE_DEPTH
        return web.Response(
            body=b'{"count": 1, "records": ' + nested + b"}", content_type="application/json"
        )
    return _json({"count": count, "records": records, **extra})


def _filler(cluster_id: str, start: int, count: int) -> list[dict[str, Any]]:
    """``count`` made-up records from index ``start``: the same index, the same record."""
    return [
        {
            "item_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"hostile/{cluster_id}/{index}")),
            "status": "UPGRADE_SUCCESS",
            "record_type": "upgrade",
        }
        for index in range(start, start + max(count, 0))
    ]


def _hostile_listing(
    behaviour: HostileListing, project_id: str, clusters: list[dict[str, Any]]
) -> dict[str, object]:
    """A cluster list body rewritten to carry the bad entries ``behaviour`` names."""
    if behaviour == "clusters_not_list":
        return {"clusters": {"id": "not-a-list"}, "count": len(clusters)}
    almost = str(uuid.uuid5(uuid.NAMESPACE_URL, f"hostile/{project_id}"))
    bad_ids: dict[str, object] = {
        **_BAD_CLUSTER_IDS,
        "newline": almost + "\n",
        "not_uuid": almost.replace("-", ""),
    }
    names = list(bad_ids) if behaviour == "bad_ids" else [behaviour]
    extra: list[object] = [
        {"id": bad_ids[name], "name": f"hostile-{name}", "status": "AVAILABLE"}
        for name in names
        if name in bad_ids
    ]
    if behaviour in ("entry_not_object", "bad_ids"):
        extra.append("not an object")
    entries: list[object] = [*clusters, *extra]
    return {"clusters": entries, "count": len(entries)}


def _hostile_iam(
    behaviour: HostileIam, body: dict[str, object], account: SimAccount, base: str
) -> None:
    """Rewrite an IAM project list body in place to lie in the way ``behaviour`` names."""
    if behaviour == "projects_not_list":
        body["projects"] = {"id": "not-a-list"}
        return
    projects = body["projects"]
    assert isinstance(projects, list)
    if behaviour == "project_not_object":
        projects.append("not an object")
        return
    # Named like a real region project, so only the id itself can give it away.
    region = next(project for project in account.iam_projects if project.is_region)
    bad = _iam_project(region, base)
    bad["id"] = "../x"
    bad["links"] = {"self": f"{base}/v3/projects/../x"}
    projects.append(bad)


async def _send_hostile(
    request: web.Request, response: web.Response, behaviour: str | None, faults: Faults
) -> web.StreamResponse:
    """Deliver a records answer so as to hurt: huge and chunked, never, or a byte at a time."""
    if behaviour == "never_answer":
        # The request was read in full; the connection stays open and silent.
        await asyncio.sleep(faults.hostile_seconds)
        faults.count_status(response.status)
        return response
    faults.count_status(response.status)
    body = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
    if behaviour == "huge_body":
        stream = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        chunk = b" " * (64 * 1024)
        with contextlib.suppress(ConnectionError):
            await stream.write(b'{"count": 0, "records": [')
            for _ in range(faults.hostile_body_bytes // len(chunk)):
                await stream.write(chunk)
            await stream.write(b"]}")
        return stream
    stream = _stream_like(response, len(body))
    await stream.prepare(request)
    loop = asyncio.get_running_loop()
    until = loop.time() + faults.hostile_seconds
    with contextlib.suppress(ConnectionError):
        sent = 0
        while sent < len(body) and loop.time() < until:
            await stream.write(body[sent : sent + 1])
            sent += 1
            await asyncio.sleep(faults.trickle_interval)
        await stream.write(body[sent:])
    return stream


def _stream_like(response: web.Response, length: int) -> web.StreamResponse:
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = length
    return stream
