"""Crashes driven for real: the service SIGKILLed during single creates, batches and deletes, and its embedded
server killed under load. After a restart, recovery makes the store whole by itself, and retries agree with it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymongo import AsyncMongoClient

from cmdb_asso.processes import process_alive
from cmdb_asso.storage.embedded import EmbeddedMongo, free_port
from tests.helpers import wait_ready

pytestmark = pytest.mark.wire
USER = {"X-Bkcmdb-User": "crash"}
RULE_CODES = {0, 1199014, 1101052, 1101061, 1101038}


class Service:
    """The service as its own process on the embedded store in `data_dir`, started and killed at will."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        env = {**os.environ, "CMDB_ASSO_HTTP_PORT": str(self.port), "CMDB_ASSO_DATA_DIR": str(self.data_dir),
               "CMDB_ASSO_LOG_FORMAT": "json", "CMDB_ASSO_LOG_LEVEL": "warning",
               "CMDB_ASSO_HTTP_DRAIN_SECONDS": "0", "CMDB_ASSO_MONGODB_REQUEST_DEADLINE_SECONDS": "1",
               "CMDB_ASSO_MONGODB_RECOVERY_GRACE_SECONDS": "6.5",
               "CMDB_ASSO_MONGODB_RECOVERY_INTERVAL_SECONDS": "0.2"}  # fmt: skip
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmdb_asso", "serve", "--seed-demo-if-empty",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await wait_ready(session, self.base, seconds=60)

    def embedded_pid_and_port(self) -> tuple[int, int]:
        state = json.loads((self.data_dir / "nx-27017.json").read_text())
        return int(state["pid"]), int(state["port"])

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP session for the test's calls."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as opened:
        yield opened


@pytest.fixture
async def service(tmp_path: Path, session: aiohttp.ClientSession) -> AsyncIterator[Service]:
    """A running service with the demo data and more instances to link."""
    running = Service(tmp_path / "var")
    await running.start(session)
    _, port = running.embedded_pid_and_port()
    async with _store(port) as db:
        models = (("host", "cc_HostBase", "bk_host_id", "bk_host_name"),
                  ("bk_switch", "cc_ObjectBase_0_pub_bk_switch", "bk_inst_id", "bk_inst_name"),
                  ("app", "cc_ObjectBase_0_pub_app", "bk_inst_id", "bk_inst_name"))  # fmt: skip
        for obj_id, table, field, name in models:
            extra = {"bk_obj_id": obj_id} if field == "bk_inst_id" else {}
            extra["bk_supplier_account"] = "0"
            await db[table].insert_many([{**extra, field: n, name: f"{obj_id}-{n}"} for n in range(100, 160)])
    yield running
    await running.stop()


class _store:
    """A direct connection to the embedded server, for what the test checks behind the service's back."""

    def __init__(self, port: int) -> None:
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=20000
        )

    async def __aenter__(self) -> Any:
        return self.client["cmdb"]

    async def __aexit__(self, *_exc: object) -> None:
        await self.client.close()


async def _post(session: aiohttp.ClientSession, base: str, method: str, path: str, body: Any) -> dict[str, Any]:
    async with session.request(method, f"{base}{path}", json=body, headers=USER) as response:
        answer: dict[str, Any] = await response.json()
        answer["status"] = response.status
        return answer


async def _retried(session: aiohttp.ClientSession, base: str, call: tuple[str, str, Any]) -> dict[str, Any]:
    """Send a call again until it is answered for what it asked (a 503 of a busy machine says nothing of that)."""
    answer: dict[str, Any] = {}
    for _ in range(20):
        answer = await _post(session, base, *call)
        if not _unsettled(answer):
            break
        await asyncio.sleep(0.25)
    return answer


