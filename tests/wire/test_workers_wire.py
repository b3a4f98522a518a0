"""`serve --workers 2`: two processes on one port keep ids unique and the rules whole."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest

from cmdb_asso.storage.embedded import free_port
from tests.helpers import link_body, wait_ready

pytestmark = pytest.mark.wire


async def test_two_worker_processes_share_the_port_and_keep_every_rule(tmp_path: Path) -> None:
    port = free_port()
    log_file = tmp_path / "service.log"
    env = {**os.environ, "CMDB_ASSO_HTTP_PORT": str(port), "CMDB_ASSO_DATA_DIR": str(tmp_path / "var"),
           "CMDB_ASSO_LOG_FORMAT": "json"}  # fmt: skip
    with log_file.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmdb_asso", "serve", "--workers", "2", "--seed-demo-if-empty",
            env=env, stdout=output, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        # A new connection per request, so that the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            await wait_ready(session, base)

            async def create(body: dict[str, object]) -> dict[str, object]:
                async with session.post(
                    f"{base}/api/v3/create/instassociation", json=body, headers={"X-Bkcmdb-User": "w"}
                ) as response:
                    answer: dict[str, object] = await response.json()
                    return answer

            racing = await asyncio.gather(
                *(create(link_body("app_run_host", 41, host)) for host in [21, 22, 23, 24, 25] * 8)
            )
            pairs = [(switch, host) for switch in range(11, 16) for host in range(21, 26)]
            spread = await asyncio.gather(*(create(link_body("bk_switch_belong_bk_host", *pair)) for pair in pairs))
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert Counter(answer["bk_error_code"] for answer in racing) == Counter({0: 1, 1101052: 39})
    ids = [answer["data"]["id"] for answer in spread]  # type: ignore[index]
    assert len(set(ids)) == 25
    pids = {
        line["pid"] for line in map(orjson.loads, log_file.read_bytes().splitlines()) if line.get("event") == "request"
    }
    assert len(pids) == 2
    assert code == 0
