"""The API client: sign, send, decode, retry — one signed GET returning a JSON object.

It combines the transport (bytes over HTTP), the signer (per attempt, so ``X-Sdk-Date`` is
fresh), the global in-flight limit, and the retry policy. Callers get a decoded ``dict`` or a
:class:`~collector.errors.CollectorError` whose ``attempts`` says how hard we tried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
import orjson
import structlog

from collector.auth import Signer
from collector.errors import BadResponseError, CircuitOpenError, CollectorError, HttpStatusError
from collector.limits import AdaptiveRate, EndpointState, Governor, PassBarrier, Route
from collector.retry import RetryPolicy, parse_retry_after
from collector.stats import RunStats
from collector.transport import Transport

_BASE_HEADERS = {"Content-Type": "application/json"}


def _error_fields(body: bytes) -> tuple[str | None, str | None]:
    """(error_code, error_msg) from an API error body, in either shape Huawei Cloud uses."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    code, msg = data.get("error_code"), data.get("error_msg")
    nested = data.get("error")
    if code is None and isinstance(nested, dict):  # IAM: {"error": {"code": ..., "message": ...}}
        code, msg = nested.get("code"), nested.get("message")
    return (None if code is None else str(code)), (None if msg is None else str(msg)[:500])


class ApiClient:
    def __init__(
        self,
        *,
        transport: Transport,
        policy: RetryPolicy,
        governor: Governor,
        stats: RunStats,
        barrier: PassBarrier | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._transport = transport
        self._policy = policy
        self._governor = governor
        self._barrier = barrier
        self._stats = stats
        self._sleep = sleep
        self._log = structlog.get_logger("collector.client")

    async def get_json(
        self,
        *,
        signer: Signer,
        route: Route,
        base_url: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        project_id: str | None = None,
        context: Mapping[str, object] | None = None,
    ) -> dict[str, Any]:
        """GET ``base_url + path`` signed, paced and retried; the decoded JSON object."""
        parts = urlsplit(base_url)
        full_path = parts.path.rstrip("/") + path
        endpoint = self._governor.endpoint(route.endpoint)
        rate = self._governor.rate(route)
        attempt = 0
        earlier = 0  # attempts made in earlier passes
        while True:
            attempt += 1
            try:
                if not endpoint.breaker.allow():
                    self._stats.circuit_rejected += 1
                    raise CircuitOpenError(
                        f"endpoint {route.endpoint} is failing; circuit open, request not sent"
                    )
                if rate is not None:
                    await rate.acquire()
                body = await self._attempt(
                    signer=signer,
                    endpoint=endpoint,
                    scheme=parts.scheme,
                    host=parts.netloc,
                    path=full_path,
                    query=query,
                    project_id=project_id,
                )
            except CollectorError as err:
                self._observe_failure(err, endpoint=endpoint, rate=rate)
                delay = self._policy.delay_after(err, attempt)
                if delay is not None and not endpoint.budget.try_spend():
                    if not self._stats.budget_exhausted:
                        # A retry storm: say so once; the summary counts the rest.
                        self._log.warning("endpoint.retry_budget_spent", endpoint=route.endpoint)
                    self._stats.budget_exhausted += 1
                    err.message += f" (retry budget of endpoint {route.endpoint} spent)"
                    delay = None
                if delay is None:
                    err.attempts = earlier + attempt
                    if not (err.transient or isinstance(err, CircuitOpenError)):
                        raise
                    # Out of attempts, budget or luck for now: set the request aside and try it
                    # again in a later pass, keeping whatever the unit already collected.
                    if self._barrier is None or not await self._park(err, full_path, context):
                        raise
                    earlier, attempt = earlier + attempt, 0
                    continue
                self._stats.retries += 1
                self._stats.retries_by_endpoint[route.endpoint] += 1
                self._log.debug(
                    "request.retry",
                    path=full_path,
                    attempt=attempt,
                    delay_s=round(delay, 3),
                    error=str(err),
                    status=getattr(err, "status", None),
                    error_code=getattr(err, "error_code", None),
                    request_id=getattr(err, "request_id", None),
                    **(context or {}),
                )
                await self._sleep(delay)
            else:
                endpoint.breaker.on_success()
                if rate is not None:
                    rate.on_success()
                return body

    def new_pass(self) -> None:
        self._governor.new_pass()

    async def _park(
        self, err: CollectorError, path: str, context: Mapping[str, object] | None
    ) -> bool:
        assert self._barrier is not None
        self._stats.parked += 1
        self._log.debug("request.parked", path=path, error=str(err), **(context or {}))
        return await self._barrier.park()

    @staticmethod
    def _observe_failure(
        err: CollectorError, *, endpoint: EndpointState, rate: AdaptiveRate | None
    ) -> None:
        if isinstance(err, CircuitOpenError):
            return
        if isinstance(err, HttpStatusError) and err.throttled:
            # Throttling says the endpoint is alive and we are too fast: slow down, no breaker.
            if rate is not None:
                rate.on_throttle(message=err.error_msg, retry_after=err.retry_after)
        elif err.transient:
            was_open = endpoint.breaker.is_open
            endpoint.breaker.on_failure()
            if endpoint.breaker.is_open and not was_open:
                structlog.get_logger("collector.client").warning(
                    "endpoint.circuit_open", endpoint=endpoint.name, error=str(err)
                )
        else:
            endpoint.breaker.on_success()  # a definite answer (400/401/403/404): it is alive

    async def _attempt(
        self,
        *,
        signer: Signer,
        endpoint: EndpointState,
        scheme: str,
        host: str,
        path: str,
        query: Sequence[tuple[str, str]],
        project_id: str | None,
    ) -> dict[str, Any]:
        async with self._governor.limiter, endpoint.limiter:
            signed = signer.sign(
                method="GET",
                host=host,
                path=path,
                query=query,
                headers=_BASE_HEADERS,
                project_id=project_id,
            )
            url = f"{scheme}://{host}{path}"
            if signed.query_string:
                url = f"{url}?{signed.query_string}"
            self._stats.requests += 1
            self._stats.requests_by_endpoint[endpoint.name] += 1
            endpoint.budget.on_request()
            try:
                response = await self._transport.get(url, headers=signed.headers)
            except CollectorError:
                self._stats.by_status["error"] += 1
                raise
        status = response.status
        self._stats.by_status[str(status)] += 1
        if 200 <= status < 300:
            return self._decode(response.body, path=path, request_id=response.request_id)
        if status == 429:
            self._stats.throttled += 1
        code, msg = _error_fields(response.body)
        raise HttpStatusError(
            f"HTTP {status} from {scheme}://{host}{path}"
            + (f": {code} {msg}" if code or msg else ""),
            status=status,
            error_code=code,
            error_msg=msg,
            request_id=response.request_id,
            retry_after=parse_retry_after(response.retry_after),
        )

    @staticmethod
    def _decode(body: bytes, *, path: str, request_id: str | None) -> dict[str, Any]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            # An HTML page from a proxy or a cut-off body: the next attempt may well be fine.
            raise BadResponseError(
                f"response from {path} is not JSON ({len(body)} bytes: {exc})",
                transient=True,
                request_id=request_id,
            ) from exc
        if not isinstance(data, dict):
            raise BadResponseError(
                f"response from {path} is a JSON {type(data).__name__}, not an object",
                transient=False,
                request_id=request_id,
            )
        return data
