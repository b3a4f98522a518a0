"""Settings: frozen dataclasses loaded from YAML and the environment; each setting is declared once, with its
default and the marshmallow field that checks it, and the schema is built from the declarations."""

from __future__ import annotations

import base64
import dataclasses
import difflib
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
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


class _PublicKeys(fields.Field[dict[str, str]]):
    """The gateway's public keys: one key, or a mapping of the JWT `kid` to a key; each key as PEM text or as the
    base64 of the PEM (bk-cmdb's `apiServer.jwt.publicKey`), or JSON of a mapping from the environment. Loaded as
    PEM; a key that does not parse as an RSA public key stops start-up."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, str]:
        if isinstance(value, str) and value.strip().startswith("{"):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValidationError("must be a key, or a JSON object of keys by kid") from exc
        keys = {"": value} if isinstance(value, str) else value
        if not isinstance(keys, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
            raise ValidationError("must be a key (PEM or base64 of PEM), or a mapping of kid to key")
        loaded = {}
        for kid, text in keys.items():
            pem = rsa_public_key_pem(text)
            if pem is None:
                raise ValidationError(f"key '{kid or 'default'}' is not an RSA public key in PEM or base64 of PEM")
            loaded[kid] = pem
        return loaded


class _Networks(_CommaList):
    """Networks in CIDR notation (`10.0.0.0/8`, `127.0.0.1/32`, `::1/128`)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[str, ...]:
        networks = super()._deserialize(value, attr, data, **kwargs)
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValidationError(f"'{network}' is not a network (CIDR)") from exc
        return networks


def rsa_public_key_pem(text: str) -> str | None:
    """The PEM of an RSA public key given as PEM (SubjectPublicKeyInfo or PKCS#1) or as base64 of the PEM; None
    when it is neither."""
    candidate = text.strip()
    if "-----BEGIN" not in candidate:
        try:
            candidate = base64.b64decode(candidate, validate=True).decode("ascii").strip()
        except (ValueError, UnicodeDecodeError):
            return None
    try:
        key = serialization.load_pem_public_key(candidate.encode("ascii"))
    except (ValueError, UnicodeEncodeError, TypeError):
        return None
    if not isinstance(key, rsa.RSAPublicKey):
        return None
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class GatewaySettings:
    """BlueKing's API gateway: the keys its `X-Bkapi-JWT` is signed with, and what a request must carry."""

    # One key, or keys by the token's `kid` (the gateway's, the web server's, a rotated one).
    public_key: Mapping[str, str] = setting(MISSING, _PublicKeys(), factory=dict)
    # A file holding the key (PEM or base64 of PEM), read at start-up, beside or instead of public_key.
    public_key_file: str = setting("", fields.String())
    # The gateway's issuer (`iss`), checked when set.
    issuer: str = setting("", fields.String())
    algorithms: tuple[str, ...] = setting(("RS512",), _CommaList(validate=validate.ContainsOnly(
        ["RS256", "RS384", "RS512"])))  # fmt: skip
    leeway_seconds: float = setting(60.0, _number(0, 3600))
    # false only for the web server's own tokens (bk-cmdb's independent deployment signs them without `exp`).
    require_exp: bool = setting(True, fields.Boolean())
    require_verified_user: bool = setting(False, fields.Boolean())
    # true: a request without X-Bkapi-JWT answers 401 (1100004), but from the trusted networks.
    jwt_required: bool = setting(False, fields.Boolean())
    trusted_networks: tuple[str, ...] = setting((), _Networks())
    token_cache_entries: int = setting(10000, _integer(1, 1_000_000))


@dataclass(frozen=True)
class IamSettings:
    """BlueKing IAM, for `auth.authorizer: iam`: where it is and bk-cmdb's own client credentials."""

    # The IAM backend: POST {url}/api/v1/policy/query_by_actions.
    url: str = setting("", fields.String())
    # bk-cmdb's own app code and secret: IAM answers system bk_cmdb's policies to its registered client only.
    app_code: str = setting("bk_cmdb", fields.String(validate=validate.Length(min=1)))
    app_secret: str = setting("", fields.String())
    timeout_seconds: float = setting(3.0, _number(0.05, 60))
    # How long a user's policy for an action is reused (0: asked for every request); a grant or a revoke in IAM
    # is seen within this time.
    policy_cache_seconds: float = setting(10.0, _number(0, 3600))
    policy_cache_entries: int = setting(10000, _integer(1, 1_000_000))
    # IAM's API gateway, for the apply URL of a denial (`auth/skip_url`): POST {apply_url}/api/v1/open/application/.
    apply_url: str = setting("", fields.String())


