"""The API page in a real headless Chromium: every operation of the document is listed."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from cmdb_asso.app import create_app
from cmdb_asso.config import Settings
from cmdb_asso.storage.client import MongoConnection

AiohttpServer = Callable[..., Awaitable[TestServer]]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Skipped only on a developer's machine without Chromium; under CI (which installs it) a missing browser fails.
NEEDS_CHROMIUM = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="no Chromium installed (.ci/run installs Debian's chromium)"
)


@NEEDS_CHROMIUM
async def test_the_docs_page_lists_every_operation_in_a_browser(
    aiohttp_server: AiohttpServer, settings: Settings, mock_mongo: MongoConnection
) -> None:
    server = await aiohttp_server(create_app(settings, mongo=mock_mongo))
    base = str(server.make_url("")).rstrip("/")
    document: dict[str, Any] = orjson_loads(await fetch(f"{base}/openapi.json"))
    operation_ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    html, _console = await chromium(f"{base}/docs", "--dump-dom")

    assert "swagger-ui" in html
    missing = [
        operation_id
        for operation_id in operation_ids
        if f"operations-{_tag(document, operation_id)}-{operation_id}" not in html
    ]
    assert missing == []


def _tag(document: dict[str, Any], operation_id: str) -> str:
    for operations in document["paths"].values():
        for operation in operations.values():
            if operation["operationId"] == operation_id:
                tags: list[str] = operation.get("tags", ["default"])
                return tags[0]
    return "default"


async def fetch(url: str) -> bytes:
    """GET a URL."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.read()


def orjson_loads(raw: bytes) -> Any:
    """Parse JSON."""
    return orjson.loads(raw)


ARTIFACTS = Path(os.environ.get("CMDB_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / ".artifacts"))
GRAPH_LINKS = [
    ("bk_router_connect_bk_switch", 31, 11),
    ("bk_switch_belong_bk_host", 11, 21),
    ("bk_switch_belong_bk_host", 11, 22),
    ("bk_switch_belong_bk_host", 12, 22),
    ("app_run_host", 41, 21),
]


@NEEDS_CHROMIUM
async def test_the_graph_page_draws_the_graph_around_an_instance_in_a_browser(
    aiohttp_server: AiohttpServer, settings: Settings, mock_mongo: MongoConnection
) -> None:
    server = await aiohttp_server(create_app(settings, mongo=mock_mongo))
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession(headers={"X-Bkcmdb-User": "admin"}) as session:
        for obj_asst_id, src, dst in GRAPH_LINKS:
            body = {"bk_obj_asst_id": obj_asst_id, "bk_inst_id": src, "bk_asst_inst_id": dst}
            async with session.post(f"{base}/api/v3/create/instassociation", json=body) as response:
                assert (await response.json())["bk_error_code"] == 0
    page = f"{base}/graph?bk_obj_id=bk_switch&bk_inst_id=11&depth=2&direction=both"
    screenshot = fresh_artifact("graph-page.png")

    dom, console = await chromium(page, "--dump-dom")
    await chromium(page, f"--screenshot={screenshot}", "--window-size=1200,800")
    from_host, _ = await chromium(f"{base}/graph?bk_obj_id=host&bk_inst_id=21&depth=1&direction=both", "--dump-dom")
    alone, _ = await chromium(f"{base}/graph?bk_obj_id=bk_switch&bk_inst_id=15&depth=1", "--dump-dom")

    status = re.search(r'<div id="status" data-nodes="(\d+)" data-edges="(\d+)" data-errors="(\d+)">([^<]*)<', dom)
    assert status is not None, dom[-2000:]
    # switch 11; router 31 and hosts 21, 22 at one hop; switch 12 and app 41 at two
    assert status.groups() == ("6", "5", "0", "6 instances, 5 links")
    assert "Uncaught" not in console
    assert artifact_size(screenshot) > 10_000
    legend, around_host = _legend(dom), _legend(from_host)
    assert sorted(legend) == ["app", "bk_router", "bk_switch", "host"]  # one entry per model drawn
    assert sorted(around_host) == ["app", "bk_switch", "host"]
    assert all(around_host[model] == legend[model] for model in around_host)  # a model keeps its colour
    assert len(set(legend.values())) == 4
    assert "1 instance, 0 links" in alone


def _legend(dom: str) -> dict[str, str]:
    """The page's legend: each model drawn and its colour."""
    return dict(re.findall(r'<span class="model" data-model="([^"]+)" data-colour="([^"]+)">', dom))


def fresh_artifact(name: str) -> Path:
    """Where a test keeps a file for people to look at (CMDB_TEST_ARTIFACTS, default .artifacts/)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    return path


def artifact_size(path: Path) -> int:
    """The size of a kept file (0 when it was not written)."""
    return path.stat().st_size if path.exists() else 0


async def chromium(url: str, *arguments: str) -> tuple[str, str]:
    """Run headless Chromium on `url` with `arguments`; its standard output and its console log."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
            *arguments, url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 90)
    return out.decode(errors="replace"), err.decode(errors="replace")
