"""gunicorn's aiohttp worker, serving as a single process does: envelope for parser errors, drain on SIGTERM,
and gunicorn's own log lines through structlog."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.worker import GunicornWebWorker
from gunicorn.glogging import Logger

from cmdb_asso.keys import DRAINING, SETTINGS

log = structlog.get_logger("cmdb_asso.worker")
_PR_SET_PDEATHSIG = 1
# How long a worker whose master died lets its requests in flight finish before it exits.
MASTER_GONE_EXIT_SECONDS = 2.0


class ServiceWorker(GunicornWebWorker):
    """One service process under gunicorn's master. Its application is an async factory returning the
    service's runner (see `cmdb_asso.web.server.service_runner`)."""

    runner: web.AppRunner | None = None
    wsgi: Any  # gunicorn's name for what the application loaded: here, the runner factory

    def init_process(self) -> None:
        """Ask Linux for SIGTERM when the master dies (a killed master must not leave its workers serving with
        no one to replace them), then run as gunicorn's worker does."""
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self.ppid:  # the master died before the request took effect
            os._exit(0)
        super().init_process()

    async def _run(self) -> None:
        make_runner: Callable[[], Awaitable[web.AppRunner]] = self.wsgi

        async def kept_runner() -> web.AppRunner:
            self.runner = await make_runner()
            return self.runner

        self.wsgi = kept_runner
        await super()._run()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: /readyz answers 503 at once, requests are served for `http.drain_seconds` (each answer
        closing its connection), then the worker stops as gunicorn's does. A second SIGTERM (the master's, after
        a process manager signalled the whole group) does not cut the drain short; SIGINT and SIGQUIT do."""
        app = self.runner.app if self.runner is not None else None
        if os.getppid() != self.ppid:
            # The master is gone (killed): no one balances or replaces workers now, and its embedded server died
            # with it. Requests in flight get a moment, then the worker exits whatever its clean-up still waits
            # for (a MongoDB client closing waits for a server that is not coming back).
            log.warning("master_gone", seconds=MASTER_GONE_EXIT_SECONDS)
            super().handle_exit(sig, frame)
            self.loop.call_later(MASTER_GONE_EXIT_SECONDS, os._exit, 0)
            return
        if app is None:
            super().handle_exit(sig, frame)
            return
        if app[DRAINING].is_set():
            return
        app[DRAINING].set()
        drain = app[SETTINGS].http.drain_seconds
        log.info("draining", seconds=drain)
        self.loop.call_later(drain, super().handle_exit, sig, frame)


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        structlog.get_logger("gunicorn").log(record.levelno, record.getMessage())


class GunicornLog(Logger):  # type: ignore[misc]
    """gunicorn's master and worker messages (booting, a worker's exit) as the service's own log lines."""

    def setup(self, cfg: Any) -> None:
        """Send gunicorn's error log to structlog; its access log stays off (the service logs each request)."""
        self.error_log.setLevel(logging.INFO)
        self.error_log.handlers = [_ToStructlog()]
