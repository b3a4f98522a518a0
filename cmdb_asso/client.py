"""An async client for the association API: typed methods, one connection pool, bounded concurrency,
retries with backoff and jitter that never double a link, and exceptions carrying the bk-cmdb code.

    async with AssociationClient("http://127.0.0.1:8080", user="admin") as client:
        link_id = await client.create("bk_switch_belong_bk_host", 11, 21)
        result = await client.create_many("bk_switch", "host", "bk_switch_belong_bk_host", [(12, 21), (13, 22)])
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import uuid
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson

from cmdb_asso.operations import BY_NAME

Spelling = Literal["native", "esb"]

# Every operation: (native method, native path with {parameters}, ESB name).


# Set when the current call needed more than one attempt.
_RETRIED: contextvars.ContextVar[bool] = contextvars.ContextVar("cmdb_asso_client_retried", default=False)


class CmdbApiError(Exception):
    """The service refused a request; `code` is the bk-cmdb error code."""

    def __init__(
        self, code: int, message: str, *, status: int = 200, request_id: str = "", permission: Any = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        self.permission = permission


class AuthenticationError(CmdbApiError):
    """HTTP 401: the user or the application was not accepted (1199027, 1199046)."""


class PermissionDeniedError(CmdbApiError):
    """9900403: the user may not do this; `permission` says what is missing."""


class ServiceUnavailableError(CmdbApiError):
    """The service stayed unavailable (503 or no connection) through every retry."""


@dataclass
class BatchResult:
    """A create-many answer: per index of the details, the new id, or the error code and message."""

    created: dict[int, int | None] = field(default_factory=dict)
    errors: dict[int, tuple[int, str]] = field(default_factory=dict)
    # Whether the call was sent more than once: an earlier attempt may have written what this one then found.
    retried: bool = False


# A link's keys, asked for when a find-related caller names no fields (the service requires them, as bk-cmdb does).
LINK_FIELDS = ("id", "bk_inst_id", "bk_obj_id", "bk_asst_inst_id", "bk_asst_obj_id", "bk_supplier_account",
               "bk_obj_asst_id", "bk_asst_id", "bk_biz_id")  # fmt: skip


class AssociationClient:
    """Calls the service by its native or ESB spelling over one aiohttp session."""

    def __init__(
        self,
        base_url: str,
        *,
        user: str = "admin",
        supplier_account: str | None = None,
        spelling: Spelling = "native",
        app_code: str = "",
        app_secret: str = "",
        concurrency: int = 8,
        retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        timeout: float = 60.0,
        session: aiohttp.ClientSession | None = None,
        language: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # The language of the service's messages (and of the display names an Excel import reads): en or zh.
        self.language = language
        self.user = user
        self.supplier_account = supplier_account
        self.spelling = spelling
        self.app_code = app_code
        self.app_secret = app_secret
        self.retries = retries
        self.retried_calls = 0
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None
        self._random = random.Random()

    async def __aenter__(self) -> AssociationClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool (unless it was handed in)."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, json_serialize=lambda o: orjson.dumps(o).decode()
            )
            self._owns_session = True
        return self._session

    # --- the operations ----------------------------------------------------------------------------------------

    async def create(
        self,
        obj_asst_id: str,
        inst_id: int,
        asst_inst_id: int,
        *,
        dry_run: bool = False,
        idempotency_key: str | None = None,
    ) -> int | None:
        """Create one link; its id (None for a dry run)."""
        params = {"bk_obj_asst_id": obj_asst_id, "bk_inst_id": inst_id, "bk_asst_inst_id": asst_inst_id}
        if dry_run:
            params["dry_run"] = True
        data = await self.call("create", params, idempotency_key=idempotency_key or _new_key())
        new_id = data.get("id")
        return int(new_id) if new_id is not None else None

    async def create_many(
        self,
        obj_id: str,
        asst_obj_id: str,
        obj_asst_id: str,
        pairs: Iterable[tuple[int, int]],
        *,
        atomic: bool = False,
        dry_run: bool = False,
        idempotency_key: str | None = None,
    ) -> BatchResult:
        """Create links of one definition in one request; per index, an id or an error."""
        details = [{"bk_inst_id": src, "bk_asst_inst_id": dst} for src, dst in pairs]
        params: dict[str, Any] = {
            "bk_obj_id": obj_id,
            "bk_asst_obj_id": asst_obj_id,
            "bk_obj_asst_id": obj_asst_id,
            "details": details,
        }
        if atomic:
            params["atomic"] = True
        if dry_run:
            params["dry_run"] = True
        token = _RETRIED.set(False)
        try:
            data = await self.call("create_many", params, idempotency_key=idempotency_key or _new_key())
            retried = _RETRIED.get()
        finally:
            _RETRIED.reset(token)
        codes = data.get("error_code", {})
        return BatchResult(
            retried=retried,
            created={int(index): link_id for index, link_id in data.get("success_created", {}).items()},
            errors={
                int(index): (int(codes.get(index, 0)), str(text)) for index, text in data.get("error_msg", {}).items()
            },
        )

    async def create_links(
        self,
        obj_id: str,
        asst_obj_id: str,
        obj_asst_id: str,
        pairs: list[tuple[int, int]],
        *,
        batch_size: int = 200,
    ) -> BatchResult:
        """Create any number of links, cut into create-many calls that run concurrently (up to the client's
        concurrency); indexes in the result are positions in `pairs`."""
        batches = [pairs[start : start + batch_size] for start in range(0, len(pairs), batch_size)]
        results = await asyncio.gather(
            *(self.create_many(obj_id, asst_obj_id, obj_asst_id, batch) for batch in batches)
        )
        merged = BatchResult()
        for number, result in enumerate(results):
            offset = number * batch_size
            merged.created.update({offset + index: link_id for index, link_id in result.created.items()})
            merged.errors.update({offset + index: error for index, error in result.errors.items()})
        return merged

    async def delete(self, obj_id: str, link_id: int) -> None:
        """Delete one link (by either of its models)."""
        await self.call("delete", {"bk_obj_id": obj_id, "id": link_id})

    async def delete_many(self, obj_id: str, link_ids: list[int]) -> int:
        """Delete up to 500 links; how many were deleted."""
        return int(await self.call("delete_many", {"bk_obj_id": obj_id, "id": link_ids}))

    async def find(self, obj_id: str, condition: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Links of a model matching a condition."""
        found: list[dict[str, Any]] = await self.call("find", {"bk_obj_id": obj_id, "condition": condition or {}})
        return found

    async def find_related(
        self, obj_id: str, inst_id: int, *, fields: list[str] | None = None, start: int = 0, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Links where the instance is the source or the target."""
        params: dict[str, Any] = {
            "condition": {"bk_obj_id": obj_id, "bk_inst_id": inst_id},
            "fields": fields or list(LINK_FIELDS),
            "page": {"start": start, "limit": limit},
        }
        found: list[dict[str, Any]] = await self.call("find_related", params)
        return found

    async def search(
        self,
        obj_id: str,
        conditions: dict[str, Any] | None = None,
        *,
        fields: list[str] | None = None,
        start: int = 0,
        limit: int = 500,
        sort: str = "",
    ) -> list[dict[str, Any]]:
        """One page of the links matching query-builder conditions."""
        params: dict[str, Any] = {"bk_obj_id": obj_id, "page": {"start": start, "limit": limit, "sort": sort}}
        if conditions:
            params["conditions"] = conditions
        if fields:
            params["fields"] = fields
        data = await self.call("search", params)
        info: list[dict[str, Any]] = data["info"]
        return info

    async def count(self, obj_id: str, conditions: dict[str, Any] | None = None) -> int:
        """How many links match query-builder conditions."""
        params: dict[str, Any] = {"bk_obj_id": obj_id}
        if conditions:
            params["conditions"] = conditions
        return int((await self.call("count", params))["count"])

    async def topo(self, obj_id: str, inst_id: int) -> list[dict[str, Any]]:
        """The instances one instance points to, grouped by target model (bk-cmdb's instance topology)."""
        groups: list[dict[str, Any]] = await self.call("topo", {"bk_obj_id": obj_id, "bk_inst_id": inst_id})
        return groups

    async def association_tab(self, obj_id: str, inst_id: int, *, start: int = 0, limit: int = 200) -> dict[str, Any]:
        """A page of one instance's links, both directions, with the instances at their ends (the Association
        tab's graph; served natively only)."""
        page: dict[str, Any] = await self.call(
            "association_tab", {"bk_obj_id": obj_id, "id": inst_id, "start": start, "limit": limit}
        )
        return page

    async def full_topo(self, obj_id: str, inst_id: int) -> list[dict[str, Any]]:
        """The instance with those pointing to it and those it points to, by model (served natively only)."""
        topo: list[dict[str, Any]] = await self.call("full_topo", {"bk_obj_id": obj_id, "bk_inst_id": inst_id})
        return topo

    async def business_host_links(
        self, biz_id: int, condition: dict[str, Any], obj_id: str = "host"
    ) -> list[dict[str, Any]]:
        """Host links matching a Find condition, for a caller with access to the business (natively only)."""
        params = {"bk_biz_id": biz_id, "bk_obj_id": obj_id, "condition": condition}
        found: list[dict[str, Any]] = await self.call("business_host_links", params)
        return found

    async def model_associations(self, condition: dict[str, Any] | None = None) -> dict[str, Any]:
        """Association definitions matching a condition, with their count (natively only)."""
        answer: dict[str, Any] = await self.call("model_associations", {"condition": condition or {}})
        return answer

    async def definitions_by_ids(self, obj_id: str, obj_asst_ids: list[str]) -> list[dict[str, Any]]:
        """The definitions with these ids in which the model is the source or the target (natively only)."""
        found: list[dict[str, Any]] = await self.call(
            "definitions_by_ids", {"bk_obj_id": obj_id, "bk_obj_asst_ids": obj_asst_ids}
        )
        return found

    async def import_associations(
        self, obj_id: str, rows: dict[int, dict[str, Any]], object_unique_id: int, other_unique_ids: dict[str, int]
    ) -> dict[int, str]:
        """Import an Excel sheet's rows (by row number: bk_obj_asst_id, operate, src_primary_key, dst_primary_key),
        instances named by these unique rules; the message of each row that failed (natively only)."""
        params = {"bk_obj_id": obj_id, "association_info": {str(number): row for number, row in rows.items()},
                  "object_unique_id": object_unique_id, "asst_object_unique_id_info": other_unique_ids}  # fmt: skip
        answer: dict[str, Any] = await self.call("import", params)
        return {int(item["row"]): str(item["message"]) for item in answer.get("err_msg") or []}

    async def links_with_instances(
        self,
        obj_id: str,
        asst_filter: dict[str, Any],
        *,
        page: dict[str, Any],
        src_detail: bool = False,
        dst_detail: bool = False,
        **fields: list[str],
    ) -> dict[str, Any]:
        """A page of a model's links chosen by a query-builder filter, with their source and target instances
        when asked (`association`, `src`, `dst`); `fields` may name `asst_fields`, `src_fields`, `dst_fields`."""
        condition = {"asst_filter": asst_filter, "src_detail": src_detail, "dst_detail": dst_detail, **fields}
        answer: dict[str, Any] = await self.call(
            "links_with_instances", {"bk_obj_id": obj_id, "condition": condition, "page": page}
        )
        return answer

    async def watch(self, **body: Any) -> dict[str, Any]:
        """Link events (`bk_cursor`, `bk_start_from`, `bk_event_types`, `bk_fields`, `bk_filter` as bk-cmdb's
        resource_watch takes them): `bk_watched` and `bk_events`; with a cursor it waits up to 20 s."""
        answer: dict[str, Any] = await self.call("watch", {"bk_resource": "inst_asst", **body})
        return answer

    async def events(
        self,
        *,
        cursor: str = "",
        start_from: int = 0,
        event_types: list[str] | None = None,
        fields: list[str] | None = None,
        sub_resource: str = "",
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Follow the link events for as long as the caller iterates: each event once, oldest first, after
        `cursor`, from `start_from` (unix seconds), or from now. Each event carries its `bk_cursor`: keep the
        last one to resume. A cursor the service no longer knows raises CmdbApiError 1103007."""
        filters: dict[str, Any] = {}
        if event_types:
            filters["bk_event_types"] = event_types
        if fields:
            filters["bk_fields"] = fields
        if sub_resource:
            filters["bk_filter"] = {"bk_sub_resource": sub_resource}
        position = cursor
        if not position:
            first = await self.watch(**filters, **({"bk_start_from": start_from} if start_from else {}))
            if first["bk_watched"]:
                for event in first["bk_events"]:
                    yield event
            position = first["bk_events"][-1]["bk_cursor"]
        while True:
            answer = await self.watch(bk_cursor=position, **filters)
            if answer["bk_watched"]:
                for event in answer["bk_events"]:
                    yield event
            position = answer["bk_events"][-1]["bk_cursor"]

    async def base_info(
        self,
        obj_id: str,
        inst_id: int,
        other_obj_id: str,
        *,
        is_target: bool = False,
        page: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A page of the links between one instance and another model's instances (`count`, `info`)."""
        condition = {"bk_obj_id": obj_id, "bk_inst_id": inst_id, "association_obj_id": other_obj_id,
                     "is_target_object": is_target}  # fmt: skip
        answer: dict[str, Any] = await self.call("base_info", {"condition": condition, "page": page or {}})
        return answer

    async def graph(
        self,
        obj_id: str,
        inst_id: int,
        *,
        direction: str = "both",
        depth: int = 2,
        obj_asst_ids: list[str] | None = None,
        max_nodes: int | None = None,
    ) -> dict[str, Any]:
        """The instances `depth` hops around one instance and the links between them (`nodes`, `edges`,
        `truncated`, `hidden`)."""
        params: dict[str, Any] = {"bk_obj_id": obj_id, "bk_inst_id": inst_id, "direction": direction, "depth": depth}
        if obj_asst_ids is not None:
            params["bk_obj_asst_ids"] = obj_asst_ids
        if max_nodes is not None:
            params["max_nodes"] = max_nodes
        graph: dict[str, Any] = await self.call("graph", params)
        return graph

    # --- the transport -----------------------------------------------------------------------------------------

    async def call(self, operation: str, params: dict[str, Any], *, idempotency_key: str | None = None) -> Any:
        """Call an operation and return its `data`; retries 503s and connection failures with exponential
        backoff and full jitter, always with the same idempotency key, so that a retry never doubles a link."""
        method, path, body, headers = self._request(operation, params)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        for attempt in range(self.retries + 1):
            try:
                async with self._limit:
                    answer = await self._send(method, path, body, headers)
                if attempt:
                    self.retried_calls += 1
                    _RETRIED.set(True)
                return answer
            except (ServiceUnavailableError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                if attempt == self.retries:
                    if isinstance(exc, ServiceUnavailableError):
                        raise
                    raise ServiceUnavailableError(
                        1199998, f"no answer from the service at {self.base_url} ({type(exc).__name__}): is it running?"
                    ) from exc
                delay = min(self.max_backoff, self.backoff * 2**attempt)
                await asyncio.sleep(self._random.uniform(0, delay))
        raise AssertionError("unreachable")

    def _request(self, operation: str, params: dict[str, Any]) -> tuple[str, str, Any, dict[str, str]]:
        described = BY_NAME[operation]
        method, path, esb_name = described.method, described.native_path, described.esb_name
        headers = {"Content-Type": "application/json"}
        if self.language:
            headers["X-Bkcmdb-Language"] = self.language
        if self.spelling == "esb" and described.esb:
            body = {**params, "bk_app_code": self.app_code, "bk_app_secret": self.app_secret, "bk_username": self.user}
            if self.supplier_account:
                body["bk_supplier_account"] = self.supplier_account
            return "POST", f"/api/c/compapi/v2/cc/{esb_name}/", body, headers
        headers["X-Bkcmdb-User"] = self.user
        if self.supplier_account:
            headers["X-Bkcmdb-Supplier-Account"] = self.supplier_account
        names = described.path_parameters
        path = path.format(**{name: params[name] for name in names})
        body = {key: value for key, value in params.items() if key not in names}
        return method, path, body or None, headers

    async def _send(self, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
        session = self._get_session()
        data = orjson.dumps(body) if body is not None else None
        async with session.request(method, f"{self.base_url}{path}", data=data, headers=headers) as response:
            try:
                answer = orjson.loads(await response.read())
            except orjson.JSONDecodeError:
                answer = {}
            if not isinstance(answer, dict):
                answer = {}
            code = int(answer.get("bk_error_code", answer.get("code", 1199998 if response.status >= 500 else 0)))
            message = str(answer.get("bk_error_msg", answer.get("message", response.reason or "")))
            request_id = response.headers.get("X-Request-Id", "")
            if response.status in (409, 503):
                # 503: the database is away; 409: the same idempotency key is still running elsewhere. Both are
                # worth the same call again, with the same key.
                raise ServiceUnavailableError(code, message, status=response.status, request_id=request_id)
            if answer.get("result") is True:
                return answer.get("data")
            kind: type[CmdbApiError] = CmdbApiError
            if response.status == 401:
                kind = AuthenticationError
            elif code == 9900403:
                kind = PermissionDeniedError
            raise kind(
                code, message, status=response.status, request_id=request_id, permission=answer.get("permission")
            )


def _new_key() -> str:
    return uuid.uuid4().hex
