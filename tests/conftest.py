"""Fixtures for unit and web tests: settings, a seeded in-process mongomock store, and the app over it."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient
from hypothesis import settings as hypothesis_settings
from mongomock_motor import AsyncMongoMockClient
from structlog._config import BoundLoggerLazyProxy

from cmdb_asso.app import create_app
from cmdb_asso.config import MongoSettings, Settings
from cmdb_asso.service.permission import Authorizer
from cmdb_asso.storage.client import MongoConnection
from cmdb_asso.storage.schema import seed_demo
from tests.helpers import add_definition

# Property tests draw the same examples on every run, on every machine: a test's verdict never depends on a
# lucky draw. Random exploration is its own command, `make fuzz` (pytest --hypothesis-profile=explore), whose
# profile wins over this default.
hypothesis_settings.register_profile("deterministic", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False, database=None, max_examples=5000)
hypothesis_settings.load_profile("deterministic")

AiohttpClient = Callable[..., Awaitable[TestClient[Any, Any]]]
MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Commands run in a test configure structlog for their process (caching each logger on its first use);
    undo that for the next test, so that every test can capture any module's log lines."""
    yield
    structlog.reset_defaults()
    # dict.copy() is one step under the GIL; iterating would fail while a thread left running imports a module.
    for name, module in sys.modules.copy().items():
        logger = getattr(module, "log", None) if name.startswith("cmdb_asso") else None
        if isinstance(logger, BoundLoggerLazyProxy):
            logger.__dict__.pop("bind", None)  # the cached logger: assembled again from the configuration


@pytest.fixture
def settings() -> Settings:
    """Settings for tests: no definition cache, so a test sees the definitions it writes at once."""
    return Settings(mongodb=MongoSettings(uri="unused", definition_cache_seconds=0, id_block_size=10))


@pytest.fixture
async def mock_mongo() -> MongoConnection:
    """A fresh mongomock database with the demo data and a self-association definition."""
    client: Any = AsyncMongoMockClient()
    mongo = MongoConnection(client=client, db=client["cmdb"], transactions=False)
    await seed_demo(mongo)
    await add_definition(mongo, "host_connect_host", "host", "connect", "host", "n:n")
    return mongo


@pytest.fixture
async def make_client(aiohttp_client: AiohttpClient, settings: Settings, mock_mongo: MongoConnection) -> MakeClient:
    """Build a test client over the app on the mock store, optionally with another authorizer or settings."""

    async def make(authorizer: Authorizer | None = None, app_settings: Settings | None = None) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(app_settings or settings, mongo=mock_mongo, authorizer=authorizer))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, Any]:
    """A test client over the app with the default (allow-all) authorizer."""
    return await make_client()
