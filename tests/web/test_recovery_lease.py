"""One recoverer at a time per database: the periodic recovery of several processes runs in the one that holds
the recovery lease."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from cmdb_asso.config import Settings
from cmdb_asso.storage.journal import Journal, Recovery
from tests.conftest import MakeClient


async def test_of_two_processes_only_the_lease_holder_runs_recovery_passes(
    make_client: MakeClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[str] = []
    three = asyncio.Event()
    original = Journal.recover

    async def counted(self: Journal, *args: Any, **kwargs: Any) -> Recovery:
        passes.append(self.owner)
        if len(passes) >= 3:
            three.set()
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Journal, "recover", counted)
    quick = replace(settings, mongodb=replace(settings.mongodb, recovery_interval_seconds=0.05))

    await make_client(app_settings=quick)
    await make_client(app_settings=quick)
    await asyncio.wait_for(three.wait(), 30)

    assert len(set(passes)) == 1  # the other process waits for the holder to fall silent
