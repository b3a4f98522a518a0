"""MongoDB dropping mid-load, SIGTERM under load, and check-links, with the real driver and embedded server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from bson.int64 import Int64

from cmdb_asso.__main__ import main
from cmdb_asso.app import create_app
from cmdb_asso.config import Settings
from cmdb_asso.keys import SERVICE
from cmdb_asso.storage.client import MongoConnection, connect
from cmdb_asso.storage.embedded import EmbeddedMongo, free_port
from cmdb_asso.storage.repair import find_problems, repair
from cmdb_asso.storage.schema import seed_demo
from tests.conftest import AiohttpClient
from tests.helpers import audit_records, call, create, link_body, links_in, read_envelope, wait_ready
from tests.web.test_batch import SWITCH_HOST, batch
from tests.wire.conftest import add_instances

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]


@pytest.fixture
def own_embedded(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """An embedded server of this test's own, which the test may stop and start."""
    server = EmbeddedMongo(tmp_path / "own")
    server.start_blocking()
    yield server
    server.stop_blocking()


@pytest.fixture
async def fragile(
    aiohttp_client: AiohttpClient, own_embedded: EmbeddedMongo, wire_settings: Settings
) -> AsyncIterator[tuple[Client, MongoConnection]]:
    """The app over the test's own server, with short timeouts so that an outage answers quickly."""
    mongodb = replace(
        wire_settings.mongodb, server_selection_timeout_ms=300, socket_timeout_ms=2000, request_deadline_seconds=2
    )
    settings = replace(wire_settings, mongodb=mongodb)
    mongo = await connect(settings.mongodb, own_embedded.uri, embedded=True)
    await seed_demo(mongo)
    await add_instances(mongo, "app", range(100, 130))
    await add_instances(mongo, "host", range(100, 130))
    client = await aiohttp_client(create_app(settings, mongo=mongo))
    yield client, mongo
    await mongo.close()


async def check_invariants(mongo: MongoConnection) -> None:
    """No half link, no link without its audit record, no broken mapping or duplicate."""
    for table_a, table_b in (("app", "host"), ("bk_switch", "host")):
        a_ids = sorted(doc["id"] for doc in await links_in(mongo, table_a))
        b_ids = sorted(doc["id"] for doc in await links_in(mongo, table_b) if doc["bk_obj_id"] == table_a)
        assert a_ids == b_ids, f"half links between {table_a} and {table_b}"
    audited = {
        (doc["resource_id"], doc["operation_detail"]["dest_inst_id"], doc["operation_detail"]["asst_id"])
        for doc in await audit_records(mongo)
        if doc["action"] == "create"
    }
    links = await links_in(mongo, "host")
    assert all((doc["bk_inst_id"], doc["bk_asst_inst_id"], doc["bk_obj_asst_id"]) in audited for doc in links)
    one_to_one = [doc for doc in links if doc["bk_obj_asst_id"] == "app_run_host"]
    assert len({doc["bk_inst_id"] for doc in one_to_one}) == len(one_to_one)
    assert len({doc["bk_asst_inst_id"] for doc in one_to_one}) == len(one_to_one)
    pairs = [(doc["bk_inst_id"], doc["bk_asst_inst_id"], doc["bk_obj_asst_id"]) for doc in links]
    assert len(set(pairs)) == len(pairs)


