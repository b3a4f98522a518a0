"""Prometheus metrics: one registry per application, fed by the request middleware and by storage counters.

Under `serve --workers N` every worker writes its own exposition to a directory the master made (each second
and at every scrape), and a scrape of any worker answers the sum over all of them: counters and histograms of
every worker that ever ran (a replaced worker's last counts stay), gauges of the live ones (ages: the largest).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from cmdb_asso.processes import process_alive

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class CommandStatistics(Protocol):
    """The database commands a process sent (the storage layer keeps them)."""

    failures: int
    by_name: dict[str, int]
    seconds_by_name: dict[str, float]
    background: dict[tuple[str, str], int]


class StoreStatistics(Protocol):
    """What the storage layer counted of its own work."""

    links_created: int
    links_deleted: int

    @property
    def ids_reserved(self) -> Mapping[str, int]:
        """Ids reserved, by sequence."""

    @property
    def links_recovered(self) -> tuple[int, int]:
        """Links of unfinished writes rolled forward and back."""


class _StorageCollector(Collector):
    """Reads the storage layer's own counters at scrape time."""

    def __init__(self, store: StoreStatistics, commands: CommandStatistics) -> None:
        self.store = store
        self.commands = commands

    def collect(self) -> Iterator[Metric]:
        """The MongoDB command counts, ids reserved, links created and deleted, undos waiting."""
        commands = CounterMetricFamily("cmdb_asso_mongodb_commands", "MongoDB commands sent", labels=["command"])
        for name, count in sorted(self.commands.by_name.items()):
            commands.add_metric([name], count)
        yield commands
        background = CounterMetricFamily(
            "cmdb_asso_background_mongodb_commands",
            "MongoDB commands sent by background tasks",
            labels=["task", "command"],
        )
        for (task, name), count in sorted(self.commands.background.items()):
            background.add_metric([task, name], count)
        yield background
        failed = CounterMetricFamily("cmdb_asso_mongodb_command_failures", "MongoDB commands that failed")
        failed.add_metric([], self.commands.failures)
        yield failed
        seconds = CounterMetricFamily(
            "cmdb_asso_mongodb_command_seconds", "Time spent in MongoDB commands", labels=["command"]
        )
        for name, total in sorted(self.commands.seconds_by_name.items()):
            seconds.add_metric([name], total)
        yield seconds
        ids = CounterMetricFamily("cmdb_asso_ids_reserved", "Ids reserved from cc_idgenerator", labels=["sequence"])
        for name, count in sorted(self.store.ids_reserved.items()):
            ids.add_metric([name], count)
        yield ids
        created = CounterMetricFamily("cmdb_asso_links_created", "Instance associations created")
        created.add_metric([], self.store.links_created)
        yield created
        deleted = CounterMetricFamily("cmdb_asso_links_deleted", "Instance associations deleted")
        deleted.add_metric([], self.store.links_deleted)
        yield deleted
        recovered = CounterMetricFamily(
            "cmdb_asso_recovered_links", "Links of unfinished writes settled by recovery", labels=["how"]
        )
        forward, back = self.store.links_recovered
        recovered.add_metric(["forward"], forward)
        recovered.add_metric(["back"], back)
        yield recovered


class GroupStatistics(Protocol):
    """What group commit has done (the service keeps it)."""

    @property
    def coalesced(self) -> tuple[int, int]:
        """Groups written, and the create-one requests in them."""

    @property
    def creates_waiting(self) -> int:
        """Create-one requests waiting for their group."""


class _GroupCollector(Collector):
    def __init__(self, groups: GroupStatistics) -> None:
        self.groups = groups

    def collect(self) -> Iterator[Metric]:
        """Groups written, requests in them, and requests waiting now."""
        groups, members = self.groups.coalesced
        written = CounterMetricFamily("cmdb_asso_create_groups", "Group commits of create-one requests written")
        written.add_metric([], groups)
        yield written
        grouped = CounterMetricFamily("cmdb_asso_create_grouped_requests", "Create-one requests written in groups")
        grouped.add_metric([], members)
        yield grouped
        waiting = GaugeMetricFamily("cmdb_asso_create_requests_waiting", "Create-one requests waiting for a group")
        waiting.add_metric([], self.groups.creates_waiting)
        yield waiting


class FeedStatistics(Protocol):
    """What the link event feeder has done in this process."""

    events_stored: int
    dropped_deletes: int

    @property
    def lag_seconds(self) -> float:
        """How far behind the link tables the feed is."""
        ...


class _FeedCollector(Collector):
    def __init__(self, feed: FeedStatistics) -> None:
        self.feed = feed

    def collect(self) -> Iterator[Metric]:
        """Events stored, and deletes dropped for want of their archive copy."""
        stored = CounterMetricFamily("cmdb_asso_watch_events_stored", "Link events stored by this process's feeder")
        stored.add_metric([], self.feed.events_stored)
        yield stored
        dropped = CounterMetricFamily(
            "cmdb_asso_watch_deletes_dropped", "Link deletes not reported: no cc_DelArchive copy within 2 s"
        )
        dropped.add_metric([], self.feed.dropped_deletes)
        yield dropped
        lag = GaugeMetricFamily(
            "cmdb_asso_watch_lag_seconds",
            "How far the event feed is behind the link tables: the newest unreported change's age, or the delay of "
            "the last storing",
        )
        lag.add_metric([], self.feed.lag_seconds)
        yield lag