async def _load_until_killed(
    service: Service, session: aiohttp.ClientSession, calls: list[tuple[str, str, Any]], after_answers: int
) -> tuple[list[dict[str, Any] | None], int]:
    """Send the calls from 16 workers; SIGKILL the service once `after_answers` answers came back. Each call's
    answer, or None where the kill cut it."""
    answers: list[dict[str, Any] | None] = [None] * len(calls)
    answered = asyncio.Event()
    count = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(calls)):
        queue.put_nowait(index)

    async def worker() -> None:
        nonlocal count
        while not queue.empty():
            index = queue.get_nowait()
            method, path, body = calls[index]
            try:
                answers[index] = await _post(session, service.base, method, path, body)
            except (aiohttp.ClientError, TimeoutError):
                return  # killed mid-call: left for the retry after the restart
            count += 1
            if count >= after_answers:
                answered.set()

    workers = [asyncio.create_task(worker()) for _ in range(16)]
    await asyncio.wait_for(answered.wait(), 60)
    await service.kill()
    await asyncio.gather(*workers)
    return answers, count


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    """Wait for a condition the service brings about by itself (recovery), checking it again and again."""
    for _ in range(int(seconds / 0.1)):
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the condition never held")


def _unsettled(answer: dict[str, Any] | None) -> bool:
    """Whether a call must be sent again: no answer came (the kill cut it), or the answer was a 503 (the store
    was away), which says nothing of what was written."""
    return answer is None or answer["bk_error_code"] in (1199017, 1199998)


async def _recovered(db: Any) -> None:
    async def journal_empty() -> bool:
        left: int = await db["cmdb_asso_journal"].count_documents({})
        return left == 0

    await _until(journal_empty)


async def _links(db: Any, table: str) -> dict[int, dict[str, Any]]:
    return {int(doc["id"]): doc for doc in await db[table].find({}, {"_id": 0}).to_list(None)}


async def _assert_whole(db: Any, pairs: list[tuple[str, str]]) -> dict[int, dict[str, Any]]:
    """Every link in both tables, one create audit per link, no claim left, the 1:1 rule and no duplicate."""
    everything: dict[int, dict[str, Any]] = {}
    for source, target in pairs:
        left = {k: v for k, v in (await _links(db, f"cc_InstAsst_0_pub_{source}")).items() if v["bk_obj_id"] == source}
        right = {k: v for k, v in (await _links(db, f"cc_InstAsst_0_pub_{target}")).items() if v["bk_obj_id"] == source}
        assert set(left) == set(right), f"half links between {source} and {target}"
        everything |= left
    assert not any("cmdb_asso_deleting" in link for link in everything.values())
    audits = await db["cc_AuditLog"].find({"resource_type": "instance_association"}).to_list(None)

    def key(src: Any, dst: Any, definition: Any) -> tuple[int, int, str]:
        return int(src), int(dst), str(definition)

    created = Counter(key(a["resource_id"], a["operation_detail"]["dest_inst_id"], a["operation_detail"]["asst_id"])
                      for a in audits if a["action"] == "create")  # fmt: skip
    deleted = Counter(key(a["resource_id"], a["operation_detail"]["dest_inst_id"], a["operation_detail"]["asst_id"])
                      for a in audits if a["action"] == "delete")  # fmt: skip
    live = Counter(key(link["bk_inst_id"], link["bk_asst_inst_id"], link["bk_obj_asst_id"])
                   for link in everything.values())  # fmt: skip
    assert created - deleted == live, "audit records do not match the links"
    assert all(count == 1 for count in live.values()), "a pair is linked twice"
    one_to_one = [link for link in everything.values() if link["bk_obj_asst_id"] == "app_run_host"]
    assert len({link["bk_inst_id"] for link in one_to_one}) == len(one_to_one)
    assert len({link["bk_asst_inst_id"] for link in one_to_one}) == len(one_to_one)
    return everything


