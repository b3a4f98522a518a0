"""Settings: frozen dataclasses loaded from YAML and the environment; each setting is declared once, with its
default and the marshmallow field that checks it, and the schema is built from the declarations."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields, validate

from cmdb_asso.inputs import SUPPLIER_ACCOUNT

ENV_PREFIX = "CMDB_ASSO_"
# The budget of a failed write's undo, which runs past its request's deadline (storage/all_or_nothing.py).
UNDO_SECONDS = 5.0
CONFIG_ENV = "CMDB_ASSO_CONFIG"


class ConfigError(Exception):
    """A setting is invalid; the message names it."""


def setting(default: Any, check: fields.Field[Any], *, factory: Any = MISSING) -> Any:
    """One setting, declared once: its default (or `factory` of it) and the marshmallow field that loads and
    checks it; the schema, the names the file and the environment accept, and the tests of the example file and
    the README's table all come from these."""
    return field(default=default, default_factory=factory, metadata={"check": check})


def section(cls: type[Any]) -> Any:
    """A section of settings (a dataclass whose fields are settings)."""
    return field(default_factory=cls, metadata={"section": cls})


def _supplier_account(value: str) -> None:
    # Matched in full: it becomes part of table names, as the supplier a request names does.
    if not SUPPLIER_ACCOUNT.fullmatch(value):
        raise ValidationError("must be 1 to 64 ASCII letters, digits or underscores")


def _integer(low: int, high: int | None = None) -> fields.Integer:
    return fields.Integer(strict=False, validate=validate.Range(min=low, max=high))


def _number(low: float, high: float | None = None) -> fields.Float:
    return fields.Float(validate=validate.Range(min=low, max=high))


def _one_of(*choices: str) -> fields.String:
    return fields.String(validate=validate.OneOf(choices))


class _CommaList(fields.Field[tuple[str, ...]]):
    """A list of strings, or one comma-separated string (as the environment gives it)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [item for item in (part.strip() for part in value.split(",")) if item]
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ValidationError("must be a list of strings")
        return tuple(value)


@dataclass(frozen=True)
class MongoSettings:
    """Where and how to reach MongoDB."""

    uri: str = setting("embedded", fields.String(validate=validate.Length(min=1)))
    database: str = setting("cmdb", fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,63}$")))
    driver: str = setting("pymongo", _one_of("pymongo", "motor"))
    transactions: str = setting("auto", _one_of("auto", "always", "never"))
    server_selection_timeout_ms: int = setting(5000, _integer(1))
    socket_timeout_ms: int = setting(10000, _integer(1))
    id_block_size: int = setting(100, _integer(1, 100000))
    definition_cache_seconds: float = setting(5.0, _number(0))
    request_deadline_seconds: float = setting(10.0, _number(0.01))
    fold_reads: str = setting("auto", _one_of("auto", "on", "off"))
    index_preparation_seconds: float = setting(300.0, _number(1))
    recovery_interval_seconds: float = setting(30.0, _number(0.05))
    recovery_grace_seconds: float = setting(60.0, _number(0))


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP listener."""

    host: str = setting("127.0.0.1", fields.String(validate=validate.Length(min=1)))
    port: int = setting(8080, _integer(0, 65535))
    max_body_bytes: int = setting(1024 * 1024, _integer(1024))
    max_header_bytes: int = setting(8190, _integer(1024, 1024 * 1024))
    shutdown_timeout: float = setting(10.0, _number(0))
    drain_seconds: float = setting(5.0, _number(0, 3600))
    body_timeout_seconds: float = setting(10.0, _number(0.01, 3600))
    cors_origins: tuple[str, ...] = setting((), _CommaList())


@dataclass(frozen=True)
class LimitSettings:
    """Request size limits."""

    create_many_max: int = setting(200, _integer(1, 10000))
    create_groups_in_flight: int = setting(1, _integer(1, 64))
    idempotency_retention_hours: float = setting(24.0, _number(0.01, 24 * 365))
    find_max_results: int = setting(10000, _integer(1, 1_000_000))
    graph_max_nodes: int = setting(1000, _integer(1, 1_000_000))
    graph_max_links: int = setting(10000, _integer(1, 10_000_000))
    heavy_reads_in_flight: int = setting(2, _integer(0, 100_000))
    long_polls_in_flight: int = setting(1000, _integer(0, 1_000_000))
    definition_cache_entries: int = setting(10000, _integer(1, 1_000_000))
    # Rows of one Excel import (bk-cmdb's web server imports at most 1,000 rows of a sheet).
    import_rows_max: int = setting(1000, _integer(1, 100_000))


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


