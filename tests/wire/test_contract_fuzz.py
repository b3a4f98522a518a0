"""Contract fuzzing: schemathesis against /openapi.json of a live service, valid and invalid data, both spellings
(the ESB one with valid credentials, so that its bodies are reached). Examples are drawn deterministically
here (the test profile); `make fuzz` explores with random seeds and more examples."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cmdb_asso.operations import OPERATIONS
from cmdb_asso.storage.embedded import free_port

pytestmark = pytest.mark.wire


@pytest.fixture(scope="module")
def live_service() -> Iterator[str]:
    """The service with the demo data, on the embedded store, as its own process."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "CMDB_ASSO_HTTP_PORT": str(port), "CMDB_ASSO_DATA_DIR": data_dir,
               "CMDB_ASSO_LOG_LEVEL": "warning", "CMDB_ASSO_LOG_FORMAT": "json",
               "CMDB_ASSO_HTTP_DRAIN_SECONDS": "0"}  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "cmdb_asso", "serve", "--seed-demo-if-empty"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(0.05)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=20)


@pytest.fixture(scope="module")
def api_schema(live_service: str) -> schemathesis.BaseSchema:
    """The service's own document, pointed at the live service."""
    loaded = schemathesis.openapi.from_url(f"{live_service}/openapi.json")
    loaded.config.base_url = live_service
    return loaded


# Identity for both spellings at once: native reads the user header, ESB the authorization header.
IDENTITY = {
    "X-Bkcmdb-User": "fuzz",
    "X-Bkapi-Authorization": '{"bk_app_code": "fuzz", "bk_app_secret": "x", "bk_username": "fuzz"}',
}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_what_its_document_says_and_never_a_5xx(
    api_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    checks = [
        not_a_server_error,
        response_schema_conformance,
        content_type_conformance,
        status_code_conformance,
        response_headers_conformance,
    ]
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    spellings = sum(2 if operation.esb else 1 for operation in OPERATIONS)  # native, and ESB where bk-cmdb has it
    assert len([op for op in operations if op.path.startswith("/api/")]) == spellings

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not operation.path.startswith("/api/"):
            continue  # the operational routes take no input to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def exercise(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            case.call_and_validate(headers=IDENTITY, checks=checks)

        exercise()
