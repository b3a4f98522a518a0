"""Typed errors carrying bk-cmdb codes, and the message catalogue in English and Chinese."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

Language = Literal["en", "zh"]
LANGUAGES: tuple[Language, ...] = ("en", "zh")

# code -> (English, Chinese); printf-style placeholders filled with the error's args.
MESSAGES: dict[int, tuple[str, str]] = {
    0: ("success", "success"),
    1199000: ("Deserializing JSON data failed", "反序列化JSON数据失败"),
    1199003: ("invalid input parameter", "输入参数无效"),
    1199006: ("'%s' data parameter verification does not pass", "'%s' 数据参数校验不通过"),
    1199009: ("'%s' parameters must be integral", "'%s' 参数必须是整型"),
    1199010: ("'%s' unassigned", "'%s' 未赋值"),
    1199019: ("No relevant data found", "未找到相关数据"),
    1199011: ("'%s' the parameter is invalid or does not exist", "'%s' 参数无效或不存在"),
    1199014: ("duplicated instances exist, fields [%s] duplicated", "数据唯一性校验失败， %s 重复"),
    1199017: ("Failed to query data", "查询数据失败"),
    1199027: ("'%s' authorization information query failed", "[%s]授权信息查询失败"),
    1199035: (" %s exceed the limit %d", " %s 超过限制 %d"),
    1199038: ("need data %s is null", "数据 %s 不能为空"),
    1199046: ("Authorize request failed.", "鉴权失败"),
    1199047: ("Do not have access permission.", "没有操作的权限"),
    1199072: ("get no-auth skip URL failed", "获取无权限跳转链接失败"),
    1199059: ("page limit is exceeded. suggestion 200", "分页查询数量超过限制的最大值, 建议值200"),
    1199998: ("Unknown or unrecognized error", "未知或未能识别的异常"),
    1199999: ("'%s' Internal Server Error", "'%s' 服务器内部错误"),
    1100004: ("call source authentication failed.", "调用来源认证失败"),
    1101038: ("the associations %s->%s already exist", "关联关系 %s->%s 重复"),
    1103007: ("Event chain node not exist", "事件节点不存在"),
    1103008: ("Event detail not exist", "事件详情不存在"),
    1101046: ("object association does not exist.", "模型的关联关系不存在"),
    1101052: (
        "can not create multiple instance association for a 1:1 association.",
        "关联关系为1:1的，不能同时关联多个实例",
    ),
    1101061: (
        "The relationship is 1:n, and multiple source model instances cannot be associated at the same time.",
        "关联关系为1:n的，不能同时关联多个源模型实例",
    ),
    1101062: ("object association do not unique.", "关联关系不唯一"),
    1101073: ("the association inst is not exist", "关联实例不存在"),
    1101074: ("the  inst to asst  is not exist", "被关联实例不存在"),
    1109001: ("save audit log failed", "保存操作审计日志失败"),
}
# 9900403 has no text of its own in bk-cmdb: it answers with 1199047's.
MESSAGES[9900403] = MESSAGES[1199047]


def message(code: int, language: Language, args: tuple[Any, ...] = ()) -> str:
    """Render the catalogue text of `code` in `language`, filling printf placeholders with `args`."""
    english, chinese = MESSAGES[code]
    template = chinese if language == "zh" else english
    if not args:
        return template
    try:
        return template % args
    except (TypeError, ValueError):
        return template


class LinkConflict(Exception):
    """The store refused a link because a unique index already holds its key: a rule was raced. Raised by
    storage, handled by the service (which judges the rules again); never shown to a caller."""


class QueryRefused(Exception):
    """The server refused a filter built from a caller's input as invalid (a regular expression it cannot
    compile). Raised by storage, handled by the service (which names the parameter); never shown as such."""


class CmdbError(Exception):
    """An error with a bk-cmdb code; the web layer renders it into the envelope."""

    code: ClassVar[int] = 1199999
    http_status: int = 200
    # False for an error that only ever words a row of an answer, never the answer's code.
    answers: ClassVar[bool] = True

    def __init__(self, *args: Any, permission: dict[str, Any] | None = None, http_status: int | None = None) -> None:
        super().__init__(*args)
        self.args_for_message: tuple[Any, ...] = args
        self.permission = permission
        if http_status is not None:
            self.http_status = http_status

    def message(self, language: Language) -> str:
        """The error's text in `language`."""
        return message(self.code, language, self.args_for_message)

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if sent again (the database was away, a bug): such an answer
        is not recorded for idempotent replay."""
        return self.http_status >= 500

    def __str__(self) -> str:
        return f"{self.code}: {self.message('en')}"


class BodyUndecodable(CmdbError):
    """The body does not decode into the operation's request: a value of the wrong type anywhere (1199000)."""

    code = 1199000


