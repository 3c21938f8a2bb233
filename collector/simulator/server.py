"""Ways to run the simulator: inside an event loop, in a background thread, or in the foreground.

- :func:`serve` is an async context manager for asyncio (or anyio on its asyncio backend) code.
- :class:`SimulatorThread` runs the server on its own loop in a daemon thread, for synchronous
  tests, the official (requests-based) SDK, benchmarks and subprocesses pointed at its URL.
- :func:`run_forever` blocks until SIGINT/SIGTERM, for the ``collector simulate`` command.

The listening socket is bound before the server starts, so port 0 picks a free port without a
race and the URL handed out is already accepting connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Final

from aiohttp import web

from collector.simulator.app import build_app
from collector.simulator.faults import Faults
from collector.simulator.fleet import Fleet

#: Seconds a stopping server waits for in-flight requests (a stalled one waits much longer).
SHUTDOWN_TIMEOUT: Final = 0.5
_THREAD_START_TIMEOUT: Final = 30.0


@contextlib.asynccontextmanager
async def serve(
    fleet: Fleet,
    faults: Faults | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[str]:
    """Serve the simulator while the block runs; yields its base URL, ``http://host:port``."""
    app = build_app(fleet, faults if faults is not None else Faults())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        sock = _listen(host, port)
        try:
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            raise
        yield _url(sock)
    finally:
        await runner.cleanup()


class SimulatorThread:
    """The simulator on a free loopback port, served from a daemon thread.

    ::

        with SimulatorThread(fleet, faults) as sim:
            requests.get(sim.url + "/v3/auth/projects", ...)

    ``faults`` may be changed while it runs; the server reads it on every request.
    """

    def __init__(
        self,
        fleet: Fleet,
        faults: Faults | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.fleet = fleet
        self.faults = faults if faults is not None else Faults()
        self._host = host
        self._port = port
        self._url: str | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SimulatorThread(url={self._url!r})"

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the simulator is not running")
        return self._url

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the simulator thread was already started")
        self._thread = threading.Thread(target=self._run, name="collector-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(_THREAD_START_TIMEOUT):
            raise RuntimeError("the simulator did not start in time")
        if self._error is not None:
            self._thread.join()
            raise RuntimeError("the simulator failed to start") from self._error

    def stop(self) -> None:
        """Stop serving and wait for the thread to end; safe to call twice."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            # The loop may finish between the check and the call: then it is stopped anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join()
        self._url = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread, not lost
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self.fleet, self.faults, host=self._host, port=self._port) as url:
            self._url = url
            self._ready.set()
            await self._stop.wait()


def run_forever(
    fleet: Fleet,
    faults: Faults | None = None,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], None],
) -> None:
    """Serve in the foreground until SIGINT or SIGTERM; ``on_ready`` gets the URL once bound."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Not available off the main thread or on Windows: Ctrl-C then ends asyncio.run.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
        async with serve(fleet, faults, host=host, port=port) as url:
            on_ready(url)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def describe(fleet: Fleet, url: str) -> str:
    """What a person needs to point a client at the simulator, credentials included.

    The keys are the simulator's own inventions, printed on purpose so they can be pasted into
    a config; they open nothing outside it.
    """
    lines = [
        f"Huawei Cloud simulator listening on {url}",
        f"  IAM endpoint:  {url}   (HUAWEICLOUD_SDK_IAM_ENDPOINT={url})",
        f"  DWS endpoint:  {url}   (the same for every region)",
        f"  seed {fleet.seed}: {len(fleet.accounts)} accounts, {fleet.total_clusters} clusters, "
        f"{fleet.total_records} upgrade records",
        "",
    ]
    for account in fleet.accounts:
        regions = {project.region for project in account.projects}
        clusters = sum(len(project.clusters) for project in account.projects)
        lines += [
            f"{account.name}  (domain {account.domain_id})",
            f"  AK:             {account.ak}",
            f"  SK:             {account.sk}",
            f"  security token: {account.security_token or '(none: permanent keys)'}",
            f"  projects: {len(account.projects)} in {len(regions)} regions "
            f"(+ {account.mos.name}, listed by IAM, no DWS), clusters: {clusters}",
        ]
    return "\n".join(lines) + "\n"


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"
