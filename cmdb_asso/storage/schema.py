"""Database set-up: the indexes of every model's association table, and the demo data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from bson.int64 import Int64
from pymongo import IndexModel

from cmdb_asso.errors import CmdbError, StoreReadUnavailable
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.failures import translate_errors
from cmdb_asso.storage.indexes import IndexManager, TableIndexes, create_indexes
from cmdb_asso.storage.tables import (
    ASST_DES,
    ATTRIBUTES,
    OBJ_ASST,
    OBJ_DES,
    OBJECT_UNIQUE,
    inst_asst_table,
    instance_table,
)

log = structlog.get_logger(__name__)


async def model_tables(mongo: MongoConnection, supplier_account: str) -> list[str]:
    """The association table of every model listed in `cc_ObjDes`."""
    with translate_errors(write=False):
        obj_ids = sorted(
            {str(doc["bk_obj_id"]) for doc in await mongo.db[OBJ_DES].find({}, {"bk_obj_id": 1}).to_list(None)}
        )
    return [inst_asst_table(obj_id, supplier_account) for obj_id in obj_ids]


async def ensure_indexes(
    mongo: MongoConnection, supplier_account: str, manager: IndexManager | None = None
) -> list[TableIndexes]:
    """Prepare the association table of every model listed in `cc_ObjDes`: read its indexes, create the
    missing ones, and say which unique indexes each really has."""
    tables = await model_tables(mongo, supplier_account)
    return await (manager or IndexManager(mongo)).prepare_all(tables)


class ShardedTables(Exception):
    """Association tables are sharded: the service refuses to run on them (the README says why)."""

    def __init__(self, tables: list[str]) -> None:
        super().__init__(
            f"association tables are sharded: {', '.join(tables)}. They must stay unsharded: a link is written "
            "to two tables, and the unique indexes that keep the rules race-free cannot hold across shards "
            "unless the shard key is their prefix."
        )
        self.tables = tables


async def refuse_sharded_tables(mongo: MongoConnection, supplier_account: str) -> None:
    """On mongos, raise ShardedTables when any model's association table is sharded (config.collections)."""
    await mongo.supports_transactions()  # identifies the server
    if not mongo.mongos:
        return
    tables = await model_tables(mongo, supplier_account)
    namespaces = [f"{mongo.db.name}.{table}" for table in tables]
    try:
        with translate_errors(write=False):
            docs = (
                await mongo.client["config"]["collections"]
                .find({"_id": {"$in": namespaces}, "dropped": {"$ne": True}}, {"_id": 1})
                .to_list(None)
            )
    except StoreReadUnavailable:
        raise  # MongoDB does not answer now: the check is tried again
    except CmdbError:
        log.warning("sharding_not_checked", detail="config.collections could not be read (privileges?)")
        return
    sharded = sorted(str(doc["_id"]).split(".", 1)[1] for doc in docs)
    if sharded:
        raise ShardedTables(sharded)


async def has_definitions(mongo: MongoConnection) -> bool:
    """Whether any association definition exists (an empty database has none)."""
    with translate_errors(write=False):
        return await mongo.db[OBJ_ASST].find_one({}, {"_id": 1}) is not None


_KINDS = [
    # bk_asst_id, name, src_des, dest_des, direction
    ("belong", "属于", "属于", "包含", "src_to_dest"),
    ("group", "组成", "组成", "组成于", "src_to_dest"),
    ("bk_mainline", "拓扑组成", "组成", "组成于", "src_to_dest"),
    ("run", "运行", "运行于", "运行", "src_to_dest"),
    ("connect", "上联", "上联", "下联", "src_to_dest"),
    ("default", "默认关联", "关联", "被关联", "none"),
]
_MODELS = [("host", "主机"), ("bk_switch", "交换机"), ("bk_router", "路由器"), ("app", "应用")]
# bk_obj_asst_id, source, kind, target, mapping
DEMO_DEFINITIONS = [
    ("bk_switch_belong_bk_host", "bk_switch", "belong", "host", "n:n"),
    ("bk_router_connect_bk_switch", "bk_router", "connect", "bk_switch", "1:n"),
    ("app_run_host", "app", "run", "host", "1:1"),
]
DEMO_INSTANCES: dict[str, list[tuple[int, str]]] = {
    "host": [(21, "host-21"), (22, "host-22"), (23, "host-23"), (24, "host-24"), (25, "host-25")],
    "bk_switch": [
        (11, "switch-11"),
        (12, "switch-12"),
        (13, "switch-13"),
        (14, "switch-14"),
        (15, "switch-15"),
    ],
    "bk_router": [(31, "router-31"), (32, "router-32"), (33, "router-33")],
    "app": [(41, "app-41"), (42, "app-42"), (43, "app-43")],
}


# Documents sent per insert and per lookup of what is stored already.
_SEED_CHUNK = 5000


@dataclass(frozen=True)
class SeedData:
    """Models, association definitions and instances to write into a database."""

    models: list[tuple[str, str]]  # bk_obj_id, name
    definitions: list[tuple[str, str, str, str, str]]  # bk_obj_asst_id, source, kind, target, mapping
    instances: dict[str, list[tuple[int, str]]]  # by model: id, name


