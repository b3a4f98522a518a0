"""Heavy reads are bounded per process: a graph reads a bounded number of links, and past the number of graphs,
links-with-details reads and long polls allowed at once, one more answers 503 with Retry-After at once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from aiohttp.test_utils import TestClient

from cmdb_asso.config import Settings
from cmdb_asso.keys import QUERIES
from tests.conftest import MakeClient
from tests.helpers import call, create, link_body

Client = TestClient[Any, Any]
RULE = {"field": "bk_obj_asst_id", "operator": "equal", "value": "bk_switch_belong_bk_host"}


async def test_past_the_bound_a_heavy_read_answers_503_at_once_and_metrics_count_it(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(app_settings=replace(settings, limits=replace(settings.limits, heavy_reads_in_flight=1)))
    assert client.app is not None
    gate = client.app[QUERIES].heavy_reads
    details = {"bk_obj_id": "bk_switch", "condition": {"asst_filter": {"condition": "AND", "rules": [RULE]}},
               "page": {"limit": 10}}  # fmt: skip

    gate.queue_seconds = 0.05
    async with gate.admit():  # one heavy read is running
        graph = await call(client, "graph", {"bk_obj_id": "bk_switch", "bk_inst_id": 11})
        listed = await call(client, "links_with_instances", details)
        found = await call(client, "find", {"bk_obj_id": "host", "condition": {}})  # not a heavy read

    for answer in (graph, listed):
        assert (answer.status, answer.result, answer.code) == (503, False, 1199998)
        assert answer.headers["Retry-After"] == "1"
        assert "busy" in answer.message
    assert found.code == 0
    # The place is free again: the same reads are served.
    assert (await call(client, "graph", {"bk_obj_id": "bk_switch", "bk_inst_id": 11})).code == 0
    assert (await call(client, "links_with_instances", details)).code == 0
    metrics = await (await client.get("/metrics")).text()
    assert 'cmdb_asso_heavy_refused_total{kind="heavy reads"} 2.0' in metrics
    assert 'cmdb_asso_heavy_bound{kind="heavy reads"} 1.0' in metrics
    assert 'cmdb_asso_heavy_in_flight{kind="heavy reads"} 0.0' in metrics


async def test_a_request_past_the_bound_waits_a_moment_for_a_place(make_client: MakeClient, settings: Settings) -> None:
    client = await make_client(app_settings=replace(settings, limits=replace(settings.limits, heavy_reads_in_flight=1)))
    assert client.app is not None
    gate = client.app[QUERIES].heavy_reads
    running = gate.admit()
    await running.__aenter__()
    waiting = asyncio.create_task(call(client, "graph", {"bk_obj_id": "bk_switch", "bk_inst_id": 11}))
    for _ in range(1000):  # until the graph waits for the place
        if gate.waiting:
            break
        await asyncio.sleep(0.001)
    await running.__aexit__(None, None, None)  # the place frees up within the wait

    assert (await waiting).code == 0
    assert gate.refused == 0


async def test_a_graph_reads_at_most_the_link_bound_and_says_it_was_cut(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(app_settings=replace(settings, limits=replace(settings.limits, graph_max_links=3)))
    for host in (21, 22, 23, 24, 25):
        assert (await create(client, link_body("bk_switch_belong_bk_host", 11, host))).code == 0
    assert (await create(client, link_body("bk_router_connect_bk_switch", 31, 11))).code == 0

    answer = await call(client, "graph", {"bk_obj_id": "bk_switch", "bk_inst_id": 11, "depth": 3})

    assert answer.code == 0
    assert answer.data["truncated"] is True
    assert len(answer.data["edges"]) == 3
    assert {node["hop"] for node in answer.data["nodes"]} == {0, 1}  # the walk stopped at the bound
