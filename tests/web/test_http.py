"""HTTP behaviour around the operations: statuses, unreachable MongoDB, unexpected bugs, logs, health."""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from cmdb_asso.app import create_app
from cmdb_asso.config import MongoSettings, Settings
from cmdb_asso.keys import SERVICE
from cmdb_asso.storage.client import MongoConnection, connect
from tests.conftest import AiohttpClient
from tests.helpers import create, link_body, read_envelope

Client = TestClient[Any, Any]
SEED = link_body("bk_switch_belong_bk_host", 11, 21)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def unreachable_mongo() -> AsyncIterator[MongoConnection]:
    """A real driver client pointed at a port where nothing listens; closed after the test (left to the garbage
    collector, its warning failed whatever run collected it last)."""
    settings = MongoSettings(server_selection_timeout_ms=200, transactions="never")
    mongo = await connect(settings, f"mongodb://127.0.0.1:{_closed_port()}/?directConnection=true")
    yield mongo
    await mongo.close()


@pytest.mark.parametrize("spelling", ["native", "esb"])
async def test_an_unreachable_mongodb_answers_503_with_retry_after_and_no_driver_text(
    aiohttp_client: AiohttpClient, settings: Settings, unreachable_mongo: MongoConnection, spelling: str
) -> None:
    # Every command carries the request's time budget, and so does choosing a server: a short deadline.
    short = replace(settings, mongodb=replace(settings.mongodb, request_deadline_seconds=0.5))
    client = await aiohttp_client(create_app(short, mongo=unreachable_mongo))

    answer = await create(client, SEED, spelling=spelling)

    assert answer.status == 503
    assert answer.headers["Retry-After"] == "1"
    assert (answer.result, answer.code, answer.data) == (False, 1199017, None)
    assert answer.message == "Failed to query data"
    assert "127.0.0.1" not in str(answer.body)
    assert "Timeout" not in str(answer.body)


async def test_readyz_says_why_mongodb_is_not_ready(
    aiohttp_client: AiohttpClient, settings: Settings, unreachable_mongo: MongoConnection
) -> None:
    client = await aiohttp_client(create_app(settings, mongo=unreachable_mongo))

    response = await client.get("/readyz")

    assert response.status == 503
    body = await response.json()
    assert body["status"] == "not ready"
    assert body["reason"].startswith("mongodb")


async def test_healthz_and_readyz_answer_when_all_is_well(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    response = await client.get("/readyz")
    assert (response.status, (await response.json())["status"]) == (200, "ready")


async def test_an_unexpected_bug_answers_500_in_the_envelope_without_its_text(client: Client) -> None:
    async def broken(*_args: Any) -> int:
        raise RuntimeError("secret internal detail")

    app = client.app
    assert app is not None
    app[SERVICE].create_one = broken

    with capture_logs() as logs:
        answer = await create(client, SEED, spelling="esb")

    assert (answer.status, answer.result, answer.code) == (500, False, 1199999)
    assert "secret" not in answer.message
    assert any(entry["event"] == "unhandled_error" for entry in logs)


@pytest.mark.parametrize(
    ("method", "path", "status", "esb"),
    [
        ("POST", "/api/v3/no/such/route", 404, False),
        ("GET", "/api/v3/create/instassociation", 405, False),
        ("POST", "/api/c/compapi/v2/cc/no_such_api/", 404, True),
    ],
)
async def test_unknown_routes_and_wrong_methods_answer_their_status_in_the_envelope(
    client: Client, method: str, path: str, status: int, esb: bool
) -> None:
    response = await client.request(method, path, json={})

    answer = read_envelope(response.status, await response.json(), response.headers)
    assert (answer.status, answer.result, answer.code) == (status, False, 1199003)
    assert ("request_id" in answer.body) is esb


async def test_a_body_over_the_limit_answers_413(client: Client) -> None:
    big = orjson.dumps({"padding": "x" * (2 * 1024 * 1024), **SEED})

    response = await client.post(
        "/api/v3/create/instassociation", data=io.BytesIO(big), headers={"X-Bkcmdb-User": "admin"}
    )

    answer = read_envelope(response.status, await response.json(), response.headers)

    assert (answer.status, answer.code) == (413, 1199035)
    assert answer.message == " body exceed the limit 1048576"


async def test_every_request_writes_one_log_line_with_its_outcome(client: Client) -> None:
    with capture_logs() as logs:
        await create(client, link_body("no_such_definition", 1, 2), headers={"X-Request-Id": "rid-1"})

    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert line["method"] == "POST"
    assert line["path"] == "/api/v3/create/instassociation"
    assert (line["status"], line["code"]) == (200, 1101046)
    assert line["duration_ms"] >= 0
