"""Authentication, permission from the settings, CORS, the request deadline, metrics, and fuzzed bad input."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from cmdb_asso.app import create_app
from cmdb_asso.config import AppCredential, AuthSettings, Grant, Settings
from cmdb_asso.credentials import hash_secret, verify_secret
from cmdb_asso.keys import SERVICE
from cmdb_asso.operations import BY_NAME
from cmdb_asso.storage.client import MongoConnection
from tests.conftest import MakeClient
from tests.helpers import ESB_CREATE, audit_records, call, create, link_body, links_in, read_envelope, tables

Client = TestClient[Any, Any]
SEED = link_body("bk_switch_belong_bk_host", 11, 21)
SECRET = "correct horse battery staple"


@pytest.fixture
def secured(settings: Settings) -> Settings:
    """Settings with one ESB app and a static policy."""
    auth = AuthSettings(
        apps=(AppCredential("esb_test", hash_secret(SECRET, iterations=1000)),),
        authorizer="static",
        policy={"alice": Grant(edit=("*",)), "bob": Grant(edit=("bk_switch",), view=("host",))},
    )
    return replace(settings, auth=auth)


def test_a_hashed_secret_verifies_only_with_its_secret() -> None:
    stored = hash_secret(SECRET, iterations=1000)

    assert stored.startswith("pbkdf2_sha256$1000$")
    assert verify_secret(SECRET, stored)
    assert not verify_secret(SECRET + "x", stored)
    assert not verify_secret(SECRET, "md5$1$2$3")
    assert hash_secret(SECRET, iterations=1000) != stored  # a fresh salt each time


@pytest.mark.parametrize("where", ["body", "header"])
async def test_a_listed_app_with_its_secret_is_let_in(make_client: MakeClient, secured: Settings, where: str) -> None:
    client = await make_client(app_settings=secured)
    credentials = {"bk_app_code": "esb_test", "bk_app_secret": SECRET, "bk_username": "alice"}
    body = {**SEED, **credentials} if where == "body" else SEED
    headers = {"X-Bkapi-Authorization": orjson.dumps(credentials).decode()} if where == "header" else {}

    response = await client.post(ESB_CREATE, json=body, headers=headers)

    answer = read_envelope(response.status, await response.json(), response.headers)
    assert (answer.status, answer.code) == (200, 0)


@pytest.mark.parametrize(
    "credentials",
    [
        {"bk_app_code": "esb_test", "bk_app_secret": "wrong", "bk_username": "alice"},
        {"bk_app_code": "stranger", "bk_app_secret": SECRET, "bk_username": "alice"},
        {"bk_app_code": "esb_test", "bk_username": "alice"},
        {"bk_username": "alice"},
    ],
)
async def test_an_unknown_app_or_wrong_secret_answers_1199046_with_401_and_the_gateway_headers(
    make_client: MakeClient, secured: Settings, mock_mongo: MongoConnection, credentials: dict[str, str]
) -> None:
    client = await make_client(app_settings=secured)

    with capture_logs() as logs:
        response = await client.post(ESB_CREATE, json={**SEED, **credentials})

    answer = read_envelope(response.status, await response.json(), response.headers)
    assert (answer.status, answer.result, answer.code) == (401, False, 1199046)
    assert answer.message == "Authorize request failed."
    assert response.headers["X-Bkapi-Error-Code"]
    assert response.headers["X-Bkapi-Error-Message"]
    assert await links_in(mock_mongo, "bk_switch") == []
    assert all(SECRET not in str(entry) and "wrong" not in str(entry.get("bk_app_secret", "")) for entry in logs)


async def test_no_secret_ever_reaches_a_log_line(make_client: MakeClient, secured: Settings) -> None:
    client = await make_client(app_settings=secured)

    with capture_logs() as logs:
        for secret in (SECRET, "guess-1"):
            await client.post(
                ESB_CREATE, json={**SEED, "bk_app_code": "esb_test", "bk_app_secret": secret, "bk_username": "alice"}
            )

    assert logs
    assert not any(SECRET in str(entry) or "guess-1" in str(entry) for entry in logs)


async def test_the_policy_from_the_settings_denies_with_the_exact_payload(
    make_client: MakeClient, secured: Settings
) -> None:
    client = await make_client(app_settings=secured)
    credentials = {"bk_app_code": "esb_test", "bk_app_secret": SECRET}

    answer = await call(client, "create", {**SEED, **credentials}, spelling="esb", user="bob")

    assert (answer.status, answer.result, answer.code, answer.data) == (200, False, 9900403, None)
    assert answer.message == "Do not have access permission."
    permission = answer.permission
    assert (permission["system_id"], permission["system_name"]) == ("bk_cmdb", "配置平台")
    (action,) = permission["actions"]
    assert (action["id"], action["name"]) == ("edit_biz_host", "业务主机编辑")
    (resource,) = action["related_resource_types"]
    assert (resource["system_id"], resource["system_name"]) == ("bk_cmdb", "配置平台")
    assert (resource["type"], resource["type_name"]) == ("host", "主机")
    # A host is named by its inner IPs (bk-cmdb's resource names); the demo hosts have none, nor a business.
    assert resource["instances"] == [[{"type": "host", "type_name": "主机", "id": "21", "name": ""}]]


async def test_the_policy_lets_viewers_count_what_they_may_view(make_client: MakeClient, secured: Settings) -> None:
    client = await make_client(app_settings=secured)

    assert (await call(client, "count", {"bk_obj_id": "host"}, user="bob")).code == 0
    assert (await call(client, "count", {"bk_obj_id": "app"}, user="bob")).code == 9900403
    assert (await call(client, "count", {"bk_obj_id": "app"}, user="alice")).code == 0


async def test_browsers_from_a_listed_origin_pass_the_preflight(make_client: MakeClient, settings: Settings) -> None:
    http = replace(settings.http, cors_origins=("https://cmdb.example.com",))
    client = await make_client(app_settings=replace(settings, http=http))
    preflight = {
        "Origin": "https://cmdb.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-bkcmdb-user",
    }

    allowed = await client.options("/api/v3/create/instassociation", headers=preflight)
    refused = await client.options(
        "/api/v3/create/instassociation", headers={**preflight, "Origin": "https://evil.example.com"}
    )
    real = await client.post(
        "/api/v3/create/instassociation",
        json=SEED,
        headers={"Origin": "https://cmdb.example.com", "X-Bkcmdb-User": "admin"},
    )

    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://cmdb.example.com"
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert real.headers["Access-Control-Allow-Origin"] == "https://cmdb.example.com"
    assert (await real.json())["bk_error_code"] == 0
    assert "X-Request-Id" in real.headers["Access-Control-Expose-Headers"]


async def test_without_listed_origins_no_cors_headers_are_sent(client: Client) -> None:
    response = await client.post(
        "/api/v3/create/instassociation", json=SEED, headers={"Origin": "https://x.example", "X-Bkcmdb-User": "a"}
    )

    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(("operation", "code"), [("create", 1199998), ("count", 1199017)])
async def test_mongodb_work_past_the_deadline_answers_503(
    make_client: MakeClient, settings: Settings, operation: str, code: int
) -> None:
    fast = replace(settings, mongodb=replace(settings.mongodb, request_deadline_seconds=0.05))
    client = await make_client(app_settings=fast)
    assert client.app is not None
    store = client.app[SERVICE].store

    async def stuck(*_args: Any, **_kwargs: Any) -> Any:
        await asyncio.sleep(5)

    store.find_definitions = stuck
    store.count_links = stuck
    params = SEED if operation == "create" else {"bk_obj_id": "host"}

    answer = await call(client, operation, params)

    assert (answer.status, answer.code) == (503, code)
    assert answer.headers["Retry-After"] == "1"


async def test_metrics_count_the_requests_a_test_made(client: Client) -> None:
    await create(client, SEED)
    await create(client, SEED)
    await call(client, "count", {"bk_obj_id": "host"})

    response = await client.get("/metrics")

    text = await response.text()
    assert response.status == 200
    assert (
        'cmdb_asso_requests_total{code="0",method="POST",route="/api/v3/create/instassociation",status="200"} 1.0'
        in text
    )
    assert (
        'cmdb_asso_requests_total{code="1199014",method="POST",route="/api/v3/create/instassociation",status="200"} 1.0'
        in text
    )
    assert 'route="/api/v3/count/instance_associations/object/{bk_obj_id}"' in text
    assert "cmdb_asso_links_created_total 1.0" in text
    assert 'cmdb_asso_ids_reserved_total{sequence="cc_InstAsst"}' in text
    assert "cmdb_asso_request_duration_seconds_bucket" in text


async def test_headers_over_the_limit_are_refused(settings: Settings, mock_mongo: MongoConnection) -> None:
    small = replace(settings, http=replace(settings.http, max_header_bytes=1024))
    runner = web.AppRunner(create_app(small, mongo=mock_mongo))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/api/v3/create/instassociation"
            big = await session.post(url, json=SEED, headers={"X-Bkcmdb-User": "a" * 4000})
            small_enough = await session.post(url, json=SEED, headers={"X-Bkcmdb-User": "a" * 500})
            assert big.status == 400  # aiohttp's parser refuses the header before any handler runs
            assert small_enough.status == 200
    finally:
        await runner.cleanup()


# --- fuzzing: thousands of random bodies, never a 5xx, always the envelope, never a write ---------------------------

KEYS = st.sampled_from(["bk_obj_asst_id", "bk_inst_id", "bk_asst_inst_id", "bk_obj_id", "bk_asst_obj_id", "details",
                        "atomic", "conditions", "condition", "rules", "field", "operator", "value", "page", "fields",
                        "$where", "$expr", "$gt", "$in", "$or", "__proto__", "id"])  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["bk_switch_belong_bk_host", "app_run_host", "host", "AND", "OR", "equal", "in", "$where"]),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), children, max_size=6)
    ),
    max_leaves=25,
)
BODIES = st.one_of(JSON, st.dictionaries(KEYS, JSON, max_size=8))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=BODIES,
    operation=st.sampled_from(["create", "create_many", "search"]),
    spelling=st.sampled_from(["native", "esb"]),
)
async def test_random_bodies_never_crash_always_answer_the_envelope_and_never_write(
    client: Client, mock_mongo: MongoConnection, body: Any, operation: str, spelling: str
) -> None:
    described = BY_NAME[operation]
    path = described.esb_path if spelling == "esb" else described.native_path.format(bk_obj_id="host")
    before = await _link_ids(mock_mongo)
    response = await client.post(
        path,
        data=orjson.dumps(body, option=orjson.OPT_PASSTHROUGH_SUBCLASS) if _encodable(body) else b"\xff",
        headers={"X-Bkcmdb-User": "fuzz", "X-Bkapi-Authorization": '{"bk_app_code": "f", "bk_username": "fuzz"}'},
    )

    assert response.status < 500
    payload = await response.json()
    answer = read_envelope(response.status, payload, response.headers)
    assert answer.result is (answer.code == 0)
    if answer.result:
        assert answer.data is not None
    # A body that happens to be valid may create links, each with its audit record; a refused body (and any
    # search) changes nothing.
    after = await _link_ids(mock_mongo)
    assert len(after) == len(await audit_records(mock_mongo))
    if not answer.result or operation == "search":
        assert after == before
    elif operation == "create":
        assert after == before | {answer.data["id"]}
    else:
        assert after == before | set(answer.data["success_created"].values())


async def _link_ids(mongo: MongoConnection) -> set[int]:
    return {link["id"] for obj_id in ("bk_switch", "app") for link in await links_in(mongo, obj_id)}


def _encodable(body: Any) -> bool:
    try:
        orjson.dumps(body)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


SUPPLIERS = st.one_of(
    st.sampled_from(["0", "acme", "t", "t_pub_x", "superadmin", "acme_pub_host", ""]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=64),
)
PATTERNS = st.text(alphabet="ab\\w.*+?|(){}[]^$!1,0", min_size=1, max_size=40)
PATTERN_OPERATORS = st.sampled_from(["begins_with", "not_begins_with", "contains", "not_contains", "ends_with"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    supplier=SUPPLIERS,
    pattern=PATTERNS,
    operator=PATTERN_OPERATORS,
    model=st.sampled_from(["host", "bk_switch", "x_pub_host", "pub_host", "nomodel"]),
)
async def test_random_suppliers_and_patterns_never_cross_tenants_create_tables_or_crash(
    client: Client, mock_mongo: MongoConnection, supplier: str, pattern: str, operator: str, model: str
) -> None:
    # Acme's own link, in acme's tables: no other supplier's read may show it, whatever it names.
    if not await mock_mongo.db["cc_InstAsst_acme_pub_host"].count_documents({}):
        await mock_mongo.db["cc_ObjectBase_acme_pub_bk_switch"].insert_one(
            {"bk_obj_id": "bk_switch", "bk_inst_id": 111, "bk_inst_name": "acme", "bk_supplier_account": "acme"}
        )
        await mock_mongo.db["cc_HostBase"].insert_one({"bk_host_id": 121, "bk_supplier_account": "acme"})
        made = await create(client, link_body("bk_switch_belong_bk_host", 111, 121),
                            headers={"X-Bkcmdb-Supplier-Account": "acme"})  # fmt: skip
        assert made.code == 0, made
    before = await tables(mock_mongo)
    headers = {"X-Bkcmdb-Supplier-Account": supplier}
    rule = {"condition": "AND", "rules": [{"field": "bk_obj_asst_id", "operator": operator, "value": pattern}]}

    details = await call(client, "links_with_instances", {
        "bk_obj_id": model, "condition": {"asst_filter": rule, "dst_detail": True}, "page": {"limit": 200}},
        headers=headers)  # fmt: skip
    found = await call(client, "find", {"bk_obj_id": model, "condition": {}}, headers=headers)
    refused = await create(client, link_body("bk_switch_belong_bk_host", 111, 121), headers=headers)

    for answer in (details, found, refused):
        assert answer.status < 500, answer
        assert answer.result is (answer.code == 0)
    assert details.code in (0, 1199011), details
    if supplier != "acme":
        assert refused.code != 0  # acme's instances do not exist for another supplier
        for answer in (details, found):
            assert '"acme"' not in str(answer.data).replace("'", '"')
    assert await tables(mock_mongo) == before  # nothing made by a refused request or a read
