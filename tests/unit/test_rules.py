"""The association rules and storage mechanics, on the in-process mongomock store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cmdb_asso.domain import Definition, LinkEnds, NewLink
from cmdb_asso.errors import (
    DefinitionNotFound,
    DuplicateItem,
    OneToManyViolated,
    OneToOneViolated,
    SourceInstanceMissing,
    TargetInstanceMissing,
)
from cmdb_asso.service.associations import AssociationService, CreateRequest, MappingRules
from cmdb_asso.service.context import Caller
from cmdb_asso.service.permission import AllowAll
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.documents import truncate_utf8
from cmdb_asso.storage.ids import IdAllocator
from cmdb_asso.storage.indexes import inst_asst_indexes
from tests.helpers import audit_records, links_in

CALLER = Caller(user="admin", supplier_account="0", app_code="app", request_id="rid")


def _check(link: NewLink, existing: list[LinkEnds]) -> None:
    MappingRules(link.definition, existing).check(link.inst_id, link.asst_inst_id)


def _link(mapping: Any, inst_id: int = 1, asst_inst_id: int = 2) -> NewLink:
    return NewLink(Definition("d", "a", "b", "belong", mapping, "0"), inst_id, asst_inst_id, "0")


class FakeClock:
    """A clock the test moves by hand, so that a TTL really passes without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _service(
    mongo: MongoConnection, *, cache_seconds: float = 0, block: int = 10, clock: FakeClock | None = None
) -> AssociationService:
    store = AssociationStore(
        mongo, id_block_size=block, definition_cache_seconds=cache_seconds, clock=clock or FakeClock()
    )
    return AssociationService(store, AllowAll())


@pytest.mark.parametrize(
    ("mapping", "existing", "error"),
    [
        ("1:1", [LinkEnds(1, 9)], OneToOneViolated),
        ("1:1", [LinkEnds(9, 2)], OneToOneViolated),
        ("1:1", [LinkEnds(1, 2)], OneToOneViolated),
        ("1:n", [LinkEnds(9, 2)], OneToManyViolated),
        ("1:n", [LinkEnds(1, 2)], OneToManyViolated),
        ("n:n", [LinkEnds(1, 2)], DuplicateItem),
    ],
)
def test_each_mapping_refuses_what_it_limits(mapping: str, existing: list[LinkEnds], error: type[Exception]) -> None:
    with pytest.raises(error):
        _check(_link(mapping), existing)


@pytest.mark.parametrize(
    ("mapping", "existing"),
    [("1:n", [LinkEnds(1, 9)]), ("n:n", [LinkEnds(1, 9), LinkEnds(9, 2)]), ("1:1", [])],
)
def test_each_mapping_allows_what_it_does_not_limit(mapping: str, existing: list[LinkEnds]) -> None:
    _check(_link(mapping), existing)


async def test_a_created_link_gets_ids_from_the_sequence_in_blocks(mock_mongo: MongoConnection) -> None:
    service = _service(mock_mongo, block=5)

    ids = [await service.create_one(CALLER, CreateRequest("bk_switch_belong_bk_host", 11, host)) for host in (21, 22)]

    assert ids == [1, 2]
    sequence = await mock_mongo.db["cc_idgenerator"].find_one({"_id": "cc_InstAsst"})
    assert sequence["SequenceID"] == 5


async def test_two_processes_sharing_the_counter_never_hand_out_the_same_id(mock_mongo: MongoConnection) -> None:
    first, second = _service(mock_mongo, block=3), _service(mock_mongo, block=3)

    ids = [
        await service.create_one(CALLER, CreateRequest("bk_switch_belong_bk_host", switch, host))
        for switch in (11, 12, 13)
        for host, service in ((21, first), (22, second))
    ]

    assert len(set(ids)) == len(ids) == 6


async def test_the_service_raises_typed_errors_in_the_contract_order(mock_mongo: MongoConnection) -> None:
    service = _service(mock_mongo)

    with pytest.raises(DefinitionNotFound):
        await service.create_one(CALLER, CreateRequest("missing", 11, 21))
    with pytest.raises(SourceInstanceMissing):
        await service.create_one(CALLER, CreateRequest("bk_switch_belong_bk_host", 99, 98))
    with pytest.raises(TargetInstanceMissing):
        await service.create_one(CALLER, CreateRequest("bk_switch_belong_bk_host", 11, 98))


async def test_the_definition_cache_serves_a_changed_definition_after_its_ttl(mock_mongo: MongoConnection) -> None:
    clock = FakeClock()
    service = _service(mock_mongo, cache_seconds=60, clock=clock)
    await service.create_one(CALLER, CreateRequest("app_run_host", 41, 21))
    await mock_mongo.db["cc_ObjAsst"].update_one({"bk_obj_asst_id": "app_run_host"}, {"$set": {"mapping": "n:n"}})

    with pytest.raises(OneToOneViolated):
        await service.create_one(CALLER, CreateRequest("app_run_host", 41, 22))
    clock.now += 59
    with pytest.raises(OneToOneViolated):
        await service.create_one(CALLER, CreateRequest("app_run_host", 41, 22))
    clock.now += 2
    new_id = await service.create_one(CALLER, CreateRequest("app_run_host", 41, 22))
    assert new_id is not None
    assert new_id > 0


