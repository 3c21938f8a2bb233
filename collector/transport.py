"""HTTP transport: one aiohttp session, and the only place aiohttp's exceptions are seen.

Everything aiohttp (or the OS beneath it) raises is mapped here to the collector's tree with
``raise ... from exc``; no caller ever has to know aiohttp exists. Messages are built from the
exception type and the URL only — never from request headers, which carry the signature and the
security token.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from collector import __version__
from collector.errors import (
    BadResponseError,
    ConnectError,
    InvalidRequest,
    RequestTimeout,
    TransportError,
)

USER_AGENT = f"collector/{__version__}"


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    request_id: str | None
    retry_after: str | None
    content_type: str


@dataclass(frozen=True, slots=True)
class _Proxy:
    url: URL | None
    auth: aiohttp.BasicAuth | None


class Transport(Protocol):
    """What the client needs from HTTP: one GET, answered or mapped to a CollectorError."""

    async def get(self, url: str, *, headers: Mapping[str, str]) -> Response: ...


class AiohttpTransport:
    """A pooled aiohttp session.

    Timeouts are per socket operation (``sock_connect``, ``sock_read``) so that time spent
    waiting for a pooled connection never counts as a request timeout.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        max_body_bytes: int = 8 * 1024 * 1024,
        request_timeout: float = 120.0,
        ca_bundle: str | None = None,
    ) -> None:
        # sock_* bound each socket operation; total bounds the whole attempt, so a server that
        # trickles a byte at a time is cut off too. The governor never lets more requests in
        # flight than the pool holds, so no time waiting for a pooled connection is counted.
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout,
            connect=None,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._max_connections = max_connections
        self._max_body = max_body_bytes
        self._ca_bundle = ca_bundle
        self._session: aiohttp.ClientSession | None = None
        #: The proxy (and its credentials) for each origin, read from the environment once.
        self._proxies: dict[tuple[str, str, int | None], _Proxy] = {}

    async def __aenter__(self) -> Self:
        # TLS is verified by default; a private CA replaces the system's trust store.
        ssl_context: ssl.SSLContext | bool = True
        if self._ca_bundle is not None:
            try:
                ssl_context = ssl.create_default_context(cafile=self._ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidRequest(f"cannot load ca_bundle {self._ca_bundle}: {exc}") from exc
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300, ssl=ssl_context
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            # Not trust_env: with it, aiohttp reads ~/.netrc and the proxy variables in a thread
            # on every request (a quarter of our CPU at 5,000 clusters), and a netrc entry for
            # the endpoint (or a `default` one) would clash with our signed Authorization header
            # and fail every request. Proxies are resolved per origin by _proxy() instead.
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
            # The signature covers exactly what we send; let nothing rewrite the URL.
            requote_redirect_url=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, url: str, *, headers: Mapping[str, str]) -> Response:
        session = self._session
        assert session is not None, "transport used outside its context"
        try:
            target = URL(url, encoded=True)
            where = f"{target.scheme}://{target.raw_authority}{target.raw_path}"
        except ValueError as exc:
            raise InvalidRequest(f"malformed URL: {exc}") from exc
        try:
            proxy = self._proxy(target)
            # A signed request is never replayed to wherever a redirect points.
            async with session.get(
                target,
                headers=dict(headers),
                allow_redirects=False,
                proxy=proxy.url,
                proxy_auth=proxy.auth,
            ) as resp:
                body = await self._read_capped(resp, where)
                return Response(
                    status=resp.status,
                    body=body,
                    request_id=resp.headers.get("X-Request-Id"),
                    retry_after=resp.headers.get("Retry-After"),
                    content_type=resp.headers.get("Content-Type", ""),
                )
        except TransportError:
            raise
        except BadResponseError:
            raise
        except TimeoutError as exc:
            raise RequestTimeout(f"timed out waiting for {where}") from exc
        except aiohttp.ClientPayloadError as exc:
            raise BadResponseError(f"truncated response body from {where}", transient=True) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise ConnectError(f"server disconnected: {where}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(f"cannot connect to {where}: {exc.os_error}") from exc
        except aiohttp.ClientError as exc:
            raise ConnectError(f"{type(exc).__name__} talking to {where}") from exc
        except OSError as exc:
            raise ConnectError(f"{type(exc).__name__} talking to {where}: {exc.strerror}") from exc
        except ValueError as exc:
            # yarl and aiohttp refuse malformed hosts and ports, and header values with control
            # characters. Their messages name the rule, never the header's value.
            raise InvalidRequest(f"cannot send a request to {where}: {exc}") from exc

    def _proxy(self, target: URL) -> _Proxy:
        """HTTPS_PROXY / HTTP_PROXY / NO_PROXY for this origin, as users of the SDK expect.

        The environment does not change during a run, so each origin is looked up once.
        """
        origin = (target.scheme, target.raw_host or "", target.explicit_port)
        found = self._proxies.get(origin)
        if found is None:
            try:
                url, auth = get_env_proxy_for_url(target)
            except LookupError:
                found = _Proxy(None, None)
            else:
                found = _Proxy(url, auth)
            self._proxies[origin] = found
        return found

    async def _read_capped(self, resp: aiohttp.ClientResponse, where: str) -> bytes:
        length = resp.content_length
        if length is not None and length > self._max_body:
            raise BadResponseError(
                f"response from {where} is {length} bytes, over the {self._max_body}-byte cap",
                transient=False,
                request_id=resp.headers.get("X-Request-Id"),
            )
        if length is not None:
            # Announced and within the cap: one read, no chunk loop (the common case).
            return await resp.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_body:
                raise BadResponseError(
                    f"response from {where} exceeded the {self._max_body}-byte cap",
                    transient=False,
                    request_id=resp.headers.get("X-Request-Id"),
                )
            chunks.append(chunk)
        return b"".join(chunks)
