"""The service's own runner: what aiohttp's HTTP parser refuses is answered in the envelope, echoing nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from cmdb_asso.app import create_app
from cmdb_asso.config import Settings
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.embedded import free_port
from cmdb_asso.web.server import ServiceRunner

MARKER = "ECHO-ME-NOT"


@pytest.fixture
async def served(settings: Settings, mock_mongo: MongoConnection) -> AsyncIterator[int]:
    """The app behind the service's own runner on a free port."""
    runner = ServiceRunner(create_app(settings, mongo=mock_mongo), access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield port
    await runner.cleanup()


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


@pytest.mark.parametrize(
    "raw",
    [
        f"GET /{MARKER}{'a' * 10000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: {MARKER}{'a' * 10000}\r\n\r\n".encode(),
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: {MARKER}\r\n\r\n".encode(),
        f"F(O)O /{MARKER} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        f"{MARKER} garbage\r\n\r\n".encode(),
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header{MARKER}: 1\r\n\r\n".encode(),
        (
            "POST /api/v3/create/instassociation HTTP/1.1\r\nHost: x\r\nX-Bkcmdb-User: a\r\n"
            f"Content-Encoding: br\r\nContent-Length: 11\r\n\r\n{MARKER}"
        ).encode(),
    ],
    ids=["long-request-line", "long-header", "bad-content-length", "bad-method", "not-http", "bad-header", "br"],
)
async def test_a_request_the_parser_refuses_answers_the_envelope_and_logs_one_line(
    served: int, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="aiohttp"), capture_logs() as logs:
        answer = await _exchange(served, raw)

    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert 400 <= status < 600
    assert b"Content-Type: application/json" in head
    envelope = orjson.loads(body)
    assert list(envelope) == ["result", "bk_error_code", "bk_error_msg", "permission", "data"]
    assert envelope["result"] is False
    assert envelope["bk_error_code"] in (1199003, 1199006)
    assert MARKER.encode() not in answer
    assert not [record for record in caplog.records if record.exc_info]
    refused = [entry for entry in logs if entry["event"] in ("http_request_refused", "request")]
    assert len(refused) == 1
