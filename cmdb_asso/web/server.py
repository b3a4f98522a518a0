"""Running the application: envelope answers for HTTP parser errors, and a drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from cmdb_asso.config import Settings
from cmdb_asso.errors import CmdbError, InputInvalid, InternalError
from cmdb_asso.keys import DRAINING
from cmdb_asso.web.envelope import failure

log = structlog.get_logger("cmdb_asso.http")


class _EnvelopeRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors (a request line, header or method the parser
    refuses) in the envelope: never aiohttp's plain text, which echoes the request's bytes, and one log line
    without a traceback instead of aiohttp's logged exception."""

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """The envelope for an error found before (or outside) the application's middlewares."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; the connection is closed")
        log.info("http_request_refused", status=status, error=type(exc).__name__ if exc else None)
        error: CmdbError = InternalError("server") if status >= 500 else InputInvalid(http_status=status)
        response = failure(request, error)
        response.force_close()
        return response


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class ServiceRunner(web.AppRunner):
    """aiohttp's application runner with the envelope answering parser errors."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Same object, one method more: the connection handler class is the only thing that changes.
        server.__class__ = _EnvelopeServer
        return server


def service_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner that serves `app`: aiohttp's, with the envelope answering parser errors."""
    return ServiceRunner(app, access_log=None, shutdown_timeout=settings.http.shutdown_timeout)


async def serve_until_stopped(app: web.Application, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain: /readyz answers 503 at once and requests are still served
    (each answer closing its connection) for `http.drain_seconds`, so that a load balancer sees the 503 and
    moves callers away; then the listener closes and in-flight requests get `http.shutdown_timeout`."""
    runner = service_runner(app, settings)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.http.host, settings.http.port)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info("listening", host=settings.http.host, port=settings.http.port)
        await stop.wait()
        app[DRAINING].set()
        log.info("draining", seconds=settings.http.drain_seconds)
        # A second Ctrl-C (SIGINT) cuts the drain short; a second SIGTERM (a process manager signalling the whole
        # group) does not.
        hurry = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, hurry.set)
        loop.add_signal_handler(signal.SIGTERM, lambda: None)
        # The drain is a wait by design: it is the time callers get to move away.
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(hurry.wait(), settings.http.drain_seconds)
        if hurry.is_set():
            log.info("drain_cut_short", detail="a second SIGINT")
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    finally:
        await runner.cleanup()
        log.info("stopped")


def port_in_use(host: str, port: int) -> bool:
    """Whether another process listens on `host:port` (port 0 asks for a free one: never in use)."""
    if port == 0:
        return False
    with contextlib.closing(socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: TIME_WAIT is no use
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def run(app: web.Application, settings: Settings) -> None:
    """Run the service in a new event loop until it is stopped."""
    asyncio.run(serve_until_stopped(app, settings))
