"""Counting the MongoDB commands this process sends, through the driver's command monitoring."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from pymongo import monitoring

# The background task sending the current commands, if one is (counted apart from the requests' commands).
_BACKGROUND: contextvars.ContextVar[str | None] = contextvars.ContextVar("cmdb_asso_background", default=None)


@contextlib.contextmanager
def counted_as(task: str) -> Iterator[None]:
    """Count the commands sent in this scope (by this task) as `task`'s, not as requests' commands."""
    token = _BACKGROUND.set(task)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


class CommandCounter(monitoring.CommandListener):
    """Counts the MongoDB commands this process sends, and their time (for metrics, benchmarks and tests)."""

    def __init__(self) -> None:
        self.total = 0
        self.failures = 0
        self.by_name: dict[str, int] = {}
        self.seconds_by_name: dict[str, float] = {}
        # Commands of background tasks (the event feed), by task and command.
        self.background: dict[tuple[str, str], int] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Count one command (apart, when a background task sent it)."""
        task = _BACKGROUND.get()
        if task is not None:
            key = (task, event.command_name)
            self.background[key] = self.background.get(key, 0) + 1
            return
        self.total += 1
        self.by_name[event.command_name] = self.by_name.get(event.command_name, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Add the command's time."""
        self._add_time(event.command_name, event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Count the failure and add its time."""
        self.failures += 1
        self._add_time(event.command_name, event.duration_micros)

    def _add_time(self, name: str, micros: int) -> None:
        self.seconds_by_name[name] = self.seconds_by_name.get(name, 0.0) + micros / 1e6
