"""The transport maps every aiohttp failure to the collector's tree, over real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from collector.errors import BadResponseError, CollectorError, ConnectError, RequestTimeout
from collector.transport import AiohttpTransport, Response

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

TOKEN = "TOKEN-must-not-leak-0123456789abcdefghijklmnopqrstuvwxyz"
AUTH = "SDK-HMAC-SHA256 Access=AKAKAKAKAKAKAKAKAKAK, SignedHeaders=host, Signature=abcdef0123456789"
HEADERS = {"X-Security-Token": TOKEN, "Authorization": AUTH}


@pytest.fixture
def anyio_backend() -> str:
    """The transport is aiohttp, so asyncio; raw servers below use asyncio streams."""
    return "asyncio"


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A bare TCP server on loopback running ``handler`` per connection; yields its base URL.

    On exit every connection is closed and any handler still waiting is cancelled, so no test
    waits on a stalled handler.
    """
    writers: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for task in tasks:
            task.cancel()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def read_head(reader: asyncio.StreamReader, heads: list[bytes]) -> None:
    """Read one request's head (request line and headers) and keep it."""
    heads.append(await reader.readuntil(b"\r\n\r\n"))


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def transport(*, read_timeout: float = 5.0, max_body_bytes: int = 1024 * 1024) -> AiohttpTransport:
    return AiohttpTransport(
        connect_timeout=2.0,
        read_timeout=read_timeout,
        max_connections=4,
        max_body_bytes=max_body_bytes,
    )


async def get_error(http: AiohttpTransport, url: str) -> CollectorError:
    """The error ``http.get(url)`` raises; fails the test if it raises anything else."""
    with pytest.raises(CollectorError) as info:
        await http.get(url, headers=HEADERS)
    error = info.value
    assert not isinstance(error, aiohttp.ClientError), type(error)
    assert not isinstance(error, asyncio.TimeoutError | OSError), type(error)
    for text in (str(error), repr(error), error.message):
        assert TOKEN not in text
        assert AUTH not in text
        assert "abcdef0123456789" not in text
    return error


async def test_closed_port_is_a_connect_error() -> None:
    """Connection refused becomes ConnectError, transient, without the request's headers."""
    async with transport() as http:
        error = await get_error(http, f"http://127.0.0.1:{closed_port()}/v1/x")
    assert type(error) is ConnectError
    assert error.transient is True


async def test_server_closing_at_once_is_a_connect_error() -> None:
    """A server that accepts and hangs up without a word becomes ConnectError."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with raw_server(hang_up) as url, transport() as http:
        error = await get_error(http, url + "/v1/x")
    assert type(error) is ConnectError
    assert error.transient is True


async def test_server_stalling_after_headers_is_a_request_timeout() -> None:
    """Headers, then silence past read_timeout: RequestTimeout, well before the server gives up."""
    heads: list[bytes] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 100\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(30)  # cancelled by raw_server on exit

    loop = asyncio.get_running_loop()
    async with raw_server(stall) as url, transport(read_timeout=0.2) as http:
        started = loop.time()
        error = await get_error(http, url + "/v1/x")
        waited = loop.time() - started
    assert type(error) is RequestTimeout
    assert error.transient is True
    assert 0.15 < waited < 5.0
    assert len(heads) == 1


async def test_body_shorter_than_content_length_is_a_transient_bad_response() -> None:
    """Content-Length 100, 10 bytes, then close: a truncated body, worth retrying."""
    heads: list[bytes] = []

    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 100\r\n\r\n")
        writer.write(b'{"records"')
        await writer.drain()
        writer.close()

    async with raw_server(truncate) as url, transport() as http:
        error = await get_error(http, url + "/v1/x")
    assert type(error) is BadResponseError
    assert error.transient is True


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_the_cap_is_a_permanent_bad_response(chunked: bool) -> None:
    """A 4 KiB body against a 1 KiB cap is refused, whether its length is announced or not."""
    heads: list[bytes] = []
    body = b"x" * 4096

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        if chunked:
            writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(body), 512):
                writer.write(b"200\r\n" + body[start : start + 512] + b"\r\n")
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"Content-Length: 4096\r\n\r\n" + body)
        await writer.drain()
        await asyncio.sleep(30)  # keep-alive; cancelled by raw_server on exit

    async with raw_server(big) as url, transport(max_body_bytes=1024) as http:
        error = await get_error(http, url + "/v1/x")
    assert type(error) is BadResponseError
    assert error.transient is False
    assert "1024" in str(error)


async def test_redirect_is_returned_not_followed() -> None:
    """A 302 comes back as a 302: the signed request is never replayed to the Location."""
    heads: list[bytes] = []

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader, heads)
            if heads[-1].startswith(b"GET /elsewhere"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nfollowed")
            else:
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n")
                writer.write(b"X-Request-Id: req-302\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async with raw_server(redirect) as url, transport() as http:
        response = await http.get(url + "/v1/x", headers=HEADERS)
    assert isinstance(response, Response)
    assert response.status == 302
    assert response.body == b""
    assert response.request_id == "req-302"
    assert [head.split(b"\r\n", 1)[0] for head in heads] == [b"GET /v1/x HTTP/1.1"]


async def test_reply_that_is_not_http_is_a_collector_error() -> None:
    """A server answering with something that is not HTTP at all surfaces as a CollectorError."""
    heads: list[bytes] = []

    async def gibberish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\nnot http at all\r\n\r\n")
        await writer.drain()
        writer.close()

    async with raw_server(gibberish) as url, transport() as http:
        error = await get_error(http, url + "/v1/x")
    assert error.transient is True


async def test_tls_to_a_plain_http_server_is_a_connect_error() -> None:
    """https:// to a server that only speaks plain HTTP fails the handshake: ConnectError."""

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # the TLS ClientHello
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async with raw_server(plain) as url, transport() as http:
        error = await get_error(http, url.replace("http://", "https://") + "/v1/x")
    assert type(error) is ConnectError


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:99999/v1/x", id="port-out-of-range"),
        pytest.param("http://[::1/v1/x", id="broken-ipv6-host"),
        pytest.param("http:///v1/x", id="no-host"),
    ],
)
async def test_malformed_url_is_a_collector_error(url: str) -> None:
    """A URL aiohttp/yarl cannot use is reported as a CollectorError, never a bare ValueError."""
    async with transport() as http:
        await get_error(http, url)