class BodyNotDecoded(CmdbError):
    """The body does not decode, on a route where bk-cmdb wraps the decoder's failure: 1199000's text, as
    1199006."""

    code = 1199006

    def message(self, language: Language) -> str:
        """1199000's text in `language`, as bk-cmdb's wrapping gives it."""
        return message(BodyUndecodable.code, language, ())


class BodyNotDecodedNamed(CmdbError):
    """The body does not decode, on find related, where bk-cmdb passes the decoder's text as 1199006's argument."""

    code = 1199006

    def message(self, language: Language) -> str:
        """1199006's template around 1199000's text, both in `language`."""
        return message(self.code, language, (message(BodyUndecodable.code, language, ()),))


class BodyInvalid(CmdbError):
    """The body, or one of its fields, has the wrong type or value (1199006)."""

    code = 1199006


class InputInvalid(CmdbError):
    """Generic invalid input, used for unknown routes and wrong methods (1199003)."""

    code = 1199003


class BodyTimeout(InputInvalid):
    """The client did not send its whole body in time (1199003, HTTP 408)."""

    http_status = 408


class BodyUnreadable(BodyInvalid):
    """The body cannot be decoded as its headers describe it, e.g. a plain body sent as gzip (1199006, 400)."""

    http_status = 400


class ParamNotInteger(CmdbError):
    """A parameter that must be an integer is not (1199009)."""

    code = 1199009


class ParamMissing(CmdbError):
    """A required field is missing or null (1199010)."""

    code = 1199010


class ParamEmpty(CmdbError):
    """A parameter is empty or does not exist (1199011)."""

    code = 1199011


class DefinitionMappingInvalid(CmdbError):
    """The definition's stored mapping is none of 1:1, 1:n, n:n: no link of it is written (1199011)."""

    code = 1199011

    def __init__(self) -> None:
        super().__init__("mapping")


class DuplicateItem(CmdbError):
    """The same association already exists (1199014)."""

    code = 1199014


class LimitExceeded(CmdbError):
    """A size or count is over its limit (1199035)."""

    code = 1199035


class BodyTooLarge(LimitExceeded):
    """The request body is larger than the configured limit (1199035, HTTP 413)."""

    http_status = 413


class DataEmpty(CmdbError):
    """A list that must hold data is empty (1199038)."""

    code = 1199038


class PageLimitExceeded(CmdbError):
    """A page or list is longer than allowed (1199059)."""

    code = 1199059


class UserUnknown(CmdbError):
    """The caller's user cannot be determined (1199027, HTTP 401)."""

    code = 1199027
    http_status = 401


class AppAuthFailed(CmdbError):
    """An ESB application failed authentication (1199046, HTTP 401)."""

    code = 1199046
    http_status = 401


class GatewayAuthFailed(CmdbError):
    """A request's gateway token (X-Bkapi-JWT) did not verify, or a request without one came where one is required
    (1100004, HTTP 401)."""

    code = 1100004
    http_status = 401


class IamUnavailable(CmdbError):
    """BlueKing IAM did not answer in time, or answered that it failed: nothing is allowed; retry (1199046, HTTP
    503)."""

    code = 1199046
    http_status = 503


class IamFailed(CmdbError):
    """BlueKing IAM refused the service's own call (its app code, secret or client list) or answered without a
    policy for every action asked: nothing is allowed, and retrying cannot help (1199046, HTTP 500)."""

    code = 1199046
    http_status = 500


class ApplyUrlUnavailable(CmdbError):
    """BlueKing IAM gave no apply URL for a permission: it is away or failed; retry (1199072, HTTP 503)."""

    code = 1199072
    http_status = 503


class ApplyUrlNotConfigured(CmdbError):
    """No BlueKing IAM application API is configured (`auth.iam.apply_url`): there is nowhere to apply (1199072)."""

    code = 1199072


class ModelNotFound(CmdbError):
    """No model has this id, as the full instance topology answers it: 1101016 with the text of 1199019, which is
    how bk-cmdb builds it."""

    code = 1101016

    def message(self, language: Language) -> str:
        """1199019's text in `language`."""
        return message(1199019, language, ())


class PermissionDenied(CmdbError):
    """The caller lacks permission; carries the permission payload (9900403)."""

    code = 9900403


