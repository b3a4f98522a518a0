"""Counting the MongoDB commands this process sends, through the driver's command monitoring."""

from __future__ import annotations

from pymongo import monitoring


class CommandCounter(monitoring.CommandListener):
    """Counts the MongoDB commands this process sends, and their time (for metrics, benchmarks and tests)."""

    def __init__(self) -> None:
        self.total = 0
        self.failures = 0
        self.by_name: dict[str, int] = {}
        self.seconds_by_name: dict[str, float] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Count one command."""
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
