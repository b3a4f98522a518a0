"""Settings: frozen dataclasses loaded from YAML and the environment, validated by a schema."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from cmdb_asso.inputs import SUPPLIER_ACCOUNT

ENV_PREFIX = "CMDB_ASSO_"
# The budget of a failed write's undo, which runs past its request's deadline (storage/all_or_nothing.py).
UNDO_SECONDS = 5.0
CONFIG_ENV = "CMDB_ASSO_CONFIG"


class ConfigError(Exception):
    """A setting is invalid; the message names it."""


@dataclass(frozen=True)
class MongoSettings:
    """Where and how to reach MongoDB."""

    uri: str = "embedded"
    database: str = "cmdb"
    driver: str = "pymongo"
    transactions: str = "auto"
    server_selection_timeout_ms: int = 5000
    socket_timeout_ms: int = 10000
    id_block_size: int = 100
    definition_cache_seconds: float = 5.0
    request_deadline_seconds: float = 10.0
    fold_reads: str = "auto"
    index_preparation_seconds: float = 300.0
    recovery_interval_seconds: float = 30.0
    recovery_grace_seconds: float = 60.0


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP listener."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 8190
    shutdown_timeout: float = 10.0
    drain_seconds: float = 5.0
    body_timeout_seconds: float = 10.0
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class LimitSettings:
    """Request size limits."""

    create_many_max: int = 200
    create_groups_in_flight: int = 1
    idempotency_retention_hours: float = 24.0
    find_max_results: int = 10000
    graph_max_nodes: int = 1000
    graph_max_links: int = 10000
    heavy_reads_in_flight: int = 2
    long_polls_in_flight: int = 1000
    definition_cache_entries: int = 10000


@dataclass(frozen=True)
class AppCredential:
    """One ESB application allowed in: its code and the salted hash of its secret."""

    code: str
    secret_hash: str


@dataclass(frozen=True)
class Grant:
    """The models one user may edit, view, and watch link events of (`*` for all)."""

    edit: tuple[str, ...] = ()
    view: tuple[str, ...] = ()
    watch: tuple[str, ...] = ()
    # May read every supplier's link events (what bk-cmdb gives the supplier `superadmin`).
    all_suppliers: bool = False


@dataclass(frozen=True)
class AuthSettings:
    """Who may come in (ESB apps) and what users may do (the authorizer and its policy)."""

    apps: tuple[AppCredential, ...] = ()
    authorizer: str = "allow_all"
    policy: Mapping[str, Grant] = field(default_factory=dict)


@dataclass(frozen=True)
class LogSettings:
    """Log format and level."""

    format: str = "auto"
    level: str = "info"


@dataclass(frozen=True)
class TopoSettings:
    """Instance topology (search_inst_association_topo)."""

    # More links of one instance than this answer 1199059 rather than an answer no process should build.
    max_links: int = 5000


@dataclass(frozen=True)
class QuerySettings:
    """Reads that bk-cmdb lets a caller leave unbounded."""

    # What bk-cmdb's "no limit" page size (999999999) may return at most; more answer 1199059.
    max_unbounded: int = 10000


@dataclass(frozen=True)
class WatchSettings:
    """Link events (resource_watch for inst_asst)."""

    # auto: served where the database has change streams (501 elsewhere); on: refuse to start without them; off.
    enabled: str = "auto"
    retention_seconds: float = 21600.0
    long_poll_seconds: float = 20.0
    # The database of our event collections (empty: the main one).
    database: str = ""
    lease_seconds: float = 15.0
    # How often the embedded server's link tables are listed again (it serves one table per stream).
    rescan_seconds: float = 30.0
    # A link table's change that its stream has not reported after this long means the stream stopped: the feed
    # starts again from its saved tokens (logged as watch_stream_stalled).
    stall_seconds: float = 30.0


@dataclass(frozen=True)
class Settings:
    """Every setting of the service."""

    mongodb: MongoSettings = field(default_factory=MongoSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    topo: TopoSettings = field(default_factory=TopoSettings)
    query: QuerySettings = field(default_factory=QuerySettings)
    watch: WatchSettings = field(default_factory=WatchSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    log: LogSettings = field(default_factory=LogSettings)
    language: str = "en"
    supplier_account: str = "0"
    data_dir: str = "./var"


class _CommaList(fields.Field[tuple[str, ...]]):
    """A list of strings, or one comma-separated string (as the environment gives it)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [item for item in (part.strip() for part in value.split(",")) if item]
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ValidationError("must be a list of strings")
        return tuple(value)