# The row messages of an Excel import (CONTRACT-ui 23.2), by bk-cmdb's i18n key: (English, Chinese), from its
# resources/language/{en,default}/import_instance.json; printf-style placeholders.
IMPORT_MESSAGES: dict[str, tuple[str, str]] = {
    "import_asstid_not_found": ("association [%s]  does not exists", "关联关系[%s] 不存在"),
    "import_asst_obj_property_str_primary_format_error": (
        "[%s] association primary Key [%s] data format error",
        "[%s]关联对象唯一键[%s]数据格式错误",
    ),
    "import_asst_obj_primary_property_str_not_found": (
        "[%s] object unique rule does not contain 'rule: [%s]'",
        "[%s]唯一校验中不存在“规则：[%s]”",
    ),
    "import_asst_obj_property_str_primary_type_error": (
        "[%s] association primary Key [%s] data transform type  error",
        "[%s]关联对象唯一键[%s]数据类型错误",
    ),
    "import_asst_obj_property_str_primary_count_len": (
        " [%s] Object [%s] primary Key  count error",
        "[%s]关联对象[%s]唯一键个数错误",
    ),
    "import_instance_not_found": ("[%s] model [%s]  does not exists", "[%s] 模型 [%s] 不存在"),
    "import_association_operate_not_found": ("operate not found", "操作类型不存在"),
}


class ImportRowRefused(CmdbError):
    """One row of an Excel import was refused: a row's message, never an answer's code."""

    answers = False

    def __init__(self, key: str, *args: Any) -> None:
        super().__init__(*args)
        self.key = key

    def message(self, language: Language) -> str:
        """The row's message in `language`, as bk-cmdb words it."""
        english, chinese = IMPORT_MESSAGES[self.key]
        template = chinese if language == "zh" else english
        return template % self.args_for_message if self.args_for_message else template


class AssociationExists(CmdbError):
    """A batch detail repeats an existing link (1101038)."""

    code = 1101038


class DefinitionNotFound(CmdbError):
    """No association definition has this id (1101046)."""

    code = 1101046


class OneToOneViolated(CmdbError):
    """A 1:1 definition already links the source or the target (1101052)."""

    code = 1101052


class OneToManyViolated(CmdbError):
    """A 1:n definition already links the target to a source (1101061)."""

    code = 1101061


class DefinitionNotUnique(CmdbError):
    """More than one definition has this id (1101062)."""

    code = 1101062


class SourceInstanceMissing(CmdbError):
    """The source instance does not exist (1101073)."""

    code = 1101073


class TargetInstanceMissing(CmdbError):
    """The target instance does not exist (1101074)."""

    code = 1101074


class StoreReadUnavailable(CmdbError):
    """MongoDB could not be reached, or timed out, while reading (1199017, HTTP 503)."""

    code = 1199017
    http_status = 503


class StoreWriteUnavailable(CmdbError):
    """MongoDB could not be reached, or timed out, while writing (1199998, HTTP 503)."""

    code = 1199998
    http_status = 503

    def message(self, language: Language) -> str:
        """A plain message: never the driver's text."""
        return "数据库暂不可用，请稍后重试" if language == "zh" else "the database is unavailable, please retry later"


class StoreOutOfSpace(StoreWriteUnavailable):
    """MongoDB refused a write for want of disk space (1199998, HTTP 503); /readyz says so until a write passes."""


class Busy(CmdbError):
    """This process already runs as many requests of a heavy kind as it may (1199998, HTTP 503, Retry-After)."""

    code = 1199998
    http_status = 503

    def message(self, language: Language) -> str:
        """Which kind of work is at its bound, and to come back."""
        kind = self.args_for_message[0] if self.args_for_message else ""
        if language == "zh":
            return f"服务繁忙（{kind}），请稍后重试"
        return f"the service is busy ({kind}), please retry later"


class EventNodeMissing(CmdbError):
    """A watch cursor that names no event inside the retention (expired, or never ours) (1103007)."""

    code = 1103007


class WatchUnavailable(CmdbError):
    """The database serves no change streams, or the watch is switched off (1199998, HTTP 501)."""

    code = 1199998
    http_status = 501

    def message(self, language: Language) -> str:
        """Why the watch is unavailable, not the generic text of 1199998."""
        if language == "zh":
            return "事件监听不可用：数据库不支持变更流"
        return "event watch is unavailable: the database does not support change streams"


class InternalError(CmdbError):
    """An unexpected failure (1199999, HTTP 500); never carries the exception's text."""

    code = 1199999
    http_status = 500


def error_classes() -> list[type[CmdbError]]:
    """Every error class defined so far (those of modules not imported yet are not)."""
    found: list[type[CmdbError]] = []
    pending: list[type[CmdbError]] = list(CmdbError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        found.append(cls)
    return found


def error_codes() -> dict[int, list[str]]:
    """Every code this service answers, with what each error class that carries it means (from its docstring):
    the table the API document prints."""
    found: dict[int, list[str]] = {}
    for cls in error_classes():
        if not cls.answers:
            continue
        meaning = re.sub(r"\s*\(\d{7}[^)]*\)", "", " ".join((cls.__doc__ or "").split())).rstrip(".")
        found.setdefault(cls.code, [])
        if meaning and meaning not in found[cls.code]:
            found[cls.code].append(meaning)
    return {code: sorted(found[code]) for code in sorted(found)}
