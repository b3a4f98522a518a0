"""The workers' metrics summed: counters and histograms of every worker, gauges of the live ones."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cmdb_asso.web.metrics import Metrics

GONE_PID = 2**22 + 1  # above Linux's largest pid: no such process


def _exposition(requests: int, in_flight: int, lag: float) -> bytes:
    registry = CollectorRegistry()
    Counter("cmdb_asso_requests", "requests", ["route"], registry=registry).labels("/a").inc(requests)
    Histogram("cmdb_asso_request_duration_seconds", "latency", buckets=(0.1, 1.0), registry=registry).observe(0.5)
    Gauge("cmdb_asso_heavy_in_flight", "running", registry=registry).set(in_flight)
    Gauge("cmdb_asso_watch_lag_seconds", "lag", registry=registry).set(lag)
    return generate_latest(registry)


def test_a_scrape_sums_every_workers_counts_and_the_live_workers_gauges(tmp_path: Path) -> None:
    (tmp_path / f"{GONE_PID}.prom").write_bytes(_exposition(requests=5, in_flight=7, lag=9.0))
    (tmp_path / f"{os.getppid()}.prom").write_bytes(_exposition(requests=2, in_flight=1, lag=3.0))
    metrics = Metrics(tmp_path)
    metrics.requests.labels("/a", "POST", "200", "0").inc(1)

    families = {family.name: family for family in text_string_to_metric_families(metrics.render().decode())}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}

    assert values[("cmdb_asso_requests_total", (("route", "/a"),))] == 7  # a gone worker's counts stay
    assert (
        values[("cmdb_asso_requests_total", (("code", "0"), ("method", "POST"), ("route", "/a"), ("status", "200")))]
        == 1
    )
    assert values[("cmdb_asso_request_duration_seconds_count", ())] == 2
    assert values[("cmdb_asso_request_duration_seconds_bucket", (("le", "1.0"),))] == 2
    assert values[("cmdb_asso_heavy_in_flight", ())] == 1  # a gone worker's requests are not in flight
    assert values[("cmdb_asso_watch_lag_seconds", ())] == 3.0  # an age: the largest of the live ones
    assert (tmp_path / f"{os.getpid()}.prom").exists()  # this process's own share, for the others
