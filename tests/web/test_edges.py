"""Strict edges at the HTTP boundary: headers as strict as body fields, slow bodies, 405's Allow, flags, bounds,
and the ESB secret check kept off the event loop."""

from __future__ import annotations

import asyncio
import io
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient

from cmdb_asso import credentials
from cmdb_asso.client import BatchResult, ServiceUnavailableError
from cmdb_asso.config import AppCredential, AuthSettings, LimitSettings, Settings
from cmdb_asso.credentials import hash_secret
from cmdb_asso.errors import AppAuthFailed
from cmdb_asso.loader import Loader, Rejected, Row, State, parse_row
from cmdb_asso.operations import BY_NAME
from cmdb_asso.service import apps
from cmdb_asso.service.apps import AppAuthenticator
from cmdb_asso.storage.associations import AssociationStore
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import audit_records, call, create, link_body, links_in, read_envelope

Client = TestClient[Any, Any]
SEED = link_body("bk_switch_belong_bk_host", 11, 21)
SEED_JSON = b'{"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": 11, "bk_asst_inst_id": 21}'


async def _raw_request(client: Client, head: bytes, body: bytes = b"", *, then_wait: bool = False) -> bytes:
    """Send raw bytes to the test server and read its whole answer (it closes the connection)."""
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head + body)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


def _split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def test_a_user_header_that_is_not_utf_8_is_refused_and_writes_nothing(
    client: Client, mock_mongo: MongoConnection
) -> None:
    head = (
        b"POST /api/v3/create/instassociation HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nX-Bkcmdb-User: adm\xffin\r\n"
        b"Content-Length: " + str(len(SEED_JSON)).encode() + b"\r\n\r\n"
    )

    status, _headers, body = _split(await _raw_request(client, head, SEED_JSON))

    assert status == 200
    assert b'"bk_error_code":1199006' in body
    assert await links_in(mock_mongo, "bk_switch") == []
    assert await audit_records(mock_mongo) == []


@pytest.mark.parametrize("user", ["a\tb", "x" * 257])
async def test_a_user_that_is_not_plain_text_is_refused(client: Client, mock_mongo: MongoConnection, user: str) -> None:
    answer = await create(client, SEED, user=user)
    esb = await create(client, SEED, spelling="esb", user=user)

    assert (answer.code, esb.code) == (1199006, 1199006)
    assert await links_in(mock_mongo, "bk_switch") == []


async def test_a_body_that_stalls_answers_408_in_the_envelope(
    make_client: MakeClient, settings: Settings, mock_mongo: MongoConnection
) -> None:
    slow = replace(settings, http=replace(settings.http, body_timeout_seconds=0.2))
    client = await make_client(app_settings=slow)
    head = (
        b"POST /api/v3/create/instassociation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Bkcmdb-User: admin\r\nContent-Length: " + str(len(SEED_JSON)).encode() + b"\r\n\r\n"
    )
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(head + SEED_JSON[:10])  # and then nothing: the server must answer by itself
    await writer.drain()

    raw = await reader.read()
    writer.close()

    status, headers, body = _split(raw)
    assert status == 408
    assert headers["Content-Type"].startswith("application/json")
    assert b'"bk_error_code":1199003' in body
    assert await links_in(mock_mongo, "bk_switch") == []


async def test_a_slow_body_does_not_spend_the_database_deadline(
    make_client: MakeClient, settings: Settings, mock_mongo: MongoConnection
) -> None:
    tight = replace(
        settings,
        http=replace(settings.http, body_timeout_seconds=5),
        mongodb=replace(settings.mongodb, request_deadline_seconds=0.2),
    )
    client = await make_client(app_settings=tight)
    head = (
        b"POST /api/v3/create/instassociation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nX-Bkcmdb-User: admin\r\nContent-Length: " + str(len(SEED_JSON)).encode() + b"\r\n\r\n"
    )
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(head + SEED_JSON[:10])
    await writer.drain()
    await asyncio.sleep(0.5)  # the client is slow on purpose: longer than the whole database deadline
    writer.write(SEED_JSON[10:])
    await writer.drain()

    raw = await reader.read()
    writer.close()

    status, _headers, body = _split(raw)
    assert status == 200
    assert b'"bk_error_code":0' in body
    assert len(await links_in(mock_mongo, "bk_switch")) == 1


async def test_a_wrong_method_answers_405_with_allow(client: Client) -> None:
    response = await client.get("/api/v3/create/instassociation", headers={"X-Bkcmdb-User": "admin"})

    answer = read_envelope(response.status, await response.json(), response.headers)
    assert (answer.status, answer.code) == (405, 1199003)
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize(("language", "code"), [("fr", 1199006), ("english", 1199006), ("zh-CN", 0), ("en-US", 0)])
@pytest.mark.parametrize("spelling", ["native", "esb"])
async def test_a_language_the_service_does_not_speak_is_refused(
    client: Client, language: str, code: int, spelling: str
) -> None:
    answer = await call(client, "count", {"bk_obj_id": "host"}, spelling=spelling, language=language)

    assert answer.code == code