def _supplier_account(value: str) -> None:
    # Matched in full: it becomes part of table names, as the supplier a request names does.
    if not SUPPLIER_ACCOUNT.fullmatch(value):
        raise ValidationError("must be 1 to 64 ASCII letters, digits or underscores")


class _MongoSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    uri = fields.String(validate=validate.Length(min=1))
    database = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,63}$"))
    driver = fields.String(validate=validate.OneOf(["pymongo", "motor"]))
    transactions = fields.String(validate=validate.OneOf(["auto", "always", "never"]))
    server_selection_timeout_ms = fields.Integer(strict=False, validate=validate.Range(min=1))
    socket_timeout_ms = fields.Integer(strict=False, validate=validate.Range(min=1))
    id_block_size = fields.Integer(strict=False, validate=validate.Range(min=1, max=100000))
    definition_cache_seconds = fields.Float(validate=validate.Range(min=0))
    request_deadline_seconds = fields.Float(validate=validate.Range(min=0.01))
    fold_reads = fields.String(validate=validate.OneOf(["auto", "on", "off"]))
    index_preparation_seconds = fields.Float(validate=validate.Range(min=1))
    recovery_interval_seconds = fields.Float(validate=validate.Range(min=0.05))
    recovery_grace_seconds = fields.Float(validate=validate.Range(min=0))


class _HttpSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    host = fields.String(validate=validate.Length(min=1))
    port = fields.Integer(strict=False, validate=validate.Range(min=0, max=65535))
    max_body_bytes = fields.Integer(strict=False, validate=validate.Range(min=1024))
    max_header_bytes = fields.Integer(strict=False, validate=validate.Range(min=1024, max=1024 * 1024))
    shutdown_timeout = fields.Float(validate=validate.Range(min=0))
    drain_seconds = fields.Float(validate=validate.Range(min=0, max=3600))
    body_timeout_seconds = fields.Float(validate=validate.Range(min=0.01, max=3600))
    cors_origins = _CommaList()


class _Apps(fields.Field[tuple[AppCredential, ...]]):
    """ESB apps: a list of {code, secret_hash}, or `code:secret_hash,...` from the environment."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[AppCredential, ...]:
        if isinstance(value, str):
            pairs = [part.strip().split(":", 1) for part in value.split(",") if part.strip()]
            if not all(len(pair) == 2 for pair in pairs):
                raise ValidationError("must be code:secret_hash pairs separated by commas")
            value = [{"code": code, "secret_hash": secret_hash} for code, secret_hash in pairs]
        if not isinstance(value, list):
            raise ValidationError("must be a list of {code, secret_hash}")
        apps = []
        for item in value:
            if not isinstance(item, Mapping) or not all(
                isinstance(item.get(key), str) and item.get(key) for key in ("code", "secret_hash")
            ):
                raise ValidationError("each app needs a code and a secret_hash")
            if not str(item["secret_hash"]).startswith("pbkdf2_sha256$"):
                raise ValidationError(f"app '{item['code']}': secret_hash must come from `cmdb-asso hash-secret`")
            apps.append(AppCredential(str(item["code"]), str(item["secret_hash"])))
        return tuple(apps)


class _Policy(fields.Field[dict[str, Grant]]):
    """Per user, the models they may edit and view; a mapping, or JSON of one from the environment."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Grant]:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValidationError("must be a JSON object") from exc
        if not isinstance(value, Mapping):
            raise ValidationError("must map users to {edit: [...], view: [...]}")
        policy = {}
        for user, grant in value.items():
            if not isinstance(grant, Mapping) or set(grant) - {"edit", "view", "watch", "all_suppliers"}:
                raise ValidationError(f"user '{user}': only 'edit', 'view', 'watch' and 'all_suppliers' are allowed")
            all_suppliers = grant.get("all_suppliers", False)
            if not isinstance(all_suppliers, bool):
                raise ValidationError(f"user '{user}': 'all_suppliers' must be true or false")
            lists = {key: grant.get(key) or [] for key in ("edit", "view", "watch")}
            if not all(isinstance(items, list) and all(isinstance(i, str) for i in items) for items in lists.values()):
                raise ValidationError(f"user '{user}': 'edit', 'view' and 'watch' must be lists of model ids")
            policy[str(user)] = Grant(tuple(lists["edit"]), tuple(lists["view"]), tuple(lists["watch"]), all_suppliers)
        return policy


