"""Permissions from BlueKing IAM (CONTRACT-blueking 4): the policies of a user's actions from one
`query_by_actions` call per request (cached for a few seconds), evaluated here, failing closed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson
import structlog
from cachetools import TTLCache

from cmdb_asso.errors import ApplyUrlNotConfigured, ApplyUrlUnavailable, IamFailed, IamUnavailable
from cmdb_asso.service.context import Caller, remaining_budget
from cmdb_asso.service.permission import VIEW_UNCHECKED, edit_targets
from cmdb_asso.storage.associations import AssociationStore

log = structlog.get_logger(__name__)

SYSTEM = "bk_cmdb"
# An answer larger than this is an error, not a policy (CONTRACT-blueking 4.11).
MAX_ANSWER_BYTES = 4 * 1024 * 1024
# Past these an expression is refused (denied, with an error logged), never evaluated.
MAX_DEPTH = 32
MAX_NODES = 10_000
# IAM's codes that retrying cannot help (bad request, unauthorized, not found): the service is misconfigured.
_CLIENT_ERRORS = {1901400, 1901401, 1901404}
# Actions asked for in one call at most (bk-cmdb's auth server splits the same way).
ACTIONS_PER_CALL = 100

# The view action of each built-in model a link read checks, with the object set bk-cmdb builds for it (4.7).
_VIEW: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "host": ("view_resource_pool_host", {}),
    "biz": ("find_business", {"biz": {"id": ""}}),
    "bk_biz_set_obj": ("view_business_set", {"business_set": {"id": ""}}),
    "plat": ("view_cloud_area", {}),
    "bk_project": ("view_project", {"project": {"id": ""}}),
}


class IamClient:
    """IAM's `query_by_actions` (backend form: `X-Bk-App-Code`/`X-Bk-App-Secret`), with a bounded TTL cache of
    conditions by (user, action) and one call in flight per (user, action)."""

    def __init__(
        self,
        url: str,
        app_code: str,
        app_secret: str,
        *,
        timeout_seconds: float = 3.0,
        cache_seconds: float = 10.0,
        cache_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.app_code = app_code
        self._secret = app_secret
        self.timeout_seconds = timeout_seconds
        self._cache: TTLCache[tuple[str, str], Any] | None = (
            TTLCache(cache_entries, cache_seconds, timer=clock) if cache_seconds > 0 else None
        )
        self._in_flight: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.calls = 0
        self.cache_hits = 0
        self.cache_misses = 0
        # What the last call found: "unknown" (none yet), "available", "unavailable" (IAM down or failing) or
        # "refused" (IAM refused the service's credentials), for /readyz.
        self.state = "unknown"

    async def close(self) -> None:
        """Close the connections (at shutdown)."""
        if self._session is not None:
            await self._session.close()

    async def conditions(self, user: str, actions: list[str], request_id: str = "") -> dict[str, Any]:
        """Each action's condition for `user` (`{}`: no permission); IamUnavailable or IamFailed when IAM does not
        answer with one for every action."""
        found: dict[str, Any] = {}
        waiting: dict[str, asyncio.Future[Any]] = {}
        missing: list[str] = []
        for action in dict.fromkeys(actions):
            key = (user, action)
            if self._cache is not None and key in self._cache:
                self.cache_hits += 1
                found[action] = self._cache[key]
            elif key in self._in_flight:
                waiting[action] = self._in_flight[key]
            else:
                self.cache_misses += 1
                missing.append(action)
        if missing:
            futures = {action: asyncio.get_running_loop().create_future() for action in missing}
            for action, future in futures.items():
                self._in_flight[(user, action)] = future
            try:
                for start in range(0, len(missing), ACTIONS_PER_CALL):
                    answered = await self._query(user, missing[start : start + ACTIONS_PER_CALL], request_id)
                    for action, condition in answered.items():
                        if self._cache is not None:
                            self._cache[(user, action)] = condition
                        futures[action].set_result(condition)
            except BaseException as error:
                for future in futures.values():
                    if not future.done():
                        future.set_exception(error)
                        future.exception()  # retrieved here: waiters raise it themselves
                raise
            finally:
                for action in missing:
                    self._in_flight.pop((user, action), None)
            found |= {action: future.result() for action, future in futures.items()}
        for action, future in waiting.items():
            found[action] = await asyncio.shield(future)
        return found

    async def apply_url(self, apply_base: str, user: str, permission: dict[str, Any], request_id: str = "") -> str:
        """The URL where `user` applies for `permission` (a 9900403 answer's object), from IAM's application API
        (its gateway form, as the SDK calls it); ApplyUrlUnavailable when IAM gives none."""
        if not apply_base:
            raise ApplyUrlNotConfigured()
        authorization = orjson.dumps({"bk_app_code": self.app_code, "bk_app_secret": self._secret,
                                      "bk_username": user}).decode()  # fmt: skip
        headers = {"X-Bkapi-Authorization": authorization, "X-Request-Id": request_id,
                   "Content-Type": "application/json"}  # fmt: skip
        body = {"system_id": permission.get("system_id") or SYSTEM, "actions": permission.get("actions") or []}
        try:
            async with self._opened_session().post(
                f"{apply_base.rstrip('/')}/api/v1/open/application/", data=orjson.dumps(body), headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
            ) as response:  # fmt: skip
                raw = await response.content.read(MAX_ANSWER_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("iam_apply_url_unavailable", detail=type(error).__name__)
            raise ApplyUrlUnavailable() from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        data = answer.get("data") if isinstance(answer, dict) else None
        url = data.get("url") if isinstance(data, dict) else None
        if status != 200 or not isinstance(answer, dict) or answer.get("code") != 0 or not isinstance(url, str):
            code = answer.get("code") if isinstance(answer, dict) else None
            log.warning("iam_apply_url_unavailable", status=status, code=code)
            raise ApplyUrlUnavailable()
        return url

    def _opened_session(self) -> aiohttp.ClientSession:
        """The client's connections, opened on first use (inside the event loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def probe(self) -> str:
        """Ask IAM once more (for /readyz, while the last call failed); the state it leaves."""
        with contextlib.suppress(IamUnavailable, IamFailed):
            await self._query("cmdb_asso_readyz", ["view_sys_model"], "")
        return self.state

    async def _query(self, user: str, actions: list[str], request_id: str) -> dict[str, Any]:
        try:
            answered = await self._ask(user, actions, request_id)
        except IamFailed:
            self.state = "refused"
            raise
        except IamUnavailable:
            self.state = "unavailable"
            raise
        self.state = "available"
        return answered

    async def _ask(self, user: str, actions: list[str], request_id: str) -> dict[str, Any]:
        body = {"system": SYSTEM, "subject": {"type": "user", "id": user},
                "actions": [{"id": action} for action in actions], "resources": []}  # fmt: skip
        headers = {"X-Bk-App-Code": self.app_code, "X-Bk-App-Secret": self._secret, "X-Request-Id": request_id,
                   "Content-Type": "application/json", "Accept": "application/json"}  # fmt: skip
        budget = remaining_budget()
        timeout = self.timeout_seconds if budget is None else max(0.05, min(self.timeout_seconds, budget - 0.1))
        self.calls += 1
        for attempt in (0, 1):
            try:
                return await self._post(body, headers, actions, timeout)
            except aiohttp.ClientConnectorError as error:
                # The connection could not be opened: nothing reached IAM, and once more is safe.
                if attempt == 1:
                    log.warning("iam_unavailable", detail=type(error).__name__)
                    raise IamUnavailable() from None
            except (aiohttp.ClientError, TimeoutError) as error:
                log.warning("iam_unavailable", detail=type(error).__name__)
                raise IamUnavailable() from None
        raise IamUnavailable()

    async def _post(
        self, body: dict[str, Any], headers: dict[str, str], actions: list[str], seconds: float
    ) -> dict[str, Any]:
        async with self._opened_session().post(
            f"{self.url}/api/v1/policy/query_by_actions", data=orjson.dumps(body), headers=headers,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:  # fmt: skip
            raw = await response.content.read(MAX_ANSWER_BYTES + 1)
            iam_request_id = response.headers.get("X-Request-Id", "")
            if response.status != 200 or len(raw) > MAX_ANSWER_BYTES:
                log.warning("iam_unavailable", status=response.status, iam_request_id=iam_request_id)
                raise IamUnavailable()
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("iam_unavailable", detail="not JSON", iam_request_id=iam_request_id)
            raise IamUnavailable() from None
        code = answer.get("code") if isinstance(answer, dict) else None
        if code != 0:
            message = str(answer.get("message", ""))[:200] if isinstance(answer, dict) else ""
            if code in _CLIENT_ERRORS or not isinstance(code, int):
                log.error("iam_refused", code=code, message=message, iam_request_id=iam_request_id)
                raise IamFailed()
            log.warning("iam_unavailable", code=code, message=message, iam_request_id=iam_request_id)
            raise IamUnavailable()
        data = answer.get("data")
        conditions: dict[str, Any] = {}
        for item in data if isinstance(data, list) else []:
            action = item.get("action") if isinstance(item, dict) else None
            if isinstance(action, dict) and isinstance(action.get("id"), str):
                conditions[action["id"]] = item.get("condition")
        if not isinstance(data, list) or set(actions) - set(conditions):
            log.error("iam_answer_incomplete", asked=actions, iam_request_id=iam_request_id)
            raise IamFailed()
        return {action: conditions[action] for action in actions}


class IamAuthorizer:
    """Decides with BlueKing IAM: edit on each instance at both ends of a link (its action and resource as bk-cmdb
    places them), view of a model's instances as bk-cmdb checks it; one IAM call per decision, failing closed."""

    def __init__(self, client: IamClient, store: AssociationStore) -> None:
        self.client = client
        self.store = store

    async def denied_edits(self, caller: Caller, ends: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The ends IAM's policies do not let the user edit."""
        targets = await edit_targets(self.store, caller.supplier_account, list(dict.fromkeys(ends)), named=False)
        actions = sorted({target.action[0] for target in targets})
        conditions = await self.client.conditions(caller.user, actions, caller.request_id)
        return [target.end for target in targets if not allows(conditions[target.action[0]], target.iam_object())]

    async def denied_views(self, caller: Caller, obj_ids: list[str]) -> list[str]:
        """The models whose instances the user may not view, asked of IAM in one call for all their actions (a
        type-level check: only an `any` policy allows it, as in bk-cmdb); set, module, process and custom mainline
        levels are not checked."""
        mainline = await self.store.mainline_models(caller.supplier_account) - {"host"}
        checked = [obj_id for obj_id in dict.fromkeys(obj_ids) if obj_id not in VIEW_UNCHECKED | mainline]
        if not checked:
            return []
        models = await self.store.find_models([obj_id for obj_id in checked if obj_id not in _VIEW],
                                              caller.supplier_account)  # fmt: skip
        checks: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}
        for obj_id in checked:
            model = models.get(obj_id)
            custom = f"view_comobj_{model.row_id if model and model.row_id is not None else obj_id}"
            checks[obj_id] = _VIEW.get(obj_id) or (custom, {})
        actions = sorted({action for action, _ in checks.values()})
        conditions = await self.client.conditions(caller.user, actions, caller.request_id)
        return [obj_id for obj_id, (action, objects) in checks.items() if not allows(conditions[action], objects)]

    async def can_view_model(self, caller: Caller, obj_id: str, row_id: int | None) -> bool:
        """Whether the user may view the model (`view_sys_model` on its `cc_ObjDes` row)."""
        row = row_id if row_id is not None else obj_id
        return await self._allows(caller, "view_sys_model", {"sys_model": {"id": str(row)}})

    async def can_access_business(self, caller: Caller, biz_id: int) -> bool:
        """Whether the user may access the business's resources (`find_business_resource` on it)."""
        return await self._allows(caller, "find_business_resource", {"biz": {"id": str(biz_id)}})

    async def can_watch(self, caller: Caller, obj_id: str | None) -> bool:
        """Whether the user may watch link events (`watch_inst_asst_event`; of one model, its `cc_ObjDes` row)."""
        objects: dict[str, dict[str, Any]] = {}
        if obj_id is not None:
            model = (await self.store.find_models([obj_id], caller.supplier_account)).get(obj_id)
            objects = {"inst_asst_event": {"id": str(model.row_id if model and model.row_id is not None else obj_id)}}
        return await self._allows(caller, "watch_inst_asst_event", objects)

    async def sees_all_suppliers(self, caller: Caller) -> bool:
        """No: IAM has no grant across suppliers."""
        return False

    async def _allows(self, caller: Caller, action: str, objects: dict[str, dict[str, Any]]) -> bool:
        conditions = await self.client.conditions(caller.user, [action], caller.request_id)
        return allows(conditions[action], objects)


def allows(condition: Any, objects: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether an IAM condition allows the object set (type → attributes), failing closed: `{}`, an unknown
    operator, a field or type the objects lack, a value of the wrong shape, an expression too deep or too large —
    all deny, never raise (CONTRACT-blueking 4.4)."""
    nodes = [0]
    try:
        return _evaluate(condition, objects, 0, nodes) is True
    except _TooLarge:
        log.error("iam_expression_too_large")
        return False
    except Exception:  # a malformed expression denies; it never fails the request
        log.exception("iam_expression_invalid")
        return False


class _TooLarge(Exception):
    pass


def _evaluate(expression: Any, objects: Mapping[str, Mapping[str, Any]], depth: int, nodes: list[int]) -> bool:
    nodes[0] += 1
    if depth > MAX_DEPTH or nodes[0] > MAX_NODES:
        raise _TooLarge()
    if not isinstance(expression, dict):
        return False
    op = expression.get("op")
    if op == "any":
        return True
    if op in ("AND", "OR"):
        content = expression.get("content")
        if not isinstance(content, list) or not content:
            return False
        results = (_evaluate(item, objects, depth + 1, nodes) for item in content)
        return all(results) if op == "AND" else any(results)
    field, value = expression.get("field"), expression.get("value")
    if not isinstance(op, str) or op not in _ATOMS or not isinstance(field, str) or "." not in field:
        if op not in _ATOMS:
            log.warning("iam_operator_unknown", op=str(op)[:40])
        return False
    resource_type, attribute = field.split(".", 1)
    resource = objects.get(resource_type)
    if not isinstance(resource, Mapping) or attribute not in resource:
        return False  # rule 4.4-2: absent means false, for the negative operators too
    actual = resource[attribute]
    if attribute == "id":
        actual = str(actual)
        value = [str(item) for item in value] if isinstance(value, list) else str(value)
    if op == "starts_with" and attribute == "_bk_iam_path_" and isinstance(value, str) and value.endswith(",*/"):
        value = value[:-2]  # "/biz,1/set,*/" matches every set of business 1
    return bool(_ATOMS[op](actual, value))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(actual: Any, value: Any) -> bool:
    if _number(actual) and _number(value):
        return bool(actual == value)
    return type(actual) is type(value) and not isinstance(value, list | dict) and bool(actual == value)


def _scalar(test: Any) -> Any:
    """An operator on one value; on a list attribute true when one element passes."""

    def atom(actual: Any, value: Any) -> bool:
        if isinstance(value, list | dict) or value is None:
            return False
        items = actual if isinstance(actual, list) else [actual]
        return any(test(item, value) for item in items)

    return atom


def _negated(test: Any) -> Any:
    """The negation of an operator on one value; on a list attribute true only when every element passes."""

    def atom(actual: Any, value: Any) -> bool:
        if isinstance(value, list | dict) or value is None:
            return False
        items = actual if isinstance(actual, list) else [actual]
        return all(_comparable(item, value) and not test(item, value) for item in items)

    return atom


def _comparable(item: Any, value: Any) -> bool:
    return (_number(item) and _number(value)) or type(item) is type(value)


def _strings(test: Any) -> Any:
    return lambda item, value: isinstance(item, str) and isinstance(value, str) and test(item, value)


def _numbers(test: Any) -> Any:
    return lambda item, value: _number(item) and _number(value) and test(item, value)


def _in(actual: Any, value: Any) -> bool:
    if not isinstance(value, list):
        return False
    items = actual if isinstance(actual, list) else [actual]
    return any(_same(item, candidate) for item in items for candidate in value)


def _not_in(actual: Any, value: Any) -> bool:
    if not isinstance(value, list):
        return False
    items = actual if isinstance(actual, list) else [actual]
    return all(not any(_same(item, candidate) for candidate in value) for item in items)


def _contains(actual: Any, value: Any) -> bool:
    return isinstance(actual, list) and not isinstance(value, list | dict) and any(_same(i, value) for i in actual)


def _not_contains(actual: Any, value: Any) -> bool:
    return isinstance(actual, list) and not isinstance(value, list | dict) and not _contains(actual, value)


_ATOMS = {
    "eq": _scalar(_same),
    "not_eq": _negated(_same),
    "in": _in,
    "not_in": _not_in,
    "contains": _contains,
    "not_contains": _not_contains,
    "starts_with": _scalar(_strings(str.startswith)),
    "not_starts_with": _negated(_strings(str.startswith)),
    "ends_with": _scalar(_strings(str.endswith)),
    "not_ends_with": _negated(_strings(str.endswith)),
    "string_contains": _scalar(_strings(lambda item, value: value in item)),
    "lt": _scalar(_numbers(lambda item, value: item < value)),
    "lte": _scalar(_numbers(lambda item, value: item <= value)),
    "gt": _scalar(_numbers(lambda item, value: item > value)),
    "gte": _scalar(_numbers(lambda item, value: item >= value)),
}