DEMO = SeedData(_MODELS, DEMO_DEFINITIONS, DEMO_INSTANCES)
# Links between the demo instances (bk_obj_asst_id, source, target), so that /graph has something to draw;
# written through the service, with their audit records, by the `seed-demo` command (not by
# `serve --seed-demo-if-empty`: the README's first requests create links of switches 11-13 on a clean start).
DEMO_LINKS = [
    ("bk_router_connect_bk_switch", 31, 14),
    ("bk_router_connect_bk_switch", 31, 15),
    ("bk_router_connect_bk_switch", 32, 13),
    ("bk_switch_belong_bk_host", 14, 24),
    ("bk_switch_belong_bk_host", 14, 25),
    ("bk_switch_belong_bk_host", 15, 25),
    ("bk_switch_belong_bk_host", 13, 24),
    ("app_run_host", 42, 24),
    ("app_run_host", 43, 25),
]


async def _insert_missing(collection: Any, key: str, docs: list[dict[str, Any]], base: dict[str, Any]) -> None:
    """Insert the documents whose `key` is not stored yet (plain inserts: every store runs them the same)."""
    for start in range(0, len(docs), _SEED_CHUNK):
        chunk = {doc[key]: doc for doc in docs[start : start + _SEED_CHUNK]}
        query = {**base, key: {"$in": list(chunk)}}
        stored = {doc[key] for doc in await collection.find(query, {"_id": 0, key: 1}).to_list(None)}
        missing = [doc for value, doc in chunk.items() if value not in stored]
        if missing:
            await collection.insert_many(missing, ordered=False)


async def seed_demo(mongo: MongoConnection, supplier_account: str = "0") -> None:
    """Write the demo kinds, models, definitions and instances; running it again changes nothing."""
    await seed(mongo, DEMO, supplier_account)


async def seed(mongo: MongoConnection, data: SeedData, supplier_account: str = "0") -> None:
    """Write the association kinds and `data`'s models, definitions and instances (with the instance tables'
    id index, as bk-cmdb has one); what is stored already is left as it is."""
    now = datetime.now(UTC).replace(tzinfo=None)
    common = {"bk_supplier_account": supplier_account, "create_time": now, "last_time": now}
    kinds = [
        {
            "id": Int64(row),
            "bk_asst_id": kind,
            "bk_asst_name": name,
            "src_des": src,
            "dest_des": dest,
            "direction": direction,
            "ispre": True,
            **common,
        }
        for row, (kind, name, src, dest, direction) in enumerate(_KINDS, start=1)
    ]
    models = [
        {
            "id": Int64(row),
            "bk_obj_id": obj_id,
            "bk_obj_name": name,
            "ispre": obj_id == "host",
            "bk_classification_id": "bk_network" if obj_id.startswith("bk_") else "bk_host_manage",
            **common,
        }
        for row, (obj_id, name) in enumerate(data.models, start=1)
    ]
    definitions = [
        {
            "id": Int64(row),
            "bk_obj_asst_id": obj_asst_id,
            "bk_obj_asst_name": "",
            "bk_obj_id": src,
            "bk_asst_id": kind,
            "bk_asst_obj_id": dest,
            "mapping": mapping,
            "on_delete": "none",
            "ispre": False,
            **common,
        }
        for row, (obj_asst_id, src, kind, dest, mapping) in enumerate(data.definitions, start=1)
    ]
    # Each model's name attribute, and a unique rule on it: what an Excel import names instances by.
    attributes, uniques = [], []
    for row, (obj_id, _name) in enumerate(data.models, start=1):
        table = instance_table(obj_id, supplier_account)
        attributes.append(
            {
                "id": Int64(row),
                "bk_obj_id": obj_id,
                "bk_property_id": table.name_field,
                "bk_property_name": "Name",
                "bk_property_type": "singlechar",
                "ispre": True,
                **common,
            }
        )
        uniques.append({"id": Int64(row), "bk_obj_id": obj_id, "keys": [{"key_kind": "property", "key_id": Int64(row)}],
                        "ispre": False, **common})  # fmt: skip
    with translate_errors(write=True):
        await _insert_missing(mongo.db[ASST_DES], "bk_asst_id", kinds, {})
        await _insert_missing(mongo.db[OBJ_DES], "bk_obj_id", models, {})
        await _insert_missing(mongo.db[ATTRIBUTES], "id", attributes, {})
        await _insert_missing(mongo.db[OBJECT_UNIQUE], "id", uniques, {})
        await _insert_missing(mongo.db[OBJ_ASST], "bk_obj_asst_id", definitions, {})
        for obj_id, instances in data.instances.items():
            table = instance_table(obj_id, supplier_account)
            base = dict(table.base_filter)
            docs = [
                {**base, table.id_field: Int64(inst_id), table.name_field: name, **common}
                for inst_id, name in instances
            ]
            await _insert_missing(mongo.db[table.collection], table.id_field, docs, base)
            await create_indexes(mongo.db[table.collection], [IndexModel([(table.id_field, 1)], name=table.id_field)])
    await ensure_indexes(mongo, supplier_account)
