"""bk-cmdb's own frontend, replayed: every live call of `tests/data/ui-calls.json` (read from bk-cmdb's `src/ui`
and web server, CONTRACT-ui), sent with the frontend's method, path and body to the service over the embedded
server, its answer checked for the keys and types the cited UI code reads. A live call the table below does not
know fails until it is served (a replay) or set aside with a reason."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.embedded import free_port
from tests.helpers import Answer, read_envelope, wait_ready

pytestmark = pytest.mark.wire
Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[2]
CALLS = json.loads((ROOT / "tests" / "data" / "ui-calls.json").read_text(encoding="utf-8"))
# What bk-cmdb's frontend reads of a link (CONTRACT-reads 10).
LINK_KEYS = {"id": int, "bk_obj_id": str, "bk_inst_id": int, "bk_asst_obj_id": str, "bk_asst_inst_id": int,
             "bk_obj_asst_id": str, "bk_asst_id": str}  # fmt: skip
HOST_AS_SOURCE = {"condition": {"bk_obj_id": "host", "bk_inst_id": 21}, "bk_obj_id": "host"}
HOST_AS_TARGET = {"condition": {"bk_asst_obj_id": "host", "bk_asst_inst_id": 21}, "bk_obj_id": "host"}
FIND_ALL = {"bk_obj_id": "bk_switch", "conditions": {"condition": "AND", "rules": [
    {"field": "bk_asst_id", "operator": "equal", "value": "belong"},
    {"field": "bk_obj_asst_id", "operator": "equal", "value": "bk_switch_belong_bk_host"},
    {"field": "bk_asst_obj_id", "operator": "equal", "value": "host"},
    {"field": "bk_inst_id", "operator": "equal", "value": 11}]}}  # fmt: skip


@dataclass(frozen=True)
class Sent:
    """One request as the frontend (or bk-cmdb's web server) sends it."""

    method: str
    path: str
    body: Any  # None: no body at all


async def send(client: Client | aiohttp.ClientSession, sent: Sent, base: str = "") -> Answer:
    """Send it with the frontend's identity header and read the envelope (`base`: the service's URL, for a
    session)."""
    data = None if sent.body is None else json.dumps(sent.body)
    headers = {"X-Bkcmdb-User": "admin", "Content-Type": "application/json"}
    async with client.request(sent.method, base + sent.path, data=data, headers=headers) as response:
        return read_envelope(response.status, await response.json(), response.headers.copy())


def is_link(item: Any) -> bool:
    """A link item as the UI reads it."""
    return isinstance(item, dict) and all(isinstance(item.get(key), kind) for key, kind in LINK_KEYS.items())


def links_read(answer: Answer) -> None:
    """The list of links that Find answers (the UI maps each item's ends and id)."""
    assert answer.code == 0, answer
    assert isinstance(answer.data, list), answer.data
    assert answer.data, answer
    assert all(is_link(item) for item in answer.data), answer.data


def association_tab_read(answer: Answer) -> None:
    """`association_count`, `data.association.src/dst` and `data.instance[<model>]` (association.js:50-88)."""
    assert answer.code == 0, answer
    assert isinstance(answer.data["association_count"], int)
    association, instance = answer.data["data"]["association"], answer.data["data"]["instance"]
    assert all(is_link(item) for item in association["src"] + association["dst"])
    assert association["src"], answer
    assert isinstance(instance, dict), answer
    assert all(isinstance(rows, list) and all(isinstance(row, dict) for row in rows) for rows in instance.values())
    assert {"bk_inst_id": 11, "bk_inst_name": "switch-11"} in instance["bk_switch"]


def import_read(answer: Answer) -> None:
    """`err_msg`: the failed rows, each `row` and `message` (the web server's importAssociation, importer.go:958)."""
    assert answer.code == 0, answer
    assert answer.data == {"err_msg": [{"row": 4, "message": "[bk_switch] model [Instance Name=switch-99]  does not "
                                                               "exists"}]}, answer  # fmt: skip


def count_read(answer: Answer) -> None:
    """`count`, destructured from the data (association.js:109)."""
    assert answer.code == 0, answer
    assert isinstance(answer.data["count"], int), answer
    assert answer.data["count"] >= 1, answer


def info_read(answer: Answer) -> None:
    """`info`, a page of links (association.js:116)."""
    assert answer.code == 0, answer
    assert answer.data["info"], answer
    assert all(is_link(item) for item in answer.data["info"]), answer


def created_read(answer: Answer) -> None:
    """The new link's `id` (object-association.js:148)."""
    assert answer.code == 0, answer
    assert isinstance(answer.data["id"], int)


def done_read(answer: Answer) -> None:
    """Success is all the UI looks at."""
    assert answer.code == 0, answer


def definitions_read(answer: Answer) -> None:
    """Association rows (the web server reads bk_obj_asst_id, bk_obj_id, bk_asst_obj_id, bk_asst_id, mapping)."""
    rows = answer.data["info"] if isinstance(answer.data, dict) else answer.data
    assert answer.code == 0, answer
    assert isinstance(rows, list)
    for row in rows:
        assert all(isinstance(row[key], str) for key in ("bk_obj_asst_id", "bk_obj_id", "bk_asst_obj_id", "bk_asst_id"))
    if isinstance(answer.data, dict):
        assert answer.data["count"] == len(rows)


Check = Callable[[Answer], None]
# Per live call (file:line, method): what is sent, and what the UI code reads of each answer.
REPLAYS: dict[str, tuple[list[Sent], Check]] = {
    "src/ui/src/service/instance/association.js:49 POST": (
        [Sent("POST", "/api/v3/findmany/inst/association/object/bk_switch/inst_id/11/offset/0/limit/200/web", {})],
        association_tab_read,
    ),
    "src/ui/src/service/association/index.js:35 POST": (
        [Sent("POST", "/api/v3/find/instassociation", body) for body in (HOST_AS_TARGET,)],
        links_read,
    ),
    "src/ui/src/service/association/index.js:44 POST": (
        [Sent("POST", "/api/v3/find/instassociation/biz/2", body) for body in (HOST_AS_TARGET,)],
        links_read,
    ),
    "src/ui/src/store/modules/api/object-association.js:137 POST": (
        [
            Sent(
                "POST",
                "/api/v3/find/instassociation",
                {"condition": {"bk_obj_id": "bk_switch", "bk_inst_id": 11}, "bk_obj_id": "bk_switch"},
            )
        ],
        links_read,
    ),
    "src/ui/src/store/modules/api/object-association.js:148 POST": (
        [
            Sent(
                "POST",
                "/api/v3/create/instassociation",
                {"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": 13, "bk_asst_inst_id": 25},
            )
        ],
        created_read,
    ),
    "src/ui/src/store/modules/api/object-association.js:159 DELETE": (
        [
            Sent("DELETE", "/api/v3/delete/instassociation/bk_switch/{to_delete}", None),
            Sent("DELETE", "/api/v3/delete/instassociation/host/{to_delete_too}", {}),
        ],
        done_read,
    ),
    "src/ui/src/service/instance/association.js:109 POST": (
        [Sent("POST", "/api/v3/count/instance_associations/object/bk_switch", FIND_ALL)],
        count_read,
    ),
    "src/ui/src/service/instance/association.js:116 POST": (
        [
            Sent(
                "POST",
                "/api/v3/search/instance_associations/object/bk_switch",
                {**FIND_ALL, "page": {"start": 0, "limit": 500}},
            )
        ],
        info_read,
    ),
    "src/web_server/service/excel/core/asst_func.go:78 POST": (
        [
            Sent(
                "POST",
                "/api/v3/topo/find/object/bk_switch/association/by/bk_obj_asst_id",
                {"bk_obj_asst_ids": ["bk_switch_belong_bk_host"]},
            )
        ],
        definitions_read,
    ),
    "src/web_server/service/excel/core/topo_func.go:69 POST": (
        [Sent("POST", "/api/v3/find/instassociation/model", {"condition": {"bk_asst_id": "bk_mainline"}})],
        definitions_read,
    ),
    "src/web_server/service/excel/core/asst_func.go:131 POST": (
        [
            Sent(
                "POST",
                "/api/v3/find/instassociation",
                {
                    "bk_obj_id": "bk_switch",
                    "condition": {
                        "bk_obj_id": "bk_switch",
                        "bk_inst_id": {"$in": [11, 12]},
                        "bk_obj_asst_id": {"$in": ["bk_switch_belong_bk_host"]},
                        "bk_asst_obj_id": {"$ne": "bk_switch"},
                    },
                },
            )
        ],
        links_read,
    ),
    "src/web_server/service/excel/core/asst_func.go:151 POST": (
        [
            Sent(
                "POST",
                "/api/v3/find/instassociation",
                {
                    "bk_obj_id": "host",
                    "condition": {
                        "bk_asst_obj_id": "host",
                        "bk_asst_inst_id": {"$in": [21, 22]},
                        "bk_obj_asst_id": {"$in": ["bk_switch_belong_bk_host"]},
                        "bk_obj_id": {"$ne": "host"},
                    },
                },
            )
        ],
        links_read,
    ),
}
REPLAYS["src/web_server/service/excel/core/asst_func.go:98 POST"] = (
    [
        Sent("POST", "/api/v3/import/instassociation/bk_switch", {
            "association_info": {
                "3": {"bk_obj_asst_id": "bk_switch_belong_bk_host", "operate": 2,
                      "src_primary_key": "Instance Name=switch-13", "dst_primary_key": "Hostname=host-23"},
                "4": {"bk_obj_asst_id": "bk_switch_belong_bk_host", "operate": 2,
                      "src_primary_key": "Instance Name=switch-99", "dst_primary_key": "Hostname=host-23"}},
            "asst_object_unique_id_info": {"host": 1}, "object_unique_id": 2}),
    ],
    import_read,
)  # fmt: skip
# Live calls this service does not answer, each with the reason.
SET_ASIDE: dict[str, str] = {
    "src/ui/src/service/instance/import.js:19 POST": "bk-cmdb's web server route (a multipart Excel upload), not an "
    "API of this service: the calls it makes to us are the web server's, replayed above",
    "src/ui/src/service/host/import.js:23 POST": "bk-cmdb's web server routes (host Excel import and update): the "
    "calls they make to us are the web server's, replayed above",
}


def _key(call: dict[str, Any]) -> str:
    return f"{call['file']}:{call['line']} {call['method']}"


def _live(call: dict[str, Any], web_server: bool) -> bool:
    status = str(call.get("status", ""))
    return web_server or status.startswith("live")


def test_every_live_call_is_replayed_or_set_aside_with_a_reason() -> None:
    known = {*REPLAYS, *SET_ASIDE}
    live = [_key(call) for call in CALLS["frontend_calls"] if _live(call, web_server=False)]
    live += [_key(call) for call in CALLS["web_server_calls"]]

    assert sorted(set(live) - known) == []
    assert sorted(known - set(live)) == []  # nothing replayed that the file does not list


async def test_every_live_call_answers_what_the_ui_reads(wire_client: Client, wire_mongo: MongoConnection) -> None:
    """The service reaching a separate nx-27017 server by its URI."""
    await wire_mongo.db["cc_ApplicationBase"].insert_one(
        {"bk_biz_id": 2, "bk_biz_name": "demo", "default": 0, "bk_supplier_account": "0"}
    )
    await replay_every_call(functools.partial(send, wire_client))


async def test_every_live_call_answers_what_the_ui_reads_from_a_service_in_embedded_mode(tmp_path: Path) -> None:
    """The service as `make run` starts it: its own embedded server, an empty database seeded with the demo."""
    port = free_port()
    env = {**os.environ, "CMDB_ASSO_HTTP_PORT": str(port), "CMDB_ASSO_DATA_DIR": str(tmp_path / "var")}
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "service.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmdb_asso", "serve", "--seed-demo-if-empty",
            env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base, seconds=60)
            await replay_every_call(functools.partial(send, session, base=base))
    finally:
        process.terminate()
        await process.wait()


async def replay_every_call(sender: Callable[[Sent], Awaitable[Answer]]) -> None:
    """Create three links, then send every replayed call and check what the UI reads of its answer."""
    links = {}
    for name, (src, dst) in {"to_keep": (11, 21), "to_delete": (12, 22), "to_delete_too": (14, 23)}.items():
        made = await sender(Sent("POST", "/api/v3/create/instassociation",
                                 {"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": src,
                                  "bk_asst_inst_id": dst}))  # fmt: skip
        assert made.code == 0, made
        links[name] = made.data["id"]

    for key, (requests, check) in REPLAYS.items():
        for sent in requests:
            answer = await sender(Sent(sent.method, sent.path.format(**links), sent.body))
            try:
                check(answer)
            except AssertionError as exc:
                raise AssertionError(f"{key}: {sent.method} {sent.path}: {exc}") from exc
