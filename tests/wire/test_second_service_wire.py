"""A second `serve` beside a running one: a busy port is said plainly, and the first one's embedded server is
never stopped by another process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from cmdb_asso.storage.embedded import free_port
from tests.helpers import link_body, wait_ready

pytestmark = pytest.mark.wire


async def _serve(
    tmp_path: Path, port: int, name: str, settings: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, Path]:
    output = tmp_path / f"{name}.log"
    env = {
        **os.environ,
        "CMDB_ASSO_HTTP_PORT": str(port),
        "CMDB_ASSO_DATA_DIR": str(tmp_path / "var"),
        **(settings or {}),
    }
    with output.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmdb_asso", "serve", "--seed-demo-if-empty",
            env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    return process, output


async def _create(session: aiohttp.ClientSession, port: int, pair: tuple[int, int]) -> int:
    async with session.post(
        f"http://127.0.0.1:{port}/api/v3/create/instassociation",
        json=link_body("bk_switch_belong_bk_host", *pair), headers={"X-Bkcmdb-User": "admin"},
    ) as response:  # fmt: skip
        answer = await response.json()
    code: int = answer["bk_error_code"]
    return code


async def _stopped(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        return await process.wait()


async def test_a_second_serve_on_a_busy_port_says_so_and_one_on_another_port_leaves_the_store_running(
    tmp_path: Path,
) -> None:
    first_port, other_port = free_port(), free_port()
    first, _ = await _serve(tmp_path, first_port, "first")
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, f"http://127.0.0.1:{first_port}", seconds=60)

            busy, busy_log = await _serve(tmp_path, first_port, "busy")
            busy_code = await asyncio.wait_for(busy.wait(), 60)
            after_busy = await _create(session, first_port, (11, 21))

            beside, _ = await _serve(tmp_path, other_port, "beside")
            try:
                await wait_ready(session, f"http://127.0.0.1:{other_port}", seconds=60)
                through_beside = await _create(session, other_port, (12, 22))
            finally:
                beside_code = await _stopped(beside)
            after_beside = await _create(session, first_port, (13, 23))
    finally:
        first_code = await _stopped(first)

    said = busy_log.read_text(encoding="utf-8")
    assert busy_code == 2
    assert f"port {first_port} on 127.0.0.1 is in use" in said
    assert "Traceback" not in said
    assert (after_busy, through_beside, beside_code) == (0, 0, 0)
    assert after_beside == 0  # the first service's store outlived the second service
    assert first_code == 0


async def test_a_second_ctrl_c_cuts_the_drain_short(tmp_path: Path) -> None:
    port = free_port()
    service, output = await _serve(tmp_path, port, "impatient", {"CMDB_ASSO_HTTP_DRAIN_SECONDS": "120"})
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, f"http://127.0.0.1:{port}", seconds=60)
        service.send_signal(signal.SIGINT)
        for _ in range(600):  # until the drain has begun (its second-Ctrl-C handler is set as it says so)
            if "draining" in output.read_text(encoding="utf-8"):
                break
            await asyncio.sleep(0.05)
        service.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(service.wait(), 60)  # half the 120 s drain: only the second Ctrl-C ends it
    finally:
        await _stopped(service)

    assert code == 0
    assert "drain_cut_short" in output.read_text(encoding="utf-8")