async def test_without_transactions_a_failed_second_table_write_undoes_everything(
    mock_mongo: MongoConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _service(mock_mongo)
    store = service.store
    original = store.writer.insert
    calls: list[str] = []

    async def fail_on_target_table(table: str, docs: list[dict[str, Any]], session: Any) -> None:
        calls.append(table)
        if table == "cc_InstAsst_0_pub_host":
            raise RuntimeError("injected between the two table writes")
        await original(table, docs, session)

    monkeypatch.setattr(store.writer, "insert", fail_on_target_table)
    with pytest.raises(RuntimeError):
        await service.create_one(CALLER, CreateRequest("bk_switch_belong_bk_host", 11, 21))

    assert calls == ["cc_AuditLog", "cc_InstAsst_0_pub_bk_switch", "cc_InstAsst_0_pub_host"]
    assert await links_in(mock_mongo, "bk_switch") == []
    assert await links_in(mock_mongo, "host") == []
    assert await audit_records(mock_mongo) == []


async def test_without_transactions_a_failed_audit_write_writes_no_link(
    mock_mongo: MongoConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _service(mock_mongo)
    original = service.store.writer.insert

    async def fail_audit(table: str, docs: list[dict[str, Any]], session: Any) -> None:
        if table == "cc_AuditLog":
            raise RuntimeError("injected audit failure")
        await original(table, docs, session)

    monkeypatch.setattr(service.store.writer, "insert", fail_audit)
    with pytest.raises(RuntimeError):
        await service.create_one(CALLER, CreateRequest("bk_switch_belong_bk_host", 11, 21))

    assert await links_in(mock_mongo, "bk_switch") == []
    assert await links_in(mock_mongo, "host") == []


async def test_the_store_refuses_a_second_one_to_one_link_even_when_the_check_is_raced(
    mock_mongo: MongoConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _service(mock_mongo)
    await service.create_one(CALLER, CreateRequest("app_run_host", 41, 21))
    original = service.store.read_for_create
    blind = [True]

    async def stale_read(definition: Any, supplier: str, pairs: list[tuple[int, int]], **kwargs: Any) -> Any:
        # The first read misses the winner, as a concurrent request's read would: only the store can refuse.
        existing, sources, targets = await original(definition, supplier, pairs, **kwargs)
        if blind:
            blind.pop()
            return [], sources, targets
        return existing, sources, targets

    monkeypatch.setattr(service.store, "read_for_create", stale_read)
    with pytest.raises(OneToOneViolated):
        await service.create_one(CALLER, CreateRequest("app_run_host", 42, 21))
    assert not blind, "the create path never made the (blinded) read"
    assert len(await links_in(mock_mongo, "app")) == 1
    assert len(await audit_records(mock_mongo)) == 1


async def test_the_indexes_have_the_contract_names_keys_and_options(mock_mongo: MongoConnection) -> None:
    raw = await mock_mongo.db["cc_InstAsst_0_pub_host"].index_information()
    info = {name: {**spec, "key": list(spec["key"])} for name, spec in raw.items()}

    assert info["bkcc_idx_bkObjId_bkInstID"]["key"] == [("bk_obj_id", 1), ("bk_inst_id", 1)]
    assert info["bkcc_unique_id"]["key"] == [("id", 1)]
    assert info["bkcc_unique_id"]["unique"]
    assert info["bkcc_idx_bkAsstObjId_bkAsstInstId"]["key"] == [("bk_asst_obj_id", 1), ("bk_asst_inst_id", 1)]
    assert info["bkcc_idx_bkAsstID"]["key"] == [("bk_asst_id", 1)]
    unique = info["bkcc_unique_bkInstID_bkAsstInstID_bkObjAsstID"]
    assert unique["key"] == [("bk_inst_id", 1), ("bk_asst_inst_id", 1), ("bk_obj_asst_id", 1)]
    assert unique["unique"]
    for name in ("cmdb_asso_unique_src_guard", "cmdb_asso_unique_dst_guard"):
        assert info[name]["unique"]
        assert info[name]["sparse"]
    assert {model.document["name"] for model in inst_asst_indexes()} <= set(info)


def test_resource_names_are_cut_to_256_bytes_without_splitting_a_character() -> None:
    cut = truncate_utf8("主" * 100, 256)

    assert len(cut.encode()) <= 256
    assert cut == "主" * 85


async def test_ids_follow_bk_cmdbs_configured_step_and_initial_id(mock_mongo: MongoConnection) -> None:
    config = {"id_generator": {"enabled": True, "step": 3, "init_id": {"inst_asst": 1000}}}
    await mock_mongo.db["cc_System"].insert_one({"_id": "configadmin", "config": json.dumps(config)})
    ids = IdAllocator(mock_mongo, block_size=10)

    await ids.apply_initial_ids()
    first = await ids.take("cc_InstAsst", 4)
    audit = await ids.take("cc_AuditLog", 2)

    # As bk-cmdb's NextSequences hands them out: every id on the environment's residue of the step.
    assert first == [1003, 1006, 1009, 1012]
    assert audit == [3, 6]
    stored = await mock_mongo.db["cc_idgenerator"].find_one({"_id": "cc_InstAsst"})
    assert stored["SequenceID"] == 1030  # the whole block of 10, times the step


async def test_without_a_configured_step_ids_count_by_one(mock_mongo: MongoConnection) -> None:
    ids = IdAllocator(mock_mongo, block_size=5)

    assert await ids.take("cc_InstAsst", 3) == [1, 2, 3]
