"""The bodies the simulated services answer with: JSON, the gateway's errors, an IAM project.

Shared by the well-behaved API (:mod:`~collector.simulator.app`) and by its misbehaviour
(:mod:`~collector.simulator.misbehave`), so an error a fault forces looks like a real one.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import orjson
from aiohttp import web

from collector.simulator.fleet import SimProject

#: The limit the doc's throttling message quotes when a random 429 fires.
_RANDOM_THROTTLE_LIMIT: Final = 50


def json_response(payload: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", charset="utf-8"
    )


def gateway_error(status: int, code: str, message: str) -> web.Response:
    # The gateway's own errors carry a request_id field besides the header.
    return json_response(
        {"error_code": code, "error_msg": message, "request_id": uuid.uuid4().hex}, status
    )


def service_error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error_code": code, "error_msg": message}, status)


def throttled(limit: float | None, retry_after: int | None) -> web.Response:
    """The gateway's 429; ``limit`` None (a random 429) quotes the documentation's limit."""
    shown = _RANDOM_THROTTLE_LIMIT if limit is None else f"{limit:g}"
    response = gateway_error(
        429,
        "APIG.0308",
        "The throttling threshold has been reached: "
        f"policy user over ratelimit,limit:{shown},time:1 second",
    )
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def iam_project(project: SimProject, base: str) -> dict[str, Any]:
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