async def test_mongodb_dropping_mid_load_leaves_every_invariant_and_the_service_recovers(
    fragile: tuple[Client, MongoConnection], own_embedded: EmbeddedMongo
) -> None:
    client, mongo = fragile
    statuses: list[int] = []
    stop_at = time.monotonic() + 3.0

    async def single_creates(worker: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            answer = await create(client, link_body("app_run_host", 100 + (worker * 7 + n) % 30, 100 + n % 30))
            statuses.append(answer.status)

    async def batch_creates(worker: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            pairs = [(11 + (worker + n + k) % 5, 21 + (n * k) % 5) for k in range(4)]
            answer = await call(client, "create_many", batch(*SWITCH_HOST, pairs))
            statuses.append(answer.status)

    async def outage() -> None:
        await asyncio.sleep(0.8)
        port = own_embedded.port
        await asyncio.to_thread(own_embedded.stop_blocking)
        await asyncio.sleep(0.3)
        down = await client.get("/readyz")
        assert down.status == 503
        # Down for longer than a request's deadline: the requests waiting for MongoDB answer 503 (a shorter
        # outage is ridden out: the driver waits for the server within the request's budget).
        await asyncio.sleep(2.5)
        await asyncio.to_thread(own_embedded.start_blocking, port)

    await asyncio.gather(*(single_creates(w) for w in range(4)), *(batch_creates(w) for w in range(2)), outage())

    assert statuses
    assert set(statuses) <= {200, 503}
    assert 503 in statuses
    assert 200 in statuses
    store = client.app[SERVICE].store if client.app is not None else None
    assert store is not None
    # The undos that failed while MongoDB was away left their journal entries; recovery settles them (here at
    # once: no request, and no undo, is in flight any more).
    await store.writer.settled()
    await store.journal.recover("0", grace_seconds=0)
    assert await mongo.db["cmdb_asso_journal"].count_documents({}) == 0
    assert (await client.get("/readyz")).status == 200
    await check_invariants(mongo)
    assert await find_problems(mongo, "0", grace_seconds=0) == []
    after = await create(client, link_body("bk_switch_belong_bk_host", 15, 25))
    assert after.code in (0, 1199014)


async def test_check_links_finds_and_mends_half_links_missing_audits_duplicates_and_indexes(
    wire_client: Client, wire_mongo: MongoConnection
) -> None:
    assert (await create(wire_client, link_body("bk_switch_belong_bk_host", 11, 21))).code == 0
    half = {"id": Int64(900001), "bk_inst_id": Int64(12), "bk_obj_id": "bk_switch", "bk_asst_inst_id": Int64(22),
            "bk_asst_obj_id": "host", "bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_asst_id": "belong",
            "bk_supplier_account": "0", "bk_biz_id": Int64(0)}  # fmt: skip
    unaudited = {**half, "id": Int64(900002), "bk_inst_id": Int64(13), "bk_asst_inst_id": Int64(23)}
    repeated = {**half, "id": Int64(900003), "bk_inst_id": Int64(11), "bk_asst_inst_id": Int64(21)}
    await wire_mongo.db["cc_InstAsst_0_pub_bk_switch"].insert_one(dict(half))
    for table in ("cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"):
        await wire_mongo.db[table].drop_indexes()  # as a bk-cmdb database whose unique index never got built
        await wire_mongo.db[table].insert_one(dict(unaudited))
        await wire_mongo.db[table].insert_one(dict(repeated))

    problems = await find_problems(wire_mongo, "0")

    found = sorted((problem.kind, problem.link_id) for problem in problems)
    assert ("half_link", 900001) in found
    assert ("no_audit", 900002) in found
    assert ("duplicate", 900003) in found
    assert ("missing_unique_index", 0) in found
    await repair(wire_mongo, "0", problems, grace_seconds=0)
    assert await find_problems(wire_mongo, "0") == []
    # The half link is completed (a client may have been told it exists), never deleted.
    for obj_id in ("bk_switch", "host"):
        ids = [doc["id"] for doc in await links_in(wire_mongo, obj_id)]
        assert 900001 in ids
        assert 900002 in ids
        assert 900003 not in ids
    archived = await wire_mongo.db["cc_DelArchive"].find({}, {"_id": 0}).to_list(None)
    assert sorted(copy["detail"]["id"] for copy in archived) == [900003, 900003]


async def test_the_check_links_command_reports_then_repairs(
    wire_mongo: MongoConnection, wire_settings: Settings, embedded: EmbeddedMongo, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    half = {"id": Int64(900003), "bk_inst_id": Int64(14), "bk_obj_id": "bk_switch", "bk_asst_inst_id": Int64(24),
            "bk_asst_obj_id": "host", "bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_asst_id": "belong"}  # fmt: skip
    await wire_mongo.db["cc_InstAsst_0_pub_host"].insert_one(half)
    monkeypatch.setenv("CMDB_ASSO_MONGODB_URI", embedded.uri)
    monkeypatch.setenv("CMDB_ASSO_MONGODB_DATABASE", wire_settings.mongodb.database)
    monkeypatch.setenv("CMDB_ASSO_MONGODB_DRIVER", wire_settings.mongodb.driver)

    found = await asyncio.to_thread(main, ["check-links"])
    fixed = await asyncio.to_thread(main, ["check-links", "--repair"])
    clean = await asyncio.to_thread(main, ["check-links"])

    output = capsys.readouterr().out
    assert (found, fixed, clean) == (1, 0, 0)
    assert "half_link id=900003 bk_switch_belong_bk_host bk_switch:14 -> host:24" in output
    assert "repaired 1 problem(s)" in output
    assert "no problems left" in output
    assert output.rstrip().endswith("no problems found")
    for obj_id in ("bk_switch", "host"):
        assert 900003 in [doc["id"] for doc in await links_in(wire_mongo, obj_id)]


async def test_sigterm_to_the_process_group_drains_16_callers_without_cutting_one_answer_and_exits_0(
    tmp_path: Path,
) -> None:
    port = free_port()
    log_file = tmp_path / "service.log"
    env = {**os.environ, "CMDB_ASSO_HTTP_PORT": str(port), "CMDB_ASSO_DATA_DIR": str(tmp_path / "var"),
           "CMDB_ASSO_LOG_FORMAT": "json", "CMDB_ASSO_HTTP_SHUTDOWN_TIMEOUT": "10",
           "CMDB_ASSO_HTTP_DRAIN_SECONDS": "4"}  # fmt: skip
    # In a session of its own, so that the signal can go to its whole process group, as a terminal's Ctrl-C
    # or systemd's stop does: the embedded server must outlive the drain all the same.
    with log_file.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmdb_asso", "serve", "--seed-demo-if-empty",
            env=env, stdout=output, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    answers: list[int] = []
    cut: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base)
            first_answer = asyncio.Event()
            draining = asyncio.Event()

            async def caller(worker: int) -> None:
                # Keep calling (kept-alive connections included) until five more answers after the drain began.
                after_drain = 0
                n = 0
                while after_drain < 5:
                    n += 1
                    body = link_body("app_run_host", 100 + (worker * 31 + n) % 60, 100 + n % 40)
                    try:
                        async with session.post(
                            f"{base}/api/v3/create/instassociation", json=body, headers={"X-Bkcmdb-User": "load"}
                        ) as response:
                            read_envelope(response.status, await response.json(), response.headers)
                            answers.append(response.status)
                    except aiohttp.ClientError as exc:
                        cut.append(type(exc).__name__)
                        return
                    first_answer.set()
                    if draining.is_set():
                        after_drain += 1

            callers = [asyncio.create_task(caller(worker)) for worker in range(16)]
            await asyncio.wait_for(first_answer.wait(), 30)
            os.killpg(process.pid, signal.SIGTERM)
            for _ in range(200):  # /readyz turns 503 as soon as the signal is handled
                async with session.get(f"{base}/readyz") as ready:
                    if ready.status == 503:
                        break
                await asyncio.sleep(0.02)
            draining.set()
            await asyncio.gather(*callers)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert cut == []
    assert code == 0
    assert set(answers) == {200}
    assert len(answers) > 16 * 5
    # The group's signal did not reach the embedded server: it served the whole drain, and stopped after it.
    events = [orjson.loads(line).get("event") for line in log_file.read_bytes().splitlines() if line.strip()]
    assert "embedded_mongodb_died" not in events
    assert events.index("draining") < events.index("stopped")