class GateStatistics(Protocol):
    """A bound on concurrent heavy work, as /metrics reads it."""

    name: str
    limit: int
    in_flight: int
    refused: int


class _GateCollector(Collector):
    def __init__(self, gates: list[GateStatistics]) -> None:
        self.gates = gates

    def collect(self) -> Iterator[Metric]:
        """Per bound: requests running under it, its size, and those it refused."""
        running = GaugeMetricFamily("cmdb_asso_heavy_in_flight", "Heavy requests running now", labels=["kind"])
        bound = GaugeMetricFamily("cmdb_asso_heavy_bound", "Heavy requests allowed at once (0: none)", labels=["kind"])
        refused = CounterMetricFamily(
            "cmdb_asso_heavy_refused", "Heavy requests answered 503 because the bound was reached", labels=["kind"]
        )
        for gate in self.gates:
            running.add_metric([gate.name], gate.in_flight)
            bound.add_metric([gate.name], gate.limit)
            refused.add_metric([gate.name], gate.refused)
        yield from (running, bound, refused)


class IamStatistics(Protocol):
    """What the IAM client has done, as /metrics reads it."""

    calls: int
    cache_hits: int
    cache_misses: int


class _IamCollector(Collector):
    def __init__(self, iam: IamStatistics) -> None:
        self.iam = iam

    def collect(self) -> Iterator[Metric]:
        """IAM calls, and the policy cache's hits and misses (its hit rate: hits / (hits + misses))."""
        yield CounterMetricFamily("cmdb_asso_iam_calls", "query_by_actions calls made to BlueKing IAM", self.iam.calls)
        lookups = CounterMetricFamily(
            "cmdb_asso_iam_policy_cache", "IAM policy look-ups by outcome", labels=["outcome"]
        )
        lookups.add_metric(["hit"], self.iam.cache_hits)
        lookups.add_metric(["miss"], self.iam.cache_misses)
        yield lookups


class Metrics:
    """The application's metrics and their registry."""

    def __init__(self, shared_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Where every worker of `serve --workers` writes its exposition (None: one process, nothing shared).
        self.shared_dir = shared_dir
        self.requests = Counter(
            "cmdb_asso_requests",
            "HTTP requests answered",
            ["route", "method", "status", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cmdb_asso_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def watch_storage(self, store: StoreStatistics, commands: CommandStatistics) -> None:
        """Expose the storage layer's counters."""
        self.registry.register(_StorageCollector(store, commands))

    def watch_groups(self, groups: GroupStatistics) -> None:
        """Expose group commit's counters."""
        self.registry.register(_GroupCollector(groups))

    def watch_feed(self, feed: FeedStatistics) -> None:
        """Expose the link event feeder's counters."""
        self.registry.register(_FeedCollector(feed))

    def watch_iam(self, iam: IamStatistics) -> None:
        """Expose the IAM client's calls and policy cache."""
        self.registry.register(_IamCollector(iam))

    def watch_gates(self, gates: list[GateStatistics]) -> None:
        """Expose the bounds on concurrent heavy work."""
        self.registry.register(_GateCollector(gates))

    def observe(self, request: web.Request, status: int, code: int | None, seconds: float) -> None:
        """Count one answered request."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        self.requests.labels(route, request.method, str(status), str(code if code is not None else "")).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric, of every worker when they share a directory."""
        own = generate_latest(self.registry)
        if self.shared_dir is None:
            return own
        self._write(own)
        return generate_latest(_Merged(self.shared_dir))

    def share(self) -> None:
        """Write this process's exposition for the other workers' scrapes."""
        if self.shared_dir is not None:
            self._write(generate_latest(self.registry))

    def _write(self, exposition: bytes) -> None:
        assert self.shared_dir is not None
        path = self.shared_dir / f"{os.getpid()}.prom"
        partial = path.with_suffix(".partial")
        partial.write_bytes(exposition)
        partial.replace(path)  # a reader sees a whole file, the old or the new


class _Merged(Collector):
    """Every worker's exposition in `directory`, summed per metric and labels."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        """The merged families, in name order."""
        merged: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for path in sorted(self.directory.glob("*.prom")):
            live = process_alive(int(path.stem)) if path.stem.isdigit() else False
            with contextlib.suppress(OSError, ValueError):
                for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
                    if family.type == "gauge" and not live:
                        continue  # a gone worker's requests in flight are not in flight
                    merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                    into = values.setdefault(family.name, {})
                    for sample in _summable(family.samples):
                        key = (sample.name, tuple(sorted(sample.labels.items())))
                        if family.type == "gauge" and family.name.endswith("_seconds"):
                            into[key] = max(into.get(key, sample.value), sample.value)
                        else:
                            into[key] = into.get(key, 0.0) + sample.value
        for name in sorted(merged):
            family = merged[name]
            for (sample_name, labels), value in values[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family


def _summable(samples: Iterable[Any]) -> Iterator[Any]:
    """The samples that add up across processes (a counter's creation time does not)."""
    return (sample for sample in samples if not sample.name.endswith("_created"))