@dataclass(frozen=True)
class AuthSettings:
    """Who may come in (ESB apps, the gateway's tokens) and what users may do (the authorizer and its policy)."""

    apps: tuple[AppCredential, ...] = setting((), _Apps())
    authorizer: str = setting("allow_all", _one_of("allow_all", "static", "iam"))
    policy: Mapping[str, Grant] = setting(MISSING, _Policy(), factory=dict)
    gateway: GatewaySettings = section(GatewaySettings)
    iam: IamSettings = section(IamSettings)


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


def _section_of(member: dataclasses.Field[Any]) -> Any:
    return member.metadata.get("section")


def _paths(cls: type[Any], prefix: tuple[str, ...] = ()) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """The settings under `cls`, by dotted name, with their paths; and the dotted names of its sections."""
    names: dict[str, tuple[str, ...]] = {}
    sections: set[str] = set()
    for member in dataclasses.fields(cls):
        path = (*prefix, member.name)
        inner = _section_of(member)
        if inner:
            sections.add(".".join(path))
            inner_names, inner_sections = _paths(inner, path)
            names |= inner_names
            sections |= inner_sections
        else:
            names[".".join(path)] = path
    return names, sections


_NAMES, _SECTION_NAMES = _paths(Settings)


# Variables of ours that are no settings: the file's path, and what the service tells its embedded server.
_NOT_SETTINGS = frozenset({CONFIG_ENV, "CMDB_ASSO_PARENT_PID"})


def setting_names() -> dict[str, tuple[str, ...]]:
    """Every setting, by its dotted name: its path in the settings tree (sections may nest: `auth.gateway.x`)."""
    return dict(_NAMES)


def _unknown(name: str, known: list[str], where: str) -> ConfigError:
    """A start-up error naming an unknown setting and the closest known name."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{where} '{name}' is not a setting{hint}")


def _refuse_unknown_keys(raw: Mapping[str, Any], prefix: str = "") -> None:
    """Every key of the file must name a setting (a misspelled one would be silently ignored), and every section
    must be a mapping."""
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if name in _SECTION_NAMES:
            if not isinstance(value, Mapping):
                raise ConfigError(f"setting '{name}': must be a mapping")
            _refuse_unknown_keys(value, f"{name}.")
        elif name not in _NAMES:
            raise _unknown(name, [*_NAMES, *_SECTION_NAMES], "setting")


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
        branch = tree
        for name in path[:-1]:
            branch = branch.setdefault(name, {})
        branch[path[-1]] = value
    return tree


def _built(cls: type[Any], data: Mapping[str, Any]) -> Any:
    """The settings dataclass `cls` from loaded data, each section built the same way."""
    values = {}
    for member in dataclasses.fields(cls):
        inner = _section_of(member)
        if inner:
            values[member.name] = _built(inner, data.get(member.name) or {})
        elif member.name in data:
            values[member.name] = data[member.name]
    return cls(**values)


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
    _refuse_unknown_keys(raw)
    raw = _merge(raw, _env_overrides(environ))
    try:
        data: dict[str, Any] = _SETTINGS_SCHEMA().load(raw)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc.normalized_messages())) from exc  # type: ignore[no-untyped-call]
    settings: Settings = _built(Settings, data)
    mongodb = settings.mongodb
    if mongodb.recovery_grace_seconds <= mongodb.request_deadline_seconds + UNDO_SECONDS:
        # Recovery must only settle writes no request is still making, nor undoing: older than any request and
        # its undo can last.
        raise ConfigError(
            "setting 'mongodb.recovery_grace_seconds': must be greater than mongodb.request_deadline_seconds "
            f"({mongodb.request_deadline_seconds}) plus the {UNDO_SECONDS:g} s an undo may take"
        )
    gateway = settings.auth.gateway
    if gateway.public_key_file:
        try:
            pem = rsa_public_key_pem(Path(gateway.public_key_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"setting 'auth.gateway.public_key_file': {exc.strerror}") from exc
        if pem is None:
            raise ConfigError("setting 'auth.gateway.public_key_file': not an RSA public key in PEM or base64 of PEM")
        keys = {"": pem, **gateway.public_key}
        settings = dataclasses.replace(
            settings, auth=dataclasses.replace(settings.auth, gateway=dataclasses.replace(gateway, public_key=keys))
        )
    iam = settings.auth.iam
    if settings.auth.authorizer == "iam" and not (iam.url and iam.app_secret):
        raise ConfigError("setting 'auth.authorizer': iam needs auth.iam.url and auth.iam.app_secret")
    if settings.auth.gateway.jwt_required and not settings.auth.gateway.public_key:
        raise ConfigError("setting 'auth.gateway.jwt_required': needs auth.gateway.public_key (or public_key_file)")
    return settings