async def test_sigkill_during_single_creates_leaves_a_store_recovery_makes_whole(
    service: Service, session: aiohttp.ClientSession
) -> None:
    calls = [("POST", "/api/v3/create/instassociation",
              {"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": 100 + n % 60,
               "bk_asst_inst_id": 100 + n // 6})
             for n in range(300)]  # fmt: skip
    calls += [("POST", "/api/v3/create/instassociation",
               {"bk_obj_asst_id": "app_run_host", "bk_inst_id": 100 + n, "bk_asst_inst_id": 100 + n % 40})
              for n in range(60)]  # fmt: skip
    embedded_pid, port = service.embedded_pid_and_port()

    answers, _count = await _load_until_killed(service, session, calls, after_answers=60)

    await _until(lambda: _not_alive(embedded_pid))  # the embedded server died with its service
    await service.start(session)
    async with _store(service.embedded_pid_and_port()[1]) as db:
        await _recovered(db)
        # Retries of what the kill cut agree with the store: created now, or refused by the rules.
        for index, answer in enumerate(answers):
            if _unsettled(answer):
                retry = await _retried(session, service.base, calls[index])
                assert retry["bk_error_code"] in RULE_CODES, retry
        links = await _assert_whole(db, [("bk_switch", "host"), ("app", "host")])
    switch_pairs = {(link["bk_inst_id"], link["bk_asst_inst_id"]) for link in links.values()
                    if link["bk_obj_asst_id"] == "bk_switch_belong_bk_host"}  # fmt: skip
    assert switch_pairs == {(body["bk_inst_id"], body["bk_asst_inst_id"]) for _, _, body in calls[:300]}
    assert port != 0


async def _not_alive(pid: int) -> bool:
    return not await asyncio.to_thread(process_alive, pid)


async def test_sigkill_during_batches_leaves_a_store_recovery_makes_whole(
    service: Service, session: aiohttp.ClientSession
) -> None:
    calls = [("POST", "/api/v3/createmany/instassociation",
              {"bk_obj_id": "bk_switch", "bk_asst_obj_id": "host", "bk_obj_asst_id": "bk_switch_belong_bk_host",
               "details": [{"bk_inst_id": 100 + batch, "bk_asst_inst_id": 100 + n} for n in range(50)]})
             for batch in range(60)]  # fmt: skip

    answers, _count = await _load_until_killed(service, session, calls, after_answers=8)

    await service.start(session)
    async with _store(service.embedded_pid_and_port()[1]) as db:
        await _recovered(db)
        for index, answer in enumerate(answers):
            if _unsettled(answer):
                retry = await _retried(session, service.base, calls[index])
                assert retry["bk_error_code"] == 0, retry
                assert set(retry["data"]["error_code"].values()) <= {1101038}
        links = await _assert_whole(db, [("bk_switch", "host")])
    assert len(links) == 60 * 50


async def test_sigkill_during_deletes_leaves_a_store_recovery_makes_whole(
    service: Service, session: aiohttp.ClientSession
) -> None:
    created: list[int] = []
    for batch in range(20):
        body = {"bk_obj_id": "bk_switch", "bk_asst_obj_id": "host", "bk_obj_asst_id": "bk_switch_belong_bk_host",
                "details": [{"bk_inst_id": 100 + batch, "bk_asst_inst_id": 100 + n} for n in range(50)]}  # fmt: skip
        made = await _retried(session, service.base, ("POST", "/api/v3/createmany/instassociation", body))
        assert made["bk_error_code"] == 0, made  # the set-up, sent again past a 503 of a busy machine
        created += made["data"]["success_created"].values()
    calls = [("DELETE", "/api/v3/delete/instassociation/batch",
              {"bk_obj_id": "host" if n % 2 else "bk_switch", "id": created[n * 25:(n + 1) * 25]})
             for n in range(len(created) // 25)]  # fmt: skip

    answers, _count = await _load_until_killed(service, session, calls, after_answers=6)

    await service.start(session)
    async with _store(service.embedded_pid_and_port()[1]) as db:
        await _recovered(db)
        removed = sum(answer["data"] for answer in answers if answer is not None and not _unsettled(answer))
        for index, answer in enumerate(answers):
            if _unsettled(answer):
                again = await _retried(session, service.base, calls[index])
                assert again["bk_error_code"] == 0, again
                removed += again["data"]
        await _recovered(db)  # a retry cut again (503 on a busy machine) is finished by recovery too
        links = await _assert_whole(db, [("bk_switch", "host")])
        archives = await db["cc_DelArchive"].count_documents({})
        deletes = await db["cc_AuditLog"].count_documents({"action": "delete"})
    assert links == {}
    assert deletes == len(created)  # one delete audit per link, though some deletes were cut and retried
    assert archives == 2 * len(created)  # one archive copy per removed document, both tables
    assert removed <= len(created)


async def test_the_embedded_server_killed_under_load_is_restarted_and_the_store_made_whole(
    service: Service, session: aiohttp.ClientSession
) -> None:
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    pid, _port = service.embedded_pid_and_port()

    async def worker(offset: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            body = {"bk_obj_asst_id": "bk_switch_belong_bk_host", "bk_inst_id": 100 + (offset * 7 + n) % 60,
                    "bk_asst_inst_id": 100 + n % 60}  # fmt: skip
            answer = await _post(session, service.base, "POST", "/api/v3/create/instassociation", body)
            statuses[answer["status"]] += 1

    workers = [asyncio.create_task(worker(offset)) for offset in range(8)]
    await _until(_answered(statuses, 30))
    os.kill(pid, signal.SIGKILL)

    async def restarted() -> bool:
        return service.embedded_pid_and_port()[0] != pid

    await _until(restarted)
    await wait_ready(session, service.base, seconds=30)
    await _until(_answered(statuses, sum(statuses.values()) + 30))
    stop.set()
    await asyncio.gather(*workers)

    assert set(statuses) <= {200, 503}
    async with _store(service.embedded_pid_and_port()[1]) as db:
        await _recovered(db)
        await _assert_whole(db, [("bk_switch", "host")])


def _answered(statuses: Counter[int], at_least: int) -> Callable[[], Awaitable[bool]]:
    async def enough() -> bool:
        return sum(statuses.values()) >= at_least

    return enough


def _servers_on(data_dir: Path) -> list[int]:
    """The pids of nx-27017 processes serving `data_dir`'s files."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            continue
        if state != "Z" and "nx_27017" in command and str(data_dir / "mongo") in command:
            found.append(int(entry.name))
    return found


async def test_one_off_commands_use_the_running_embedded_server(service: Service) -> None:
    pid, _port = service.embedded_pid_and_port()
    env = {**os.environ, "CMDB_ASSO_DATA_DIR": str(service.data_dir), "CMDB_ASSO_LOG_LEVEL": "warning"}

    for command in (["check-links", "--grace-seconds", "0"], ["init-db"]):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cmdb_asso", *command, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode()

    assert service.embedded_pid_and_port()[0] == pid
    assert await asyncio.to_thread(_servers_on, service.data_dir) == [pid]


async def test_a_restarted_service_adopts_the_server_its_predecessor_left(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    data_dir = tmp_path / "var"
    orphan = EmbeddedMongo(data_dir)
    await orphan.start()  # as a server left behind would be: running, recorded for its data directory
    state = json.loads((data_dir / "nx-27017.json").read_text())
    pid = state["pid"]
    # ... by a process that is gone (a server whose starter still runs is only used, never adopted).
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    (data_dir / "nx-27017.json").write_text(json.dumps({**state, "parent": gone.pid}))
    service = Service(data_dir)

    await service.start(session)
    adopted = service.embedded_pid_and_port()[0]
    servers = await asyncio.to_thread(_servers_on, data_dir)
    await service.stop()

    assert adopted == pid
    assert servers == [pid]
    await _until(lambda: _not_alive(pid))  # adopted means owned: it stops with the service
    await orphan.stop()  # reaps the process this test started