class _AuthSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    apps = _Apps()
    authorizer = fields.String(validate=validate.OneOf(["allow_all", "static"]))
    policy = _Policy()


class _LimitSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    create_many_max = fields.Integer(strict=False, validate=validate.Range(min=1, max=10000))
    create_groups_in_flight = fields.Integer(strict=False, validate=validate.Range(min=1, max=64))
    idempotency_retention_hours = fields.Float(validate=validate.Range(min=0.01, max=24 * 365))
    find_max_results = fields.Integer(strict=False, validate=validate.Range(min=1, max=1_000_000))
    graph_max_nodes = fields.Integer(strict=False, validate=validate.Range(min=1, max=1_000_000))
    graph_max_links = fields.Integer(strict=False, validate=validate.Range(min=1, max=10_000_000))
    heavy_reads_in_flight = fields.Integer(strict=False, validate=validate.Range(min=0, max=100_000))
    long_polls_in_flight = fields.Integer(strict=False, validate=validate.Range(min=0, max=1_000_000))
    definition_cache_entries = fields.Integer(strict=False, validate=validate.Range(min=1, max=1_000_000))


class _TopoSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    max_links = fields.Integer(strict=False, validate=validate.Range(min=1, max=1_000_000))


class _QuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    max_unbounded = fields.Integer(strict=False, validate=validate.Range(min=1, max=1_000_000))


class _WatchSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    enabled = fields.String(validate=validate.OneOf(["auto", "on", "off"]))
    retention_seconds = fields.Float(validate=validate.Range(min=1, max=30 * 86400))
    long_poll_seconds = fields.Float(validate=validate.Range(min=0, max=300))
    database = fields.String(validate=validate.Regexp(r"^([A-Za-z0-9_-]{1,63})?$"))
    lease_seconds = fields.Float(validate=validate.Range(min=1, max=3600))
    rescan_seconds = fields.Float(validate=validate.Range(min=0.1, max=3600))
    stall_seconds = fields.Float(validate=validate.Range(min=1, max=86400))


class _LogSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    format = fields.String(validate=validate.OneOf(["auto", "json", "console"]))
    level = fields.String(validate=validate.OneOf(["debug", "info", "warning", "error"]))


class _SettingsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    mongodb = fields.Nested(_MongoSchema)
    http = fields.Nested(_HttpSchema)
    limits = fields.Nested(_LimitSchema)
    topo = fields.Nested(_TopoSchema)
    query = fields.Nested(_QuerySchema)
    watch = fields.Nested(_WatchSchema)
    auth = fields.Nested(_AuthSchema)
    log = fields.Nested(_LogSchema)
    language = fields.String(validate=validate.OneOf(["en", "zh"]))
    supplier_account = fields.String(validate=_supplier_account)
    data_dir = fields.String(validate=validate.Length(min=1))


