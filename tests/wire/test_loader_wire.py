"""The loader on a 10,000-row file with bad rows, interrupted and resumed, against the embedded server."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from cmdb_asso.__main__ import main
from cmdb_asso.app import create_app
from cmdb_asso.client import AssociationClient
from cmdb_asso.config import MongoSettings, Settings
from cmdb_asso.loader import Loader, State
from cmdb_asso.storage.client import MongoConnection, connect
from cmdb_asso.storage.embedded import EmbeddedMongo, free_port
from cmdb_asso.storage.schema import seed_demo
from tests.helpers import links_in
from tests.wire.conftest import add_instances

pytestmark = pytest.mark.wire
AiohttpServer = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def loader_mongo(embedded: EmbeddedMongo) -> AsyncIterator[MongoConnection]:
    """A fresh database with 100 switches and 100 hosts to link."""
    settings = MongoSettings(database=f"l{uuid.uuid4().hex[:16]}", id_block_size=1000)
    mongo = await connect(settings, embedded.uri, embedded=True)
    await seed_demo(mongo)
    await add_instances(mongo, "bk_switch", range(1000, 1100))
    await add_instances(mongo, "host", range(1000, 1100))
    yield mongo
    await mongo.client.drop_database(settings.database)
    await mongo.close()


def write_file(path: Path) -> dict[int, tuple[int, str]]:
    """10,000 rows, 60 of them bad in five ways; returns the expected rejects by row number."""
    expected: dict[int, tuple[int, str]] = {}
    rows: list[list[object]] = []
    pairs = [(switch, host) for switch in range(1000, 1100) for host in range(1000, 1100)]
    for number, (switch, host) in enumerate(pairs, start=1):
        row: list[object] = ["bk_switch_belong_bk_host", switch, host]
        if number % 500 == 1:  # 20 rows with an id that is not a number
            row[1] = "abc"
            expected[number] = (1199006, "'bk_inst_id' data parameter verification does not pass")
        elif number % 1000 == 2:  # 10 rows missing a field
            row[2] = ""
            expected[number] = (1199006, "'bk_asst_inst_id' unassigned")
        elif number % 1000 == 3:  # 10 rows of an unknown definition
            row[0] = "bk_switch_nothing_host"
            expected[number] = (1101046, "object association does not exist.")
        elif number % 1000 == 4:  # 10 rows whose target does not exist
            row[2] = 5000 + number
            expected[number] = (1101074, "the  inst to asst  is not exist")
        elif number % 1000 == 10:  # 10 rows repeating a good row three before them
            row = list(rows[-3])
            expected[number] = (1101038, "the associations bk_switch->host already exist")
        rows.append(row)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["bk_obj_asst_id", "bk_inst_id", "bk_asst_inst_id"])
    writer.writerows(rows)
    path.write_text(buffer.getvalue())
    return expected


async def test_the_loader_reports_exactly_and_resumes_after_an_interruption(
    aiohttp_server: AiohttpServer, loader_mongo: MongoConnection, tmp_path: Path
) -> None:
    source = tmp_path / "links.csv"
    expected = write_file(source)
    server = await aiohttp_server(create_app(Settings(mongodb=MongoSettings(uri="unused")), mongo=loader_mongo))
    url = str(server.make_url("")).rstrip("/")
    rejects = tmp_path / "rejects.csv"
    progress = io.StringIO()

    async with AssociationClient(url, concurrency=4) as client:
        first = Loader(client, batch_size=200, concurrency=4, progress=progress)
        sent = [0]

        def interrupt_after_ten() -> None:
            sent[0] += 1
            if sent[0] == 10:
                first.stop.set()

        first.after_batch = interrupt_after_ten
        state = State(tmp_path / "links.state", source)
        interrupted = await first.run(source, state, rejects)

        resumed_state = State(tmp_path / "links.state", source)
        resumed_state.load()
        second = Loader(client, batch_size=200, concurrency=4, progress=progress)
        finished = await second.run(source, resumed_state, rejects)

    assert interrupted.interrupted
    assert 0 < interrupted.created < 9940
    assert not finished.interrupted
    assert finished.skipped == len(state.done)
    assert interrupted.created + finished.created == 10_000 - len(expected) == 9940
    with rejects.open() as handle:
        rejected = {int(row["row"]): (int(row["code"]), row["message"]) for row in csv.DictReader(handle)}
    assert rejected == expected
    assert interrupted.rejected + finished.rejected == 60
    assert len(await links_in(loader_mongo, "host")) == 9940
    assert "loaded" in progress.getvalue()
    assert finished.text().startswith("done: 10000 rows, ")


async def test_the_load_command_prints_its_summary_and_writes_the_rejects(
    aiohttp_server: AiohttpServer, loader_mongo: MongoConnection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "few.jsonl"
    source.write_text(
        '{"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": 1000, "bk_asst_inst_id": 1000}\n'
        '{"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": 1001, "bk_asst_inst_id": 9999}\n'
        "not json\n"
    )
    server = await aiohttp_server(create_app(Settings(mongodb=MongoSettings(uri="unused")), mongo=loader_mongo))
    url = str(server.make_url("")).rstrip("/")

    code = await asyncio.to_thread(main, ["load", str(source), "--url", url, "--batch-size", "2"])

    output = capsys.readouterr().out
    assert code == 1  # every row answered, some refused
    assert "done: 3 rows, 1 created, 2 rejected, 0 skipped (already done)" in output
    rejects = (tmp_path / "few.jsonl.rejects.csv").read_text().splitlines()
    assert rejects[0] == "row,bk_obj_asst_id,bk_inst_id,bk_asst_inst_id,code,message"
    assert rejects[1] == "2,bk_switch_belong_bk_host,1001,9999,1101074,the  inst to asst  is not exist"
    assert rejects[2] == "3,,,,1199006,not a JSON object: not json"
    assert len(await links_in(loader_mongo, "host")) == 1

    source.write_text('{"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": 1002, "bk_asst_inst_id": 1002}\n')
    again = await asyncio.to_thread(main, ["load", str(source), "--url", url])
    assert again == 0
    assert not (tmp_path / "few.jsonl.rejects.csv").exists()  # no rejects left from the earlier run

    headless = tmp_path / "headless.csv"
    headless.write_text("bk_switch_belong_bk_host,1003,1003\n")
    bad_header = await asyncio.to_thread(main, ["load", str(headless), "--url", url])
    said = capsys.readouterr().err
    assert bad_header == 2
    assert "the CSV header has no bk_obj_asst_id, bk_inst_id, bk_asst_inst_id column" in said


async def test_a_new_load_of_the_same_file_is_new_work_and_a_resume_counts_its_own_writes(
    aiohttp_server: AiohttpServer, loader_mongo: MongoConnection, tmp_path: Path
) -> None:
    source = tmp_path / "links.csv"
    source.write_text("bk_obj_asst_id,bk_inst_id,bk_asst_inst_id\n"
                      + "".join(f"bk_switch_belong_bk_host,1000,{host}\n" for host in (1001, 1002, 1003)))  # fmt: skip
    server = await aiohttp_server(create_app(Settings(mongodb=MongoSettings(uri="unused")), mongo=loader_mongo))
    url = str(server.make_url("")).rstrip("/")

    async with AssociationClient(url) as client:

        async def load(state: State) -> tuple[int, int]:
            summary = await Loader(client, progress=io.StringIO()).run(source, state, tmp_path / "rejects.csv")
            return summary.created, summary.rejected

        first = await load(State(tmp_path / "a.state", source))
        ids = [link["id"] for link in await links_in(loader_mongo, "host")]
        deleted = await client.delete_many("host", ids)
        again = await load(State(tmp_path / "b.state", source))  # within the keys' 24 h: still a new load
        # A run cut after its batch was written but before it was recorded as done, then resumed.
        cut = State(tmp_path / "b.state", source)
        cut.load()
        cut.done.clear()
        resumed = await load(cut)

    assert (first, deleted, again) == ((3, 0), 3, (3, 0))
    assert len(await links_in(loader_mongo, "host")) == 3
    assert resumed == (3, 0)  # its own first attempt wrote them: created, not "already exists"


async def test_a_dry_run_judges_every_row_and_writes_nothing_not_even_its_state(
    aiohttp_server: AiohttpServer, loader_mongo: MongoConnection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "plan.csv"
    source.write_text("bk_obj_asst_id,bk_inst_id,bk_asst_inst_id\n"
                      "bk_switch_belong_bk_host,1000,1001\nbk_switch_belong_bk_host,1000,1002\n"
                      "bk_switch_belong_bk_host,1000,99999\n")  # fmt: skip
    server = await aiohttp_server(create_app(Settings(mongodb=MongoSettings(uri="unused")), mongo=loader_mongo))
    url = str(server.make_url("")).rstrip("/")

    planned = await asyncio.to_thread(main, ["load", str(source), "--url", url, "--dry-run"])
    said = capsys.readouterr().out
    written_by_plan = len(await links_in(loader_mongo, "host"))
    loaded = await asyncio.to_thread(main, ["load", str(source), "--url", url])

    assert planned == 1  # one row would be refused
    assert "dry run, nothing written: 3 rows, 2 would be created, 1 would be rejected" in said
    assert written_by_plan == 0
    assert loaded == 1
    assert "done: 3 rows, 2 created, 1 rejected, 0 skipped" in capsys.readouterr().out
    assert len(await links_in(loader_mongo, "host")) == 2


async def test_export_writes_what_load_reads_back_a_page_at_a_time_and_filters_as_search_does(
    aiohttp_server: AiohttpServer, loader_mongo: MongoConnection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "made.csv"
    pairs = [(switch, host) for switch in range(1000, 1015) for host in range(1000, 1015)]
    source.write_text("bk_obj_asst_id,bk_inst_id,bk_asst_inst_id\n"
                      + "".join(f"bk_switch_belong_bk_host,{switch},{host}\n" for switch, host in pairs))  # fmt: skip
    server = await aiohttp_server(create_app(Settings(mongodb=MongoSettings(uri="unused")), mongo=loader_mongo))
    url = str(server.make_url("")).rstrip("/")
    assert await asyncio.to_thread(main, ["load", str(source), "--url", url]) == 0
    exported, subset = tmp_path / "links.csv", tmp_path / "host-1003.jsonl"
    to_host = '{"condition": "AND", "rules": [{"field": "bk_asst_inst_id", "operator": "equal", "value": 1003}]}'

    whole = await asyncio.to_thread(
        main, ["export", "bk_switch", "--url", url, "--output", str(exported), "--page-size", "40"]
    )
    some = await asyncio.to_thread(
        main, ["export", "host", "--url", url, "--output", str(subset), "--format", "jsonl", "--conditions", to_host]
    )
    before = sorted((link["bk_inst_id"], link["bk_asst_inst_id"]) for link in await links_in(loader_mongo, "host"))
    async with AssociationClient(url) as client:
        with exported.open() as handle:
            ids = [int(row["id"]) for row in csv.DictReader(handle)]
        for start in range(0, len(ids), 100):
            await client.delete_many("bk_switch", ids[start : start + 100])
    emptied = await links_in(loader_mongo, "host")
    capsys.readouterr()
    again = await asyncio.to_thread(main, ["load", str(exported), "--url", url])

    assert (whole, some) == (0, 0)
    assert len(ids) == 225
    assert ids == sorted(ids)  # id order, across six pages
    assert [line.count('"bk_asst_inst_id": 1003') for line in subset.read_text().splitlines()] == [1] * 15
    assert again == 0
    assert "done: 225 rows, 225 created, 0 rejected" in capsys.readouterr().out
    assert emptied == []
    after = sorted((link["bk_inst_id"], link["bk_asst_inst_id"]) for link in await links_in(loader_mongo, "host"))
    assert after == before  # the same links, loaded from the export into the emptied store


async def test_a_load_against_a_service_that_is_away_loses_no_row_and_resume_writes_each_once(
    aiohttp_server: AiohttpServer, loader_mongo: MongoConnection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first run finds nobody at the URL: every row is left unsent (exit 75), none rejected; with the service
    there, --resume writes every row once (exit 0)."""
    source = tmp_path / "away.csv"
    source.write_text("bk_obj_asst_id,bk_inst_id,bk_asst_inst_id\n"
                      + "".join(f"bk_switch_belong_bk_host,1020,{host}\n" for host in range(1020, 1030)))  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    away = await asyncio.to_thread(main, ["load", str(source), "--url", url])
    said_away = capsys.readouterr().out
    await aiohttp_server(create_app(Settings(mongodb=MongoSettings(uri="unused")), mongo=loader_mongo), port=port)
    back = await asyncio.to_thread(main, ["load", str(source), "--url", url, "--resume"])
    said_back = capsys.readouterr().out

    assert away == 75
    assert "0 created, 0 rejected" in said_away
    assert "10 not sent" in said_away
    assert not (tmp_path / "away.csv.rejects.csv").exists()
    assert back == 0
    assert "done: 10 rows, 10 created, 0 rejected, 0 skipped" in said_back
    hosts = sorted(
        link["bk_asst_inst_id"] for link in await links_in(loader_mongo, "host") if link["bk_inst_id"] == 1020
    )
    assert hosts == list(range(1020, 1030))  # each once
