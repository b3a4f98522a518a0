"""`cmdb-asso load FILE.xlsx`: a workbook of 1,000 association rows in bk-cmdb's export layout, some bad, previewed,
imported through the service over the embedded server, and resumed after an interruption (CONTRACT-ui 23)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from aiohttp.test_utils import TestServer

from cmdb_asso.__main__ import main
from cmdb_asso.app import create_app
from cmdb_asso.client import AssociationClient
from cmdb_asso.config import MongoSettings, Settings
from cmdb_asso.loader import State
from cmdb_asso.service.permission import StaticPolicy, UserGrants
from cmdb_asso.storage.client import MongoConnection, connect
from cmdb_asso.storage.embedded import EmbeddedMongo
from cmdb_asso.storage.schema import seed_demo
from cmdb_asso.workbook import WorkbookLoader
from tests.helpers import add_definition, links_in
from tests.wire.conftest import add_instances

pytestmark = pytest.mark.wire
AiohttpServer = Callable[..., Awaitable[TestServer]]
BELONG = "bk_switch_belong_bk_host"
# The demo's unique rules, one per model on its name: what the workbook's instances are named by.
UNIQUES = ["--unique", "bk_switch=2", "--unique", "host=1", "--unique", "bk_router=3", "--unique", "app=4"]
# The loader's user may edit switches, hosts and routers, not apps.
POLICY = StaticPolicy({"loader": UserGrants(edit=frozenset({"bk_switch", "host", "bk_router"}),
                                            view=frozenset({"bk_switch"}))})  # fmt: skip


@pytest.fixture
async def sheet_mongo(embedded: EmbeddedMongo) -> AsyncIterator[MongoConnection]:
    """A fresh database with 100 switches and 100 hosts, and a switch definition the loader may not edit."""
    settings = MongoSettings(database=f"x{uuid.uuid4().hex[:16]}", id_block_size=1000)
    mongo = await connect(settings, embedded.uri, embedded=True)
    await seed_demo(mongo)
    await add_instances(mongo, "bk_switch", range(1000, 1100))
    await add_instances(mongo, "host", range(1000, 1100))
    await add_definition(mongo, "app_connect_bk_switch", "app", "connect", "bk_switch", "n:n")
    yield mongo
    await mongo.client.drop_database(settings.database)
    await mongo.close()


def write_workbook(path: Path) -> dict[int, str]:
    """1,000 rows as bk-cmdb exports them (titles, an example, data from row 3; column A unread), 60 of them bad in
    six ways; returns the expected message of each bad row by its row number."""
    workbook = openpyxl.Workbook()
    workbook.create_sheet("bk_switch", 0)  # the model's own sheet comes first in bk-cmdb's export
    sheet = workbook.create_sheet("association")
    sheet.append(["association_attribute(Please do not edit)", "association ID", "Operation", "source instance",
                  "target instance"])  # fmt: skip
    sheet.append(["field_description(Please do not edit)", "e.g.:bk_switch_connect_host", "add/delete",
                  "Fill in the instance unique ID.", "Fill in the instance unique ID."])  # fmt: skip
    expected: dict[int, str] = {}
    for i in range(1000):
        number = i + 3
        switch, host = 1000 + i // 10, 1000 + (7 * i) % 100
        row: list[Any] = [None, BELONG, "add", f"Instance Name=bk_switch-{switch}", f"Hostname=host-{host}"]
        kind = i % 100
        if kind == 1:
            row[1] = "bk_switch_nothing_host"
            expected[number] = "association [bk_switch_nothing_host]  does not exists"
        elif kind == 2:
            row[3] = "Instance Name=bk_switch-9999"
            expected[number] = "[bk_switch] model [Instance Name=bk_switch-9999]  does not exists"
        elif kind in (3, 7):  # the link of the row `kind` before: again (done already), then deleted
            first = i - kind
            row[3:] = [f"Instance Name=bk_switch-{1000 + first // 10}", f"Hostname=host-{1000 + (7 * first) % 100}"]
            row[2] = "add" if kind == 3 else "delete"
        elif kind in (4, 5):  # 1:n: a second router for one switch is refused
            row[1:] = ["bk_router_connect_bk_switch", "add", f"Instance Name=router-{27 + kind}",
                       f"Instance Name=bk_switch-{1000 + i // 100}"]  # fmt: skip
            if kind == 5:
                expected[number] = (
                    "The relationship is 1:n, and multiple source model instances cannot be associated at the same "
                    "time."
                )
        elif kind == 6:
            row[1:] = ["app_connect_bk_switch", "add", "Name=app-41", f"Instance Name=bk_switch-{switch}"]
            expected[number] = "Do not have access permission."
        elif kind == 8:
            row[4] = None
            expected[number] = f"association {number} row could not process content;"
        elif kind == 9:
            row[2] = "update"
            expected[number] = "operate not found"
        sheet.append(row)
    workbook.save(path)
    return expected


def rejected_rows(path: Path) -> dict[int, str]:
    """The rejects file's rows: row number to message."""
    with path.open(encoding="utf-8") as handle:
        return {int(row["row"]): row["message"] for row in csv.DictReader(handle)}