@dataclass(frozen=True)
class AuthSettings:
    """Who may come in (ESB apps) and what users may do (the authorizer and its policy)."""

    apps: tuple[AppCredential, ...] = setting((), _Apps())
    authorizer: str = setting("allow_all", _one_of("allow_all", "static"))
    policy: Mapping[str, Grant] = setting(MISSING, _Policy(), factory=dict)


@dataclass(frozen=True)
class LogSettings:
    """Log format and level."""

    format: str = setting("auto", _one_of("auto", "json", "console"))
    level: str = setting("info", _one_of("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class TopoSettings:
    """Instance topology (search_inst_association_topo)."""

    # More links of one instance than this answer 1199059 rather than an answer no process should build.
    max_links: int = setting(5000, _integer(1, 1_000_000))


@dataclass(frozen=True)
class QuerySettings:
    """Reads that bk-cmdb lets a caller leave unbounded."""

    # What bk-cmdb's "no limit" page size (999999999) may return at most; more answer 1199059.
    max_unbounded: int = setting(10000, _integer(1, 1_000_000))


@dataclass(frozen=True)
class WatchSettings:
    """Link events (resource_watch for inst_asst)."""

    # auto: served where the database has change streams (501 elsewhere); on: refuse to start without them; off.
    enabled: str = setting("auto", _one_of("auto", "on", "off"))
    retention_seconds: float = setting(21600.0, _number(1, 30 * 86400))
    long_poll_seconds: float = setting(20.0, _number(0, 300))
    # The database of our event collections (empty: the main one).
    database: str = setting("", fields.String(validate=validate.Regexp(r"^([A-Za-z0-9_-]{1,63})?$")))
    lease_seconds: float = setting(15.0, _number(1, 3600))
    # How often the embedded server's link tables are listed again (it serves one table per stream).
    rescan_seconds: float = setting(30.0, _number(0.1, 3600))
    # A link table's change that its stream has not reported through this long of rounds that read the stream to
    # its end means the stream stopped: the feed starts again from its saved tokens (watch_stream_stalled).
    stall_seconds: float = setting(30.0, _number(1, 86400))


@dataclass(frozen=True)
class Settings:
    """Every setting of the service."""

    mongodb: MongoSettings = section(MongoSettings)
    http: HttpSettings = section(HttpSettings)
    limits: LimitSettings = section(LimitSettings)
    topo: TopoSettings = section(TopoSettings)
    query: QuerySettings = section(QuerySettings)
    watch: WatchSettings = section(WatchSettings)
    auth: AuthSettings = section(AuthSettings)
    log: LogSettings = section(LogSettings)
    language: str = setting("en", _one_of("en", "zh"))
    supplier_account: str = setting("0", fields.String(validate=_supplier_account))
    data_dir: str = setting("./var", fields.String(validate=validate.Length(min=1)))


def _schema_of(cls: type[Any]) -> type[Schema]:
    """The schema that loads a settings dataclass: each setting's own field, each section nested."""
    declared: dict[str, fields.Field[Any]] = {}
    for member in dataclasses.fields(cls):
        inner = member.metadata.get("section")
        declared[member.name] = fields.Nested(_schema_of(inner)) if inner else member.metadata["check"]
    return Schema.from_dict(declared, name=f"{cls.__name__}Schema")


_SETTINGS_SCHEMA = _schema_of(Settings)
_SECTIONS: dict[str, Any] = {
    member.name: member.metadata["section"] for member in dataclasses.fields(Settings) if "section" in member.metadata
}


# Variables of ours that are no settings: the file's path, and what the service tells its embedded server.
_NOT_SETTINGS = frozenset({CONFIG_ENV, "CMDB_ASSO_PARENT_PID"})


def setting_names() -> dict[str, tuple[str, ...]]:
    """Every setting, by its dotted name: its path in the settings tree."""
    names: dict[str, tuple[str, ...]] = {}
    for section, cls in _SECTIONS.items():
        names |= {f"{section}.{name}": (section, name) for name in cls.__dataclass_fields__}
    names |= {(member.name): (member.name,) for member in dataclasses.fields(Settings) if member.name not in _SECTIONS}
    return names


def _unknown(name: str, known: list[str], where: str) -> ConfigError:
    """A start-up error naming an unknown setting and the closest known name."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{where} '{name}' is not a setting{hint}")


def _refuse_unknown_keys(raw: Mapping[str, Any]) -> None:
    """Every key of the file must name a setting (a misspelled one would be silently ignored)."""
    known = setting_names()
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
    by_variable = {f"{ENV_PREFIX}{'_'.join(path)}".upper(): path for path in setting_names().values()}
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
        data: dict[str, Any] = _SETTINGS_SCHEMA().load(raw)
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
