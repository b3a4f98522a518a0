"""`serve --workers N`: gunicorn's master with N aiohttp worker processes on one port.

The master binds the port and forks the workers; it replaces a worker that dies, and on SIGTERM lets each
drain and stop. The embedded MongoDB server, when configured, is started once by the caller before the
master runs, and every worker connects to it.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web
from gunicorn.app.base import BaseApplication

from cmdb_asso.app import create_app
from cmdb_asso.config import Settings
from cmdb_asso.web.server import service_runner

# A worker that has not told the master it is alive for this long (it does every second) is replaced.
WORKER_SILENCE_SECONDS = 30


class ServiceProcesses(BaseApplication):  # type: ignore[misc]
    """gunicorn's master, configured from the service's settings rather than from gunicorn's command line."""

    def __init__(self, settings: Settings, *, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        # Each worker writes its metrics here, so that any worker's /metrics answers for all of them.
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="cmdb-asso-metrics-"))
        super().__init__()

    def run(self) -> None:
        """Run the master until it stops; then remove the workers' shared metrics."""
        try:
            super().run()
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def load_config(self) -> None:
        """gunicorn's settings: the service's address, worker class, logging and shutdown times."""
        http = self.settings.http
        chosen: dict[str, Any] = {
            "bind": [f"{http.host}:{http.port}"],
            "workers": self.workers,
            "worker_class": "cmdb_asso.web.worker.ServiceWorker",
            "logger_class": "cmdb_asso.web.worker.GunicornLog",
            # A worker gets its drain, then its in-flight requests their shutdown time, before it is killed.
            "graceful_timeout": math.ceil(http.drain_seconds + http.shutdown_timeout) + 5,
            "timeout": WORKER_SILENCE_SECONDS,
            "proc_name": "cmdb-asso",
            # gunicorn's control socket lives in the user's home, shared by every instance: not wanted here.
            "control_socket_disable": True,
        }
        for key, value in chosen.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """What each worker runs once forked: an async factory of the service's runner."""
        return self._make_runner

    async def _make_runner(self) -> web.AppRunner:
        return service_runner(create_app(self.settings, metrics_dir=self.metrics_dir), self.settings)