@pytest.mark.parametrize("field", ["bk_app_code", "bk_username", "bk_app_secret", "bk_token"])
@pytest.mark.parametrize("value", [12, ["a"], {"a": 1}, True])
async def test_an_esb_common_argument_that_is_not_a_string_is_an_authentication_failure(
    client: Client, mock_mongo: MongoConnection, field: str, value: Any
) -> None:
    answer = await create(client, {**SEED, "bk_username": "admin", field: value}, spelling="esb", user=None)

    assert (answer.status, answer.code) == (401, 1199046)
    assert await links_in(mock_mongo, "bk_switch") == []


async def test_a_find_matching_more_than_the_setting_answers_1199059(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(app_settings=replace(settings, limits=LimitSettings(find_max_results=2)))
    for inst_id, asst_inst_id in ((11, 21), (12, 22)):
        assert (await create(client, link_body("bk_switch_belong_bk_host", inst_id, asst_inst_id))).code == 0

    two = await call(client, "find", {"bk_obj_id": "bk_switch", "condition": {}})
    assert (two.code, [link["id"] for link in two.data]) == (0, [1, 2])
    assert (await create(client, link_body("bk_switch_belong_bk_host", 13, 23))).code == 0
    three = await call(client, "find", {"bk_obj_id": "bk_switch", "condition": {}})

    assert (three.code, three.data) == (1199059, None)


async def test_the_secret_check_runs_off_the_event_loop_and_a_refusal_is_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    real_verify = credentials.verify_secret

    def spying_verify(secret: str, stored: str) -> bool:
        threads.append(threading.get_ident())
        return real_verify(secret, stored)

    monkeypatch.setattr(apps, "verify_secret", spying_verify)
    authenticator = AppAuthenticator({"app": hash_secret("right", iterations=1000)})

    for _ in range(5):
        with pytest.raises(AppAuthFailed):
            await authenticator.authenticate("app", "wrong")
    await authenticator.authenticate("app", "right")
    await authenticator.authenticate("app", "right")

    assert len(threads) == 2  # one PBKDF2 run for the wrong secret, one for the right one
    assert threading.get_ident() not in threads


async def test_wrong_secrets_do_not_stall_other_requests(
    make_client: MakeClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = threading.Event()

    def slow_verify(secret: str, stored: str) -> bool:
        released.wait(10)
        return False

    monkeypatch.setattr(apps, "verify_secret", slow_verify)
    secured = replace(settings, auth=AuthSettings(apps=(AppCredential("app", hash_secret("s", iterations=1000)),)))
    client = await make_client(app_settings=secured)
    stuck = asyncio.ensure_future(create(client, {**SEED, "bk_app_code": "app"}, spelling="esb"))

    # While the secret check hangs in its thread, a native request is answered: the loop is free.
    answer = await call(client, "count", {"bk_obj_id": "host"})
    released.set()

    assert answer.code == 0
    assert (await stuck).code == 1199046


async def test_the_definition_cache_is_bounded(mock_mongo: MongoConnection) -> None:
    store = AssociationStore(mock_mongo, id_block_size=10, definition_cache_seconds=60, definition_cache_entries=3)
    for supplier in range(10):
        await store.find_definitions("bk_switch_belong_bk_host", ("0", str(supplier)))

    cache = store._definitions
    assert cache is not None
    assert len(cache) <= 3


@pytest.mark.parametrize("value", ["11.9", 11.9, "١٢", "１２", "1_000", "²", "0", -3, True, "9223372036854775808"])
def test_the_loader_refuses_what_the_service_refuses(value: Any) -> None:
    row = parse_row(1, {"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": value, "bk_asst_inst_id": 21})

    assert isinstance(row, Rejected)
    assert row.code == 1199006


@pytest.mark.parametrize("value", ["12", 12, 12.0, " 12 "])
def test_the_loader_reads_plain_ids(value: Any) -> None:
    row = parse_row(1, {"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": value, "bk_asst_inst_id": 21})

    assert isinstance(row, Row)
    assert row.inst_id == 12


class _FlakyClient:
    """A stand-in for AssociationClient: the first `failures` calls find the service unavailable, and a call
    marked `retried` answers 'already exists' for what an unanswered earlier attempt wrote."""

    def __init__(self, failures: int, *, retried: bool = False) -> None:
        self.failures = failures
        self.retried = retried
        self.sent: list[list[tuple[int, int]]] = []

    async def create_many(self, *_args: Any, **_kwargs: Any) -> BatchResult:
        pairs: list[tuple[int, int]] = _args[3]
        if self.failures:
            self.failures -= 1
            raise ServiceUnavailableError(1199998, "the database is unavailable", status=503)
        self.sent.append(pairs)
        if self.retried:
            return BatchResult(errors={0: (1101038, "exists")}, created={1: 7}, retried=True)
        return BatchResult(created=dict.fromkeys(range(len(pairs)), 1))


def _rows_file(tmp_path: Path) -> Path:
    source = tmp_path / "links.csv"
    header = "bk_obj_id,bk_asst_obj_id,bk_obj_asst_id,bk_inst_id,bk_asst_inst_id\n"
    rows = "".join(f"bk_switch,host,bk_switch_belong_bk_host,{src},{dst}\n" for src, dst in ((11, 21), (12, 22)))
    source.write_text(header + rows)
    return source


async def test_the_loader_leaves_rows_the_service_could_not_take_for_resume_and_rejects_none(tmp_path: Path) -> None:
    source = _rows_file(tmp_path)
    state = State(tmp_path / "links.state", source)
    flaky = _FlakyClient(failures=1)

    first = await Loader(cast(Any, flaky), progress=io.StringIO()).run(source, state, tmp_path / "rejects.csv")
    resumed_state = State(tmp_path / "links.state", source)
    resumed_state.load()
    second = await Loader(cast(Any, flaky), progress=io.StringIO()).run(source, resumed_state, tmp_path / "r2.csv")

    assert (first.created, first.rejected, first.unsent) == (0, 0, 2)
    assert "not sent" in first.text()
    assert (second.created, second.rejected, second.unsent) == (2, 0, 0)


async def test_after_a_retried_call_already_exists_counts_as_written_not_rejected(tmp_path: Path) -> None:
    source = _rows_file(tmp_path)
    summary = await Loader(cast(Any, _FlakyClient(0, retried=True)), progress=io.StringIO()).run(
        source, State(tmp_path / "s", source), tmp_path / "rejects.csv"
    )

    assert (summary.created, summary.rejected) == (2, 0)


async def test_a_definition_look_up_the_service_could_not_answer_leaves_its_rows_for_resume(tmp_path: Path) -> None:
    # Rows that name only their definition: the loader asks the service (a dry run) which models it joins.
    source = tmp_path / "links.csv"
    source.write_text("bk_obj_asst_id,bk_inst_id,bk_asst_inst_id\n"
                      "bk_switch_belong_bk_host,11,21\nbk_switch_belong_bk_host,12,22\n")  # fmt: skip
    state = State(tmp_path / "links.state", source)
    down = _FlakyClient(failures=99)

    first = await Loader(cast(Any, down), progress=io.StringIO()).run(source, state, tmp_path / "rejects.csv")
    failures_left = down.failures
    down.failures = 0
    resumed_state = State(tmp_path / "links.state", source)
    resumed_state.load()
    second = await Loader(cast(Any, down), progress=io.StringIO()).run(source, resumed_state, tmp_path / "r2.csv")

    assert (first.created, first.rejected, first.unsent, first.skipped) == (0, 0, 2, 0)  # not "no such definition"
    assert failures_left == 98  # one look-up for the definition, not one per row
    assert (second.created, second.rejected, second.unsent, second.skipped) == (2, 0, 0, 0)
    assert [pair for sent in down.sent for pair in sent if pair != (1, 1)] == [(11, 21), (12, 22)]


@pytest.mark.parametrize(
    ("operation", "code", "message"),
    [
        ("create", 1199006, "'body' data parameter verification does not pass"),  # section 5's, kept (Deviation)
        ("create_many", 1199000, "Deserializing JSON data failed"),
        ("delete_many", 1199006, "Deserializing JSON data failed"),
        ("find", 1199006, "Deserializing JSON data failed"),
        ("find_related", 1199006, "'Deserializing JSON data failed' data parameter verification does not pass"),
        ("search", 1199000, "Deserializing JSON data failed"),
        ("count", 1199000, "Deserializing JSON data failed"),
        ("base_info", 1199000, "Deserializing JSON data failed"),
    ],
)
async def test_a_body_that_does_not_decode_answers_each_operations_own_code(
    client: Client, operation: str, code: int, message: str
) -> None:
    """CONTRACT-ui Correction g: bk-cmdb's handlers answer a decode failure each their own way; a zero-length body
    and a top-level null are an empty object (whose missing fields each operation then names)."""
    described = BY_NAME[operation]
    path = described.native_path.format(bk_obj_id="host", id=1)
    headers = {"X-Bkcmdb-User": "admin", "Content-Type": "application/json"}

    answers = []
    for raw in (b"{not json", b"[1]", b" "):
        response = await client.request(described.method, path, data=raw, headers=headers)
        answers.append(await response.json())
    empty = await (await client.request(described.method, path, data=b"null", headers=headers)).json()

    for answer in answers:
        assert (answer["bk_error_code"], answer["bk_error_msg"]) == (code, message), answer
    if operation != "create":  # decoded as {}: whatever the operation says of what is missing, not a decode error
        assert "Deserializing" not in empty["bk_error_msg"], empty
