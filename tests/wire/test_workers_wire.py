"""`serve --workers 2`: two processes on one port keep ids unique and the rules whole."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest

from cmdb_asso.processes import process_alive
from cmdb_asso.storage.embedded import free_port
from tests.helpers import link_body, wait_ready

pytestmark = pytest.mark.wire


def log_events(log_file: Path) -> list[dict[str, object]]:
    """The service's log lines so far (a line still being written is left out)."""
    events = []
    for line in log_file.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            events.append(orjson.loads(line))
    return events


def booted_workers(log_file: Path) -> list[int]:
    """The pids of the workers gunicorn's master has started so far."""
    messages = [str(event.get("event", "")) for event in log_events(log_file)]
    return [int(text.rsplit(" ", 1)[1]) for text in messages if text.startswith("Booting worker with pid: ")]


def serving_pids(log_file: Path) -> set[int]:
    """The pids of the processes that have answered a request so far."""
    return {int(str(event["pid"])) for event in log_events(log_file) if event.get("event") == "request"}


async def _serve_two_workers(tmp_path: Path, *options: str) -> tuple[asyncio.subprocess.Process, int, Path]:
    """`serve --workers 2` on a free port, logging JSON to a file: the master process, the port, the log."""
    port = free_port()
    log_file = tmp_path / "service.log"
    env = {**os.environ, "CMDB_ASSO_HTTP_PORT": str(port), "CMDB_ASSO_DATA_DIR": str(tmp_path / "var"),
           "CMDB_ASSO_LOG_FORMAT": "json"}  # fmt: skip
    with log_file.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmdb_asso", "serve", "--workers", "2", *options,
            env=env, stdout=output, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    return process, port, log_file


async def test_two_worker_processes_share_the_port_and_keep_every_rule(tmp_path: Path) -> None:
    process, port, log_file = await _serve_two_workers(tmp_path, "--seed-demo-if-empty")
    base = f"http://127.0.0.1:{port}"
    try:
        # A new connection per request, so that the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            await wait_ready(session, base)
            for _ in range(400):  # until both workers are up and answering, so that both take part in the race
                if len(serving_pids(log_file)) == 2:
                    break
                async with session.get(f"{base}/readyz"):
                    pass
                await asyncio.sleep(0.02)

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

            async def links_created() -> float:
                async with session.get(f"{base}/metrics") as response:
                    text = await response.text()
                return sum(float(line.split()[-1]) for line in text.splitlines()
                           if line.startswith("cmdb_asso_links_created_total"))  # fmt: skip

            # Each worker shares its counts within a second; then any worker's /metrics answers for both.
            for _ in range(200):
                if await links_created() == 26:
                    break
                await asyncio.sleep(0.05)
            scraped = [await links_created() for _ in range(10)]

            # gunicorn's master replaces a worker that dies; the service keeps answering meanwhile.
            first_workers = booted_workers(log_file)
            os.kill(first_workers[0], signal.SIGKILL)
            for _ in range(300):
                if len(booted_workers(log_file)) > len(first_workers):
                    break
                await asyncio.sleep(0.05)
            await wait_ready(session, base)
            after_kill = await create(link_body("bk_switch_belong_bk_host", 15, 21))
            after_kill_scraped = await links_created()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert Counter(answer["bk_error_code"] for answer in racing) == Counter({0: 1, 1101052: 39})
    assert len(first_workers) == 2
    assert len(booted_workers(log_file)) == 3
    assert after_kill["bk_error_code"] == 1199014  # the pair exists: the new worker sees what the others wrote
    assert scraped == [26] * 10  # the whole service's count, whichever worker answered
    assert after_kill_scraped == 26  # a killed worker's counts stay in the sum
    ids = [answer["data"]["id"] for answer in spread]  # type: ignore[index]
    assert len(set(ids)) == 25
    assert set(first_workers) <= serving_pids(log_file) <= set(booted_workers(log_file))
    assert code == 0


async def test_workers_stop_at_once_when_their_master_is_killed(tmp_path: Path) -> None:
    process, port, log_file = await _serve_two_workers(tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, f"http://127.0.0.1:{port}")
        for _ in range(300):
            if len(booted_workers(log_file)) == 2:
                break
            await asyncio.sleep(0.05)
        workers = booted_workers(log_file)
        process.kill()  # the master: SIGKILL, no chance to stop its workers
        await process.wait()
        # A worker exits 2 s after its master is gone (before: 8-20 s of answering 503); 8 s of budget leaves a
        # loaded machine room for its event loop to run the exit (5 s once failed beside another full suite).
        for _ in range(160):
            if not any(process_alive(pid) for pid in workers):
                break
            await asyncio.sleep(0.05)
        left = [pid for pid in workers if process_alive(pid)]
    finally:
        for pid in booted_workers(log_file):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    assert len(workers) == 2
    assert left == []