async def test_header_value_the_http_layer_refuses_is_a_collector_error() -> None:
    """A header aiohttp refuses to send (a control character) is mapped, its value not shown."""
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()

    injected = {"X-Security-Token": TOKEN + "\r\nX-Injected: 1"}
    async with raw_server(answer) as url, transport() as http:
        with pytest.raises(CollectorError) as info:
            await http.get(url + "/v1/x", headers=injected)
    assert TOKEN not in str(info.value)
    assert heads == []  # nothing was sent


async def test_server_trickling_a_byte_at_a_time_is_cut_by_the_request_timeout() -> None:
    """A byte every 0.1 s never trips read_timeout (0.3 s), but request_timeout (0.6 s) ends it."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, [])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 100000\r\n\r\n")
        for _ in range(1000):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)

    loop = asyncio.get_running_loop()
    http = AiohttpTransport(
        connect_timeout=2.0, read_timeout=0.3, request_timeout=0.6, max_connections=4
    )
    async with raw_server(trickle) as url, http:
        started = loop.time()
        error = await get_error(http, url + "/v1/x")
        waited = loop.time() - started
    assert type(error) is RequestTimeout
    assert 0.5 < waited < 3.0


async def test_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY (like HTTPS_PROXY for https) is honoured: the request goes to the proxy."""
    heads: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        body = b'{"proxied": true}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    async with raw_server(proxy) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with transport() as http:
            response = await http.get(
                "http://dws.example-region.invalid/v1/x?limit=1", headers={"Host": "dws.x"}
            )
    assert response.status == 200
    assert len(heads) == 1
    # A proxied request names the absolute URL on its request line.
    assert heads[0].startswith(b"GET http://dws.example-region.invalid/v1/x?limit=1 HTTP/1.1")


async def test_netrc_entry_for_the_host_is_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A ~/.netrc `default` entry must not add Basic auth to (or clash with) a signed request.

    aiohttp with trust_env would look the host up in ~/.netrc and refuse a request that has
    both its own Authorization header and netrc credentials.
    """
    heads: list[bytes] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 2\r\n\r\n{}")
        await writer.drain()

    (tmp_path / ".netrc").write_text("default login someone password hunter2\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    async with raw_server(server) as url, transport() as http:
        response = await http.get(
            url + "/v1/x", headers={"Authorization": "SDK-HMAC-SHA256 Access=AK, Signature=00"}
        )
    assert response.status == 200
    assert len(heads) == 1
    assert b"Authorization: SDK-HMAC-SHA256 Access=AK" in heads[0]
    assert b"Basic" not in heads[0]
