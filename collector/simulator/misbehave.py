"""How the simulated cloud misbehaves: what it sends when a fault or a hostile behaviour is on.

:mod:`~collector.simulator.faults` holds the switches; this module builds and delivers the bad
answers, so :mod:`~collector.simulator.app` keeps to routing and the well-behaved API:

- a fault's answer instead of the API's: an error status in the format of whoever fails (the
  gateway, a proxy in front of it, or the service itself), or a proxy's HTML page;
- a real answer damaged in delivery: the connection reset, the body cut short or held back;
- the hostile behaviours: a records, cluster list or IAM project list body rewritten to lie
  (wrong shapes, bad identifiers, endless pages), or a records answer delivered so as to hurt
  (a huge chunked body, no answer at all, a trickle).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import uuid
from typing import Any, Final

from aiohttp import web

from collector.simulator.faults import Faults, HostileIam, HostileListing, HostileRecords
from collector.simulator.fleet import SimAccount
from collector.simulator.responses import (
    gateway_error,
    iam_project,
    json_response,
    service_error,
    throttled,
)

#: Hostile records behaviours that hurt through the delivery, not the body.
HOSTILE_DELIVERIES: Final = frozenset({"huge_body", "never_answer", "trickle"})
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

# -- a fault's answer ---------------------------------------------------------------------------


def fault_response(status: int, service: str, retry_after: int | None) -> web.Response:
    """The answer when a fault forces ``status``; ``service`` ("IAM", "DWS") prefixes its code."""
    if status == 429:
        return throttled(None, retry_after)
    if status == 502:
        # A proxy in front of the gateway answers, in its own format.
        return web.Response(status=502, body=_BAD_GATEWAY_HTML, content_type="text/html")
    if status == 503:
        return gateway_error(503, "APIG.0202", "Backend unavailable")
    if status == 504:
        return gateway_error(504, "APIG.0203", "Backend timeout")
    if status == 401:
        return gateway_error(401, "APIG.0301", "Incorrect IAM authentication information")
    code, message = _SERVICE_ERRORS.get(status, ("0000", "Internal server error."))
    return service_error(status, f"{service}.{code}", message)


def proxy_page() -> web.Response:
    """A proxy's HTML page, answered with 200 where the API's JSON was expected."""
    return web.Response(body=_PROXY_PAGE_HTML, content_type="text/html")


# -- a real answer damaged in delivery ----------------------------------------------------------


def reset_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 makes close() send RST: the client sees "connection reset by peer", not EOF.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def send_truncated(request: web.Request, response: web.Response) -> web.StreamResponse:
    body = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
    stream = _stream_like(response, len(body))
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    if request.transport is not None:
        # A graceful close after half the promised bytes: the client reads a short body.
        request.transport.close()
    return stream


async def send_stalled(
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


# -- the hostile behaviours ---------------------------------------------------------------------


def hostile_records(
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
    return json_response({"count": count, "records": records, **extra})


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


def hostile_listing(
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


def hostile_iam(
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
    bad = iam_project(region, base)
    bad["id"] = "../x"
    bad["links"] = {"self": f"{base}/v3/projects/../x"}
    projects.append(bad)


async def send_hostile(
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