async def links_of(mongo: MongoConnection, obj_id: str) -> set[tuple[str, int, int, int]]:
    """The links in `obj_id`'s table: definition, source, target and id."""
    return {(link["bk_obj_asst_id"], link["bk_inst_id"], link["bk_asst_inst_id"], link["id"])
            for link in await links_in(mongo, obj_id)}  # fmt: skip


async def test_a_workbook_is_previewed_then_imported_row_by_row_with_one_line_per_bad_row(
    aiohttp_server: AiohttpServer, sheet_mongo: MongoConnection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "bk_switch.xlsx"
    expected = write_workbook(source)
    app = create_app(Settings(mongodb=MongoSettings(uri="unused")), mongo=sheet_mongo, authorizer=POLICY)
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    command = ["load", str(source), "--url", url, "--user", "loader", "--object", "bk_switch", *UNIQUES]

    previewed = await asyncio.to_thread(main, [*command, "--dry-run"])
    # The service's own log lines go to the same standard output in this process.
    preview = next(
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"association')
    )
    written_by_preview = await links_in(sheet_mongo, "bk_switch")
    state_after_preview = (tmp_path / "bk_switch.xlsx.state").exists()
    loaded = await asyncio.to_thread(main, [*command, "--batch-size", "300"])
    said = capsys.readouterr().out

    assert previewed == 0
    assert preview == {"association": {"host": {"create": 930, "delete": 10, "total": 0},
                                       "bk_router": {"create": 20, "delete": 0, "total": 0},
                                       "app": {"create": 10, "delete": 0, "total": 0}}}  # fmt: skip
    assert written_by_preview == []
    assert not state_after_preview
    assert loaded == 1  # every row answered, some refused
    assert "done: 1000 rows, 940 imported, 60 rejected, 0 skipped (already done)" in said
    assert rejected_rows(tmp_path / "bk_switch.xlsx.rejects.csv") == expected
    switch_links, host_links = await links_of(sheet_mongo, "bk_switch"), await links_of(sheet_mongo, "host")
    router_links = await links_of(sheet_mongo, "bk_router")
    belong = {link for link in switch_links if link[0] == BELONG}
    assert len(belong) == 900
    assert len(switch_links - belong) == 10
    assert host_links == belong  # no half-written link: each in both tables, with one id
    assert router_links == switch_links - belong
    audits = await sheet_mongo.db["cc_AuditLog"].count_documents({})
    assert audits == 930  # 920 created (10 of them deleted again) and 10 deleted


async def test_an_interrupted_import_resumes_where_it_stopped_and_judges_every_row_once(
    aiohttp_server: AiohttpServer, sheet_mongo: MongoConnection, tmp_path: Path
) -> None:
    source = tmp_path / "bk_switch.xlsx"
    expected = write_workbook(source)
    app = create_app(Settings(mongodb=MongoSettings(uri="unused")), mongo=sheet_mongo, authorizer=POLICY)
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    rejects = tmp_path / "rejects.csv"
    uniques = {"bk_switch": 2, "host": 1, "bk_router": 3, "app": 4}

    async with AssociationClient(url, user="loader") as client:
        first = WorkbookLoader(client, "bk_switch", uniques, batch_size=150, progress=io.StringIO())
        batches = [0]

        def stop_after_two() -> None:
            batches[0] += 1
            if batches[0] == 2:
                first.stop.set()

        first.after_batch = stop_after_two
        interrupted = await first.run(source, State(tmp_path / "s.state", source), rejects)
        state = State(tmp_path / "s.state", source)
        state.load()
        second = WorkbookLoader(client, "bk_switch", uniques, batch_size=150, progress=io.StringIO())
        finished = await second.run(source, state, rejects)

    assert interrupted.interrupted
    assert not finished.interrupted
    assert interrupted.created + finished.created == 940
    assert finished.skipped == 300  # the readable rows of the two batches sent before the stop
    assert rejected_rows(rejects) == expected
    assert len(await links_in(sheet_mongo, "host")) == 900