_SECTIONS: dict[str, Any] = {
    "mongodb": MongoSettings,
    "http": HttpSettings,
    "limits": LimitSettings,
    "topo": TopoSettings,
    "query": QuerySettings,
    "watch": WatchSettings,
    "auth": AuthSettings,
    "log": LogSettings,
}


# Variables of ours that are no settings: the file's path, and what the service tells its embedded server.
_NOT_SETTINGS = frozenset({CONFIG_ENV, "CMDB_ASSO_PARENT_PID"})


def _known_names() -> dict[str, tuple[str, ...]]:
    """Every setting, by its dotted name: its path in the settings tree."""
    names: dict[str, tuple[str, ...]] = {}
    for section, cls in _SECTIONS.items():
        names |= {f"{section}.{name}": (section, name) for name in cls.__dataclass_fields__}
    names |= {name: (name,) for name in _SettingsSchema().fields if name not in _SECTIONS}
    return names


def _unknown(name: str, known: list[str], where: str) -> ConfigError:
    """A start-up error naming an unknown setting and the closest known name."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{where} '{name}' is not a setting{hint}")


def _refuse_unknown_keys(raw: Mapping[str, Any]) -> None:
    """Every key of the file must name a setting (a misspelled one would be silently ignored)."""
    known = _known_names()
    for key, value in raw.items():
        if key in _SECTIONS and isinstance(value, Mapping):
            for name in value:
                if f"{key}.{name}" not in known:
                    raise _unknown(f"{key}.{name}", list(known), "setting")
        elif str(key) not in known:
            raise _unknown(str(key), [*known, *_SECTIONS], "setting")


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Map CMDB_ASSO_<SECTION>_<KEY> and CMDB_ASSO_<KEY> variables onto the settings tree; any other variable
    starting with CMDB_ASSO_ is an error naming the closest known one."""
    by_variable = {f"{ENV_PREFIX}{'_'.join(path)}".upper(): path for path in _known_names().values()}
    tree: dict[str, Any] = {}
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable in _NOT_SETTINGS:
            continue
        path = by_variable.get(variable)
        if path is None:
            raise _unknown(variable, [*by_variable, *_NOT_SETTINGS], "environment variable")
        if len(path) == 2:
            tree.setdefault(path[0], {})[path[1]] = value
        else:
            tree[path[0]] = value
    return tree


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _first_error(messages: Mapping[str, Any], prefix: str = "") -> str:
    key, value = next(iter(messages.items()))
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
        return _first_error(value, f"{name}.")
    text = value[0] if isinstance(value, list) and value else value
    return f"setting '{name}': {text}"


def load_settings(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings from a YAML file (or $CMDB_ASSO_CONFIG) with environment overrides; raise ConfigError."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV) or None
    raw: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file '{path}': {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of settings")
        raw = loaded or {}
    for section in _SECTIONS:
        if section in raw and not isinstance(raw[section], Mapping):
            raise ConfigError(f"setting '{section}': must be a mapping")
    _refuse_unknown_keys(raw)
    raw = _merge(raw, _env_overrides(environ))
    try:
        data: dict[str, Any] = _SettingsSchema().load(raw)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc.normalized_messages())) from exc  # type: ignore[no-untyped-call]
    sections = {name: cls(**data.pop(name, {})) for name, cls in _SECTIONS.items()}
    mongodb: MongoSettings = sections["mongodb"]
    if mongodb.recovery_grace_seconds <= mongodb.request_deadline_seconds + UNDO_SECONDS:
        # Recovery must only settle writes no request is still making, nor undoing: older than any request and
        # its undo can last.
        raise ConfigError(
            "setting 'mongodb.recovery_grace_seconds': must be greater than mongodb.request_deadline_seconds "
            f"({mongodb.request_deadline_seconds}) plus the {UNDO_SECONDS:g} s an undo may take"
        )
    return Settings(**sections, **data)
